import numpy as np
import pytest
import torch
from PIL import Image

from ray_reid.data.config import DataConfig
from ray_reid.data.transforms import test_transform as make_test_transform, train_transform


def pil(h=50, w=30, seed=0):
    arr = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr)


@pytest.mark.parametrize("builder", [train_transform, make_test_transform])
def test_output_shape_dtype(builder):
    cfg = DataConfig(height=64, width=32)
    out = builder(cfg)(pil())
    assert out.shape == (3, 64, 32) and out.dtype == torch.float32


def test_test_transform_normalises_deterministically():
    cfg = DataConfig(height=8, width=4)
    grey = Image.new("RGB", (4, 8), (124, 116, 104))  # ≈ ImageNet mean colour
    out = make_test_transform(cfg)(grey)
    assert out.abs().max() < 0.02
    img = pil()
    torch.testing.assert_close(make_test_transform(cfg)(img), make_test_transform(cfg)(img))


def test_train_transform_is_random_and_flips():
    cfg = DataConfig(height=16, width=8, pad=0, erasing_p=0.0, flip_p=1.0)
    img = pil(16, 8)
    flipped = train_transform(cfg)(img)
    torch.testing.assert_close(flipped, make_test_transform(cfg)(img).flip(-1))
    torch.manual_seed(0)
    augmenting = train_transform(DataConfig(height=32, width=16))
    outs = [augmenting(pil(32, 16)) for _ in range(4)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_erasing_fills_with_mean():
    torch.manual_seed(0)
    cfg = DataConfig(height=32, width=16, pad=0, flip_p=0.0, erasing_p=1.0)
    out = train_transform(cfg)(Image.new("RGB", (16, 32), (255, 255, 255)))
    assert (out == 0).all(dim=0).any()  # an erased patch, at the normalised mean


@pytest.mark.parametrize(
    "kw, match",
    [(dict(height=0), "height"), (dict(pad=-1), "pad"), (dict(flip_p=1.5), "flip_p"), (dict(std=(1, 0, 1)), "std")],
)
def test_config_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        DataConfig(**kw)


def test_photometric_augmentation_is_opt_in_and_validated():
    from torchvision.transforms import v2

    plain = train_transform(DataConfig(height=32, width=16))
    assert not any(isinstance(t, (v2.RandomApply, v2.RandomGrayscale)) for t in plain.transforms)
    strong = train_transform(DataConfig(height=32, width=16, color_jitter=0.4, grayscale_p=0.2, blur_p=0.5))
    kinds = [type(t) for t in strong.transforms]
    assert kinds.count(v2.RandomApply) == 2 and v2.RandomGrayscale in kinds
    out = strong(Image.fromarray(np.full((40, 20, 3), 128, np.uint8)))
    assert out.shape == (3, 32, 16) and out.dtype == torch.float32
    with pytest.raises(ValueError, match="color_jitter"):
        DataConfig(color_jitter=1.5)
    with pytest.raises(ValueError, match="blur_p"):
        DataConfig(blur_p=-0.1)


# --- cluster-contrast's RandomErasing (clustercontrast/utils/data/transforms.py, RandomErasing) ---
# The published rule: erase with probability 0.5 a box of area fraction U(sl=0.02, sh=0.4) and
# aspect h/w U(r1=0.3, 1/r1) (linear, not log), retried up to 100 times until h < H and w < W,
# filled per channel with (0.485, 0.456, 0.406) written into the normalised tensor.
CC_FILL = (0.485, 0.456, 0.406)


def _boxes(transform, n, height=256, width=128, seed=0):
    """(h, w) of the box each draw of ``transform.make_params`` would erase (None: not erased)."""
    torch.manual_seed(seed)
    img = torch.zeros(3, height, width)
    out = []
    for _ in range(n):
        params = transform.make_params([img])
        out.append(None if params["v"] is None else (params["h"], params["w"], params["i"], params["j"]))
    return out


def test_cluster_contrast_erasing_draws_boxes_by_the_published_rule():
    from ray_reid.data.transforms import ClusterContrastErasing

    boxes = [b for b in _boxes(ClusterContrastErasing(p=1.0), 2000) if b is not None]
    assert len(boxes) == 2000  # at 256x128 some of the 100 attempts always fits
    h, w, i, j = (np.array(x) for x in zip(*boxes))
    area, aspect = h * w / (256 * 128), h / w
    assert (h < 256).all() and (w < 128).all() and (i >= 0).all() and (j >= 0).all()
    assert (i + h <= 256).all() and (j + w <= 128).all()
    # area fraction in [sl, sh] = [0.02, 0.4] (up to rounding h and w to integers)
    assert area.min() >= 0.02 * 0.85 and area.max() <= 0.4 * 1.1
    assert (area > 0.33).mean() > 0.05, "areas above torchvision's 0.33 cap must occur"
    # aspect h/w in [r1, 1/r1] = [0.3, 3.33], uniform on a linear scale: ~80% of draws above 1 and a
    # median near 1.8 (torchvision's log-uniform draw has median 1); boxes with w >= 128 are refused
    assert aspect.min() >= 0.3 * 0.8 and aspect.max() <= (1 / 0.3) * 1.2
    assert 0.7 < (aspect > 1).mean() < 0.9, (aspect > 1).mean()
    assert 1.5 < np.median(aspect) < 2.1, np.median(aspect)
    tv = [b for b in _boxes(v2_random_erasing(), 2000) if b is not None]
    tv_aspect = np.array([b[0] / b[1] for b in tv])
    assert 0.8 < np.median(tv_aspect) < 1.25  # the rule it replaces differs measurably


def v2_random_erasing():
    from torchvision.transforms import v2

    return v2.RandomErasing(p=1.0, value=0)


def test_cluster_contrast_erasing_probability_and_per_channel_fill():
    from ray_reid.data.transforms import ClusterContrastErasing

    torch.manual_seed(0)
    t = ClusterContrastErasing(p=0.5)
    erased = 0
    for _ in range(1000):
        img = torch.full((3, 32, 16), -5.0)
        out = t(img)
        mask = (out != -5.0).all(dim=0)
        if mask.any():
            erased += 1
            rows, cols = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
            assert int(mask.sum()) == int(rows.numel() * cols.numel()), "one rectangle"
            for c, v in enumerate(CC_FILL):
                assert torch.allclose(out[c][mask], torch.tensor(v))
    assert abs(erased / 1000 - 0.5) < 0.05, erased  # binomial sd 0.016


def test_cluster_contrast_erasing_gives_up_after_its_attempts_like_the_public_code():
    from ray_reid.data.transforms import ClusterContrastErasing

    torch.manual_seed(0)
    img = torch.full((3, 8, 8), -5.0)
    t = ClusterContrastErasing(p=1.0, sl=0.95, sh=1.0)  # area >= 95% needs h == H or w == W: always refused
    assert torch.equal(t(img), img)


def test_train_transform_uses_the_configured_erasing_rule():
    from torchvision.transforms import v2

    from ray_reid.data.transforms import ClusterContrastErasing

    cc = train_transform(DataConfig(height=32, width=16, erasing="cluster_contrast"))
    assert isinstance(cc.transforms[-1], ClusterContrastErasing)
    tv = train_transform(DataConfig(height=32, width=16))
    assert type(tv.transforms[-1]) is v2.RandomErasing
    with pytest.raises(ValueError, match="erasing"):
        DataConfig(erasing="zhong")


@pytest.mark.parametrize("kw, match", [(dict(sl=0.5, sh=0.4), "sl"), (dict(r1=0.0), "r1"), (dict(attempts=0), "attempts")])
def test_cluster_contrast_erasing_validates_its_knobs(kw, match):
    from ray_reid.data.transforms import ClusterContrastErasing

    with pytest.raises(ValueError, match=match):
        ClusterContrastErasing(**kw)
