#!/usr/bin/env bash
# Create .venv and install ray-reid with its test extras; a no-op when pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setting up .venv (torch, torchvision, ray, faiss, cupy ...): a few minutes the first time" >&2
  .venv/bin/python -m pip install -q --upgrade pip uv
  .venv/bin/uv pip install --python .venv/bin/python -e ".[test,tune]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
