#!/usr/bin/env bash
# Every GPU test and every GPU figure, in one command, on a bare CUDA machine.
#
# Needs: python with torch (+ torchvision), CuPy, numpy, scipy, scikit-learn, tqdm, pyyaml, pytest.
# Does NOT need Ray or faiss: the GPU tests and the graph clustering path import neither
# (the k-NN search falls back to a CuPy brute force). Sized to finish in under 8 minutes
# on one modern GPU: the tests have 4 minutes, the figures 4.
#
#   benchmarks/gpu_suite.sh [OUT_DIR]      # writes OUT_DIR/gpu_tests.xml and OUT_DIR/gpu_figures.json
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-gpu_suite_out}"
PY="${PYTHON:-python}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

"$PY" - <<'EOF'
import importlib.util, sys
missing = [m for m in ("torch", "cupy", "numpy", "scipy", "sklearn", "tqdm", "yaml", "pytest")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_suite: missing Python packages: {', '.join(missing)}")
import torch
if not torch.cuda.is_available():
    sys.exit("gpu_suite: torch sees no CUDA device")
from ray_reid.clustering._backend import cupy_available
if not cupy_available():
    sys.exit("gpu_suite: CuPy is installed but cannot use the GPU")
extras = {m: importlib.util.find_spec(m) is not None for m in ("ray", "faiss")}
print(f"gpu_suite: {torch.cuda.get_device_name(0)}, torch {torch.__version__}; optional present: {extras}")
EOF

# Only the test folders whose modules import neither Ray nor faiss; -m gpu selects the GPU tests there.
status=0
timeout 240 "$PY" -m pytest -m gpu -q -p no:cacheprovider -o addopts="" \
    tests/clustering tests/losses tests/models --junitxml="$OUT/gpu_tests.xml" || status=$?
echo "gpu_suite: tests exited with $status"

timeout 240 "$PY" -m benchmarks.gpu_figures --json "$OUT/gpu_figures.json" || status=$?
echo "gpu_suite: done (status $status); figures in $OUT/gpu_figures.json"
exit $status
