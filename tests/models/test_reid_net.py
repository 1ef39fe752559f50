import logging
import pickle

import pytest
import torch
import torchvision

from ray_reid.models import ModelConfig, ReidNet, build_model, load_backbone_weights
from ray_reid.models.weights import resolve_weights_path


def tiny(views="global", **kw) -> ReidNet:
    torch.manual_seed(0)
    return ReidNet(ModelConfig("resnet18", views=views, **kw))


def images(b=4, h=64, w=32, seed=1):
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_config_validation_and_view_aliases():
    assert ModelConfig(views="global").view_names == ("global",)
    assert ModelConfig(views="global+parts").view_names == ("global", "up", "down")
    # checkpoints written before the views were named carry the tuple
    assert ModelConfig(views=["global", "up", "down"]).views == "global+parts"
    assert ModelConfig("resnet18").embed_dim == 512 and ModelConfig("resnet101").embed_dim == 2048
    with pytest.raises(ValueError, match="resnet18"):
        ModelConfig(backbone="vgg16")
    with pytest.raises(ValueError, match="global\\+parts"):
        ModelConfig(views=("global", "up"))
    with pytest.raises(ValueError, match="last_stride"):
        ModelConfig(last_stride=3)
    with pytest.raises(ValueError, match="gem_p"):
        ModelConfig(gem_p=0)


@pytest.mark.parametrize("views", ["global", "global+parts"])
def test_views_shapes_and_unit_norm(views):
    model = tiny(views)
    expected = ("global",) if views == "global" else ("global", "up", "down")
    assert model.views == expected
    for mode in (model.train, model.eval):
        mode()
        out = model(images())
        assert tuple(out) == expected
        for feats in out.values():
            assert feats.shape == (4, 512)
            torch.testing.assert_close(feats.norm(dim=1), torch.ones(4))


def test_last_stride_one_keeps_resolution():
    x = images(2)
    assert tiny().backbone(x).shape[-2:] == (4, 2)
    assert tiny(last_stride=2).backbone(x).shape[-2:] == (2, 1)


def test_part_views_pool_their_own_rows():
    """Changing only the bottom of the image must leave the 'up' view's pooled map alone."""
    model = tiny("global+parts").eval()
    x = images(2)
    fmap = model.backbone(x)
    up = model.pools["up"](fmap[..., :2, :])
    down = model.pools["down"](fmap[..., 2:, :])
    out = model(x)
    torch.testing.assert_close(out["up"], model.necks["up"](up))
    torch.testing.assert_close(out["down"], model.necks["down"](down))
    assert not torch.allclose(out["up"], out["down"])


def test_gem_p_trainable_and_bn_bias_frozen():
    model = tiny("global+parts").train()
    loss = sum(f.sum() * (i + 1) for i, f in enumerate(model(images()).values())) + sum(
        (f[:, 0] ** 2).sum() for f in model(images(seed=2)).values()
    )
    loss.backward()
    for view in model.views:
        p = model.pools[view].p
        assert p.requires_grad and p.item() == pytest.approx(3.0)
        assert p.grad is not None and p.grad.abs().item() > 0
        bn = model.necks[view].bn
        assert not bn.bias.requires_grad and bn.bias.grad is None
        assert torch.all(bn.bias == 0) and torch.all(bn.weight == 1)
        assert bn.weight.grad is not None


def test_eval_deterministic_and_uses_running_stats():
    model = tiny().eval()
    x = images()
    a, b = model(x)["global"], model(x)["global"]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # batch composition must not matter in eval mode
    torch.testing.assert_close(model(x[:1])["global"], a[:1], rtol=1e-4, atol=1e-5)


def _save_resnet18(path, seed=3):
    torch.manual_seed(seed)
    net = torchvision.models.resnet18(weights=None)
    torch.save(net.state_dict(), path)
    return net


def test_pretrained_round_trip_ignores_fc(tmp_path, caplog):
    ref = _save_resnet18(tmp_path / "r18.pth")
    with caplog.at_level(logging.INFO):
        model = build_model(ModelConfig("resnet18", pretrained=str(tmp_path / "r18.pth")))
    assert not any("random init" in r.message for r in caplog.records)
    own = model.backbone.state_dict()
    for key, value in ref.state_dict().items():
        if key.startswith("fc."):
            assert key not in own
        else:
            torch.testing.assert_close(own[key], value, rtol=0, atol=0)


def test_random_init_is_logged(caplog):
    with caplog.at_level(logging.INFO, logger="ray_reid.models.reid_net"):
        build_model(ModelConfig("resnet18"))
    assert any("random init" in r.message for r in caplog.records)


def test_mismatched_weights_error_names_file_and_keys(tmp_path):
    path = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="r34.pth.*missing|r34.pth.*unexpected"):
        load_backbone_weights(tiny(), path)
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="garbage.pth"):
        load_backbone_weights(tiny(), bad)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_backbone_weights(tiny(), tmp_path / "nope.pth")


class Evil:
    def __init__(self):
        self.x = 1


def test_weights_only_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pth"
    state = dict(torchvision.models.resnet18(weights=None).state_dict())
    state["payload"] = Evil()
    with open(path, "wb") as f:
        torch.save(state, f, pickle_module=pickle)
    with pytest.raises(ValueError, match="evil.pth"):
        load_backbone_weights(tiny(), path)


def test_s3_weights_downloaded_once_into_cache(tmp_path, s3):
    ref = _save_resnet18(tmp_path / "src.pth")
    s3.client.upload_file(str(tmp_path / "src.pth"), s3.bucket, "imagenet/r18.pth")
    uri = f"s3://{s3.bucket}/imagenet/r18.pth"
    model = tiny()
    load_backbone_weights(model, uri, cache_dir=tmp_path / "cache")
    torch.testing.assert_close(model.backbone.conv1.weight, ref.conv1.weight, rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match=f"s3://{s3.bucket}/missing.pth"):
        load_backbone_weights(model, f"s3://{s3.bucket}/missing.pth", cache_dir=tmp_path / "cache")
    cached = tmp_path / "cache" / s3.bucket / "imagenet" / "r18.pth"
    assert cached.is_file()
    visible = [p.name for p in cached.parent.iterdir() if not p.name.startswith(".")]
    assert visible == ["r18.pth"]  # no temp files left behind
    mtime = cached.stat().st_mtime_ns
    assert resolve_weights_path(uri, cache_dir=tmp_path / "cache") == cached
    assert cached.stat().st_mtime_ns == mtime  # served from the cache, not downloaded again
    with pytest.raises(ValueError, match="s3://bucket/key"):
        resolve_weights_path("s3://only-bucket", cache_dir=tmp_path / "cache")


def test_ddp_single_process_backward(tmp_path):
    """All trainable parameters are used, so DDP without find_unused_parameters works."""
    import socket

    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        model = torch.nn.parallel.DistributedDataParallel(tiny("global+parts"))
        # two steps: DDP reports parameters that got no gradient at the *next* forward
        for seed in (1, 2):
            out = model(images(seed=seed))
            sum(f[:, :8].pow(2).sum() * (i + 1) for i, f in enumerate(out.values())).backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
        assert all(torch.all(model.module.necks[v].bn.bias == 0) for v in model.module.views)
    finally:
        dist.destroy_process_group()


def _gpu_available():
    from ray_reid.clustering._backend import cupy_available

    return cupy_available() and torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu_available(), reason="needs a CUDA device")
def test_eval_forward_on_cuda_matches_cpu():
    model = tiny("global+parts").eval()
    x = images()
    cpu = model(x)
    gpu = model.cuda()(x.cuda())
    for view in model.views:
        torch.testing.assert_close(gpu[view].cpu(), cpu[view], rtol=1e-3, atol=1e-4)


# --- `pretrained: imagenet`: torchvision's weights enum through its own download cache ---

@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache and no network: a download attempt fails the test loudly."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_download(url, *args, **kwargs):
        raise OSError(f"test forbids downloading {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return tmp_path / "torch" / "hub" / "checkpoints"


def _cached_like_torchvision(checkpoints, weights, seed=0):
    """Put a state_dict where torchvision's get_state_dict looks before downloading."""
    checkpoints.mkdir(parents=True, exist_ok=True)
    return _save_resnet18(checkpoints / weights.url.rsplit("/", 1)[-1], seed=seed)


def test_imagenet_resolves_torchvisions_weights_enum_through_the_hub_cache(torch_home, caplog):
    from torchvision.models import ResNet18_Weights

    ref = _cached_like_torchvision(torch_home, ResNet18_Weights.IMAGENET1K_V1)
    with caplog.at_level(logging.INFO):
        model = build_model(ModelConfig("resnet18", pretrained="imagenet"))
    own = model.backbone.state_dict()
    for key, value in ref.state_dict().items():
        if not key.startswith("fc."):
            torch.testing.assert_close(own[key], value, rtol=0, atol=0)
    assert any("IMAGENET1K_V1" in r.getMessage() for r in caplog.records)


def test_imagenet_variant_is_chosen_and_checked_without_downloading():
    from torchvision.models import ResNet50_Weights

    from ray_reid.models.weights import imagenet_weights

    assert imagenet_weights("resnet50") is ResNet50_Weights.IMAGENET1K_V1  # what the papers started from
    assert imagenet_weights("resnet50", "imagenet:imagenet1k_v2") is ResNet50_Weights.IMAGENET1K_V2
    with pytest.raises(ValueError, match="resnet18.*imagenet:IMAGENET1K_V1"):
        ModelConfig("resnet18", pretrained="imagenet:IMAGENET1K_V2")  # resnet18 has only V1


def test_backbone_without_imagenet_weights_is_refused_naming_it(monkeypatch):
    from ray_reid.models import backbone

    monkeypatch.setitem(backbone.BACKBONES, "myresnet", backbone.BACKBONES["resnet18"])
    with pytest.raises(ValueError, match="backbone 'myresnet' has no ImageNet weights"):
        ModelConfig("myresnet", pretrained="imagenet")
    ModelConfig("myresnet", pretrained=None)  # the backbone itself is fine


def test_imagenet_weights_missing_offline_fail_naming_backbone_and_url(torch_home):
    with pytest.raises(ValueError, match="resnet18.*download.pytorch.org.*test forbids downloading"):
        build_model(ModelConfig("resnet18", pretrained="imagenet"))


def test_imagenet_cache_file_with_pickled_code_is_refused(torch_home):
    from torchvision.models import ResNet18_Weights

    torch_home.mkdir(parents=True)
    state = dict(torchvision.models.resnet18(weights=None).state_dict())
    state["payload"] = Evil()
    with open(torch_home / ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1], "wb") as f:
        torch.save(state, f, pickle_module=pickle)
    with pytest.raises(ValueError, match="refusing"):
        build_model(ModelConfig("resnet18", pretrained="imagenet"))


def test_named_weights_are_not_turned_into_paths():
    from ray_reid.config import absolute_paths

    out = absolute_paths({"model": {"pretrained": "imagenet"}, "run": {"teacher": "imagenet"}})
    assert out["model"]["pretrained"] == "imagenet"
    assert out["run"]["teacher"].startswith("/")  # only model.pretrained names weights
