"""The inference graph of a trained run, as ONNX or TorchScript, checked against PyTorch before it is kept.

What is exported is what a deployment needs and no more: RGB pixels in [0, 1] (NCHW, the
run's height × width, any batch size) → ImageNet normalisation → trunk → GeM → BN neck of the
*global* view → L2 normalisation, i.e. exactly the embedding ``evaluate`` and ``embed`` use.
Normalisation is inside the graph so a consumer cannot get it wrong; a JSON sidecar records
the input size and where the weights came from.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ray_reid.atomic import atomic_write
from ray_reid.inference.model import InferenceSpec, build_network, load_trained

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
#: The largest absolute difference to PyTorch an export may show on the check batch.
TOLERANCE = 1e-4


class InferenceGraph(nn.Module):
    """``[B, 3, H, W]`` float RGB in [0, 1] → ``[B, d]`` unit-norm global embedding."""

    def __init__(self, model: nn.Module, spec: InferenceSpec) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.pool = model.pools["global"]
        self.neck = model.necks["global"]
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        return self.neck(self.pool(self.backbone(x)))


@dataclass(frozen=True)
class ExportResult:
    path: str
    format: str
    max_abs_diff: float
    check_batch: int


def _reference(model: nn.Module, spec: InferenceSpec, images: torch.Tensor) -> np.ndarray:
    """The PyTorch model as evaluation runs it: normalised input, global view."""
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        return model((images - mean) / std)["global"].numpy()


def _export_onnx(graph: InferenceGraph, example: torch.Tensor, path: str) -> None:
    import warnings

    with warnings.catch_warnings():
        # torch's TorchScript-based exporter warns that it is deprecated in favour of the dynamo one,
        # which in this torch cannot decompose the trunk; the graph it writes is checked below.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(graph, (example,), path, input_names=["images"], output_names=["embedding"],
                          dynamic_axes={"images": {0: "batch"}, "embedding": {0: "batch"}}, opset_version=17,
                          dynamo=False)


def _run_onnx(path: str, images: np.ndarray) -> np.ndarray:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ImportError("checking an ONNX export needs onnxruntime: pip install 'ray-reid[onnx]'") from exc
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images})[0]


def _export_torchscript(graph: InferenceGraph, example: torch.Tensor, path: str) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        traced = torch.jit.trace(graph, (example,), check_trace=False)
    traced.save(path)


def _run_torchscript(path: str, images: np.ndarray) -> np.ndarray:
    loaded = torch.jit.load(path, map_location="cpu")
    with torch.inference_mode():
        return loaded(torch.from_numpy(images)).numpy()


def export_model(run_or_checkpoint: str | os.PathLike, out: str | os.PathLike, fmt: str = "onnx", *,
                 check_batch: int = 5, endpoint_url: str | None = None, seed: int = 0) -> ExportResult:
    """Export, then check on a random batch of ``check_batch`` images (a size other than the
    traced one, so the dynamic batch axis is exercised); keep the file only if the largest
    absolute difference to PyTorch is within :data:`TOLERANCE`.

    ``out`` is a file (``model.onnx``), a folder or an ``s3://`` prefix; a sidecar
    ``<file>.json`` records the input size, normalisation and source checkpoint.
    """
    from ray_reid.storage.s3 import is_s3_uri

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if isinstance(check_batch, bool) or not isinstance(check_batch, int) or check_batch < 2:
        raise ValueError(f"check_batch must be an integer >= 2, got {check_batch!r}")
    weights, spec = load_trained(run_or_checkpoint)
    model = build_network(weights, spec)
    graph = InferenceGraph(model, spec).eval()
    generator = torch.Generator().manual_seed(seed)
    example = torch.rand(2, 3, spec.height, spec.width, generator=generator)
    check = torch.rand(check_batch, 3, spec.height, spec.width, generator=generator)
    out_text = os.fspath(out)
    name = f"model{SUFFIX[fmt]}"
    if out_text.endswith(SUFFIX[fmt]):
        out_text, name = out_text.rsplit("/", 1) if "/" in out_text else (".", out_text)
    with tempfile.TemporaryDirectory(prefix="ray_reid_export_") as tmp:
        path = os.path.join(tmp, name)
        if fmt == "onnx":
            _export_onnx(graph, example, path)
            got = _run_onnx(path, check.numpy())
        else:
            _export_torchscript(graph, example, path)
            got = _run_torchscript(path, check.numpy())
        expected = _reference(model, spec, check)
        diff = float(np.abs(got - expected).max())
        log.info("%s export checked against PyTorch on a batch of %d: max abs diff %.3g (tolerance %g)", fmt,
                 check_batch, diff, TOLERANCE)
        if not diff <= TOLERANCE:
            raise RuntimeError(f"the {fmt} export differs from the PyTorch model by {diff:.3g} > {TOLERANCE} on a "
                               f"batch of {check_batch}: not written")
        sidecar = {"format": fmt, "input": {"name": "images", "shape": ["batch", 3, spec.height, spec.width],
                                            "dtype": "float32", "range": [0.0, 1.0], "channels": "RGB"},
                   "output": {"name": "embedding", "shape": ["batch", spec.embed_dim], "l2_normalised": True},
                   "normalisation_in_graph": {"mean": list(spec.mean), "std": list(spec.std)},
                   "view": "global", "max_abs_diff_vs_pytorch": diff, "model": spec.to_dict()}
        with open(path + ".json", "w") as fh:
            json.dump(sidecar, fh, indent=2)
        if is_s3_uri(out_text):
            from ray_reid.storage import upload_file

            dest = upload_file(path, f"{out_text.rstrip('/')}/{name}", endpoint_url=endpoint_url)
            upload_file(path + ".json", f"{out_text.rstrip('/')}/{name}.json", endpoint_url=endpoint_url)
        else:
            folder = Path(out_text).expanduser()
            folder.mkdir(parents=True, exist_ok=True)
            for src in (path + ".json", path):  # the model last: its presence means the sidecar is there too
                atomic_write(folder / os.path.basename(src), lambda tmp, src=src: shutil.copyfile(src, tmp))
            dest = str(folder / name)
    log.info("wrote %s (%s, dynamic batch, %dx%d input, %d-d output)", dest, fmt, spec.height, spec.width,
             spec.embed_dim)
    return ExportResult(path=dest, format=fmt, max_abs_diff=diff, check_batch=check_batch)

