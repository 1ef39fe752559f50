"""A never-trained BN neck gets the training images' statistics before the first extraction."""

import pytest
import torch

from ray_reid.data.resolve import load_configured_dataset
from ray_reid.data.config import DataConfig
from ray_reid.data.transforms import test_transform
from ray_reid.engine.neck_init import init_neck_statistics, untrained_necks
from ray_reid.models import ModelConfig, ReidNet


@pytest.fixture(scope="module")
def data(tiny_synthetic_root):
    ds = load_configured_dataset("synthetic", str(tiny_synthetic_root))
    tf = test_transform(DataConfig(height=32, width=16))
    images = torch.stack([tf(__import__("PIL.Image").Image.open(r.path).convert("RGB")) for r in ds.train])
    return ds, tf, images


def model(views="global") -> ReidNet:
    torch.manual_seed(0)
    return ReidNet(ModelConfig("resnet18", views=views))


def pooled(net: ReidNet, images: torch.Tensor, view: str = "global") -> torch.Tensor:
    net.eval()
    with torch.no_grad():
        from ray_reid.models.heads import view_regions

        return net.pools[view](view_regions(net.backbone(images), net.views)[view])


@pytest.mark.parametrize("views", ["global", "global+parts"])
def test_statistics_are_the_exact_mean_and_variance_of_the_pooled_features(data, views):
    ds, tf, images = data
    net = model(views)
    assert untrained_necks(net) == list(net.views)
    assert init_neck_statistics(net, ds.train, tf, batch_size=7) == list(net.views)
    assert untrained_necks(net) == [] and net.training  # its mode is given back
    feats = pooled(net, images)
    bn = net.necks["global"].bn
    torch.testing.assert_close(bn.running_mean, feats.mean(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.running_var, feats.var(0, unbiased=True), rtol=1e-4, atol=1e-6)


def test_eval_features_match_train_features_after_init_and_not_before(data):
    """The bug it fixes: the first memory (eval mode) and the training features (train mode) disagreed."""
    ds, tf, images = data

    def agreement(net: ReidNet) -> float:
        net.eval()
        with torch.no_grad():
            ev = net(images)["global"]
            net.necks.train()  # the neck standardises with the batch's statistics, as in a training step
            tr = net(images)["global"]  # (the trunk stays in eval mode: a random trunk's BNs are not the point)
        net.eval()
        return float((ev * tr).sum(1).mean())

    before = agreement(model())
    net = model()
    init_neck_statistics(net, ds.train, tf)
    after = agreement(net)
    assert after > 0.999, after
    assert before < 0.9, before


def test_trained_neck_is_left_alone_and_bad_arguments_refused(data):
    ds, tf, images = data
    net = model()
    net.train()
    with torch.no_grad():
        net(images[:8])
    mean = net.necks["global"].bn.running_mean.clone()
    assert init_neck_statistics(net, ds.train, tf) == []
    torch.testing.assert_close(net.necks["global"].bn.running_mean, mean)
    with pytest.raises(ValueError, match="max_images"):
        init_neck_statistics(model(), ds.train, tf, max_images=1)
    with pytest.raises(ValueError, match="at least one"):
        init_neck_statistics(model(), [], tf)


def test_subset_is_evenly_spaced_and_capped(data):
    ds, tf, _ = data
    net = model()
    seen = []
    net.necks["global"].bn.register_forward_pre_hook(lambda _m, a: seen.append(a[0].shape[0]))
    init_neck_statistics(net, ds.train, tf, max_images=10)
    assert sum(seen) == 10
