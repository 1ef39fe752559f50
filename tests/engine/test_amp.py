"""AMP is a GPU feature: on a CPU the flag must leave every number as it was."""

import numpy as np
import pytest
import torch

from ray_reid.data.resolve import load_configured_dataset
from ray_reid.config import DataConfig
from ray_reid.data.transforms import test_transform
from ray_reid.engine.amp import amp_dtype, autocast, grad_scaler
from ray_reid.engine.extract import extract_features
from ray_reid.models import ModelConfig, build_model


def test_cpu_gets_no_autocast_and_no_scaler():
    assert amp_dtype("cpu", True) is None and amp_dtype("cpu", False) is None
    assert not grad_scaler("cpu", True).is_enabled()
    with autocast("cpu", True):
        x = torch.randn(4, 4)
        assert (x @ x).dtype == torch.float32


@pytest.mark.parametrize("bf16, expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_gpu_dtype_follows_bf16_support(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert amp_dtype("cuda", True) == expected
    assert amp_dtype("cuda:0", False) is None


def test_extraction_on_cpu_is_identical_with_amp(tiny_synthetic_root):
    records = list(load_configured_dataset("synthetic", str(tiny_synthetic_root)).train)[:12]
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet18", views="global+parts"))
    tf = test_transform(DataConfig(height=32, width=16))
    plain = extract_features(model, records, tf, batch_size=8)
    amp = extract_features(model, records, tf, batch_size=8, amp=True)
    assert set(plain) == set(amp) == {"global", "up", "down"}
    for view in plain:
        assert amp[view].dtype == np.float32
        np.testing.assert_array_equal(plain[view], amp[view])


def _has_cuda() -> bool:
    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA device")
def test_extraction_on_gpu_with_amp_is_unit_norm_and_close(tiny_synthetic_root):
    records = list(load_configured_dataset("synthetic", str(tiny_synthetic_root)).train)[:16]
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet18")).cuda()
    tf = test_transform(DataConfig(height=32, width=16))
    plain = extract_features(model, records, tf, device="cuda")["global"]
    amp = extract_features(model, records, tf, device="cuda", amp=True)["global"]
    assert amp.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(amp, axis=1), 1.0, atol=1e-5)
    assert np.min(np.sum(plain * amp, axis=1)) > 0.99  # cosine to the float32 features


def _train_two_steps(amp: bool) -> tuple[dict, dict]:
    from ray_reid.config import OptimConfig
    from ray_reid.engine.train_epoch import train_one_epoch
    from ray_reid.losses.cluster_memory import ClusterMemory

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet18"))
    images = torch.randn(8, 3, 32, 16)
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    loader = [(images, torch.arange(8)), (images.flip(0), torch.arange(8).flip(0))]
    memories = {"global": ClusterMemory.from_centroids(torch.nn.functional.normalize(torch.randn(4, 512), dim=1))}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    metrics = train_one_epoch(model, loader, labels, memories, optimizer, OptimConfig(p=4, k=2, amp=amp), epoch=0)
    return metrics, model.state_dict()


def test_training_on_cpu_is_identical_with_amp():
    plain, plain_state = _train_two_steps(False)
    amp, amp_state = _train_two_steps(True)
    assert plain["loss"] == amp["loss"]
    for key, value in plain_state.items():
        assert torch.equal(value, amp_state[key]), key
