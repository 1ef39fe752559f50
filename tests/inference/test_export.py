"""Exported graphs equal the PyTorch model within 1e-4, at batch sizes other than the traced one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ray_reid.inference.export import TOLERANCE, export_model
from ray_reid.inference.model import build_network, load_trained


def _pytorch_embedding(checkpoint, images: np.ndarray) -> np.ndarray:
    weights, spec = load_trained(checkpoint)
    model = build_network(weights, spec)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        return model((torch.from_numpy(images) - mean) / std)["global"].numpy()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).random((7, 3, 32, 16), dtype=np.float32)


def test_torchscript_export_matches_pytorch_on_any_batch_size(reid_checkpoint, tmp_path, images):
    result = export_model(reid_checkpoint, tmp_path, "torchscript")
    assert result.max_abs_diff <= TOLERANCE
    loaded = torch.jit.load(result.path)
    expected = _pytorch_embedding(reid_checkpoint, images)
    for batch in (1, 7):
        with torch.inference_mode():
            got = loaded(torch.from_numpy(images[:batch])).numpy()
        assert got.shape == (batch, 512)
        assert np.abs(got - expected[:batch]).max() <= TOLERANCE
    np.testing.assert_allclose(np.linalg.norm(expected, axis=1), 1.0, atol=1e-5)
    sidecar = json.loads((tmp_path / "model.pt.json").read_text())
    assert sidecar["input"]["shape"] == ["batch", 3, 32, 16] and sidecar["view"] == "global"


def test_onnx_export_matches_pytorch_on_any_batch_size(reid_checkpoint, tmp_path, images):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    result = export_model(reid_checkpoint.parent, tmp_path / "reid.onnx", "onnx")  # a run folder works too
    assert result.path == str(tmp_path / "reid.onnx") and result.max_abs_diff <= TOLERANCE
    session = ort.InferenceSession(result.path, providers=["CPUExecutionProvider"])
    expected = _pytorch_embedding(reid_checkpoint, images)
    for batch in (1, 3, 7):
        got = session.run(None, {"images": images[:batch]})[0]
        assert got.shape == (batch, 512)
        assert np.abs(got - expected[:batch]).max() <= TOLERANCE


def test_export_of_a_multi_view_model_keeps_the_global_view_and_its_neck(tmp_path, images):
    from reid_checkpoint import write_reid_checkpoint

    ckpt = write_reid_checkpoint(tmp_path / "ckpt", views="global+parts", seed=3)
    result = export_model(ckpt, tmp_path / "out", "torchscript")
    with torch.inference_mode():
        got = torch.jit.load(result.path)(torch.from_numpy(images)).numpy()
    assert np.abs(got - _pytorch_embedding(ckpt, images)).max() <= TOLERANCE


def test_export_refuses_unknown_format_and_missing_checkpoint(reid_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="format must be one of"):
        export_model(reid_checkpoint, tmp_path, "tflite")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        export_model(tmp_path / "nowhere", tmp_path, "onnx")
    assert not list(tmp_path.glob("model*"))


def test_export_to_s3(reid_checkpoint, s3):
    result = export_model(reid_checkpoint, f"s3://{s3.bucket}/exports", "torchscript")
    assert result.path == f"s3://{s3.bucket}/exports/model.pt"
    keys = {o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket)["Contents"]}
    assert keys == {"exports/model.pt", "exports/model.pt.json"}


def test_export_job_prints_the_difference_and_refuses_a_bad_run(reid_checkpoint, tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("export_job", Path(__file__).parents[2] / "jobs" / "export.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    assert job.main([str(reid_checkpoint), "--format", "torchscript", "--out", str(tmp_path)]) == 0
    assert "max abs diff vs PyTorch" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="nowhere"):
        job.main([str(tmp_path / "nowhere")])
