"""A small trained-looking checkpoint, shared by tests that load runs (its own module: a
`from conftest import` resolves to whichever conftest.py comes first on sys.path)."""

from __future__ import annotations


def write_reid_checkpoint(folder, *, views: str = "global", height: int = 32, width: int = 16, seed: int = 0):
    """A checkpoint as training writes it (state.pt + meta.json), of a small random ResNet-18.

    BN running statistics are moved off their init values by a few train-mode passes, so the
    eval-mode necks are not the identity and an export that dropped them would be caught.
    """
    from dataclasses import asdict

    import torch

    from ray_reid.config import config_from_dict
    from ray_reid.engine.checkpoint import save_checkpoint
    from ray_reid.models import ModelConfig, build_model

    torch.manual_seed(seed)
    mcfg = ModelConfig(backbone="resnet18", views=views)
    model = build_model(mcfg)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, height, width) * 1.5 + 0.3)
    cfg = config_from_dict({"data": {"height": height, "width": width},
                            "model": {"backbone": "resnet18", "views": views}})
    state = {"epoch": 0, "model": model.state_dict()}
    # training writes the epoch's metrics row with it: a checkpoint whose history does not reach its epoch is partial
    return save_checkpoint(folder, state, {"model": asdict(mcfg), "config": cfg.to_dict(), "epoch": 0}, [{"epoch": 0}])
