import numpy as np
import pytest
import torch
from PIL import Image

from ray_reid.data.transforms import TransformConfig, test_transform as make_test_transform, train_transform


def pil(h=50, w=30, seed=0):
    arr = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr)


@pytest.mark.parametrize("builder", [train_transform, make_test_transform])
def test_output_shape_dtype(builder):
    cfg = TransformConfig(height=64, width=32)
    out = builder(cfg)(pil())
    assert out.shape == (3, 64, 32) and out.dtype == torch.float32


def test_test_transform_normalises_deterministically():
    cfg = TransformConfig(height=8, width=4)
    grey = Image.new("RGB", (4, 8), (124, 116, 104))  # ≈ ImageNet mean colour
    out = make_test_transform(cfg)(grey)
    assert out.abs().max() < 0.02
    img = pil()
    torch.testing.assert_close(make_test_transform(cfg)(img), make_test_transform(cfg)(img))


def test_train_transform_is_random_and_flips():
    cfg = TransformConfig(height=16, width=8, pad=0, erasing_p=0.0, flip_p=1.0)
    img = pil(16, 8)
    flipped = train_transform(cfg)(img)
    torch.testing.assert_close(flipped, make_test_transform(cfg)(img).flip(-1))
    torch.manual_seed(0)
    augmenting = train_transform(TransformConfig(height=32, width=16))
    outs = [augmenting(pil(32, 16)) for _ in range(4)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_erasing_fills_with_mean():
    torch.manual_seed(0)
    cfg = TransformConfig(height=32, width=16, pad=0, flip_p=0.0, erasing_p=1.0)
    out = train_transform(cfg)(Image.new("RGB", (16, 32), (255, 255, 255)))
    assert (out == 0).all(dim=0).any()  # an erased patch, at the normalised mean


@pytest.mark.parametrize(
    "kw, match",
    [(dict(height=0), "height"), (dict(pad=-1), "pad"), (dict(flip_p=1.5), "flip_p"), (dict(std=(1, 0, 1)), "std")],
)
def test_config_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        TransformConfig(**kw)


def test_photometric_augmentation_is_opt_in_and_validated():
    from torchvision.transforms import v2

    plain = train_transform(TransformConfig(height=32, width=16))
    assert not any(isinstance(t, (v2.RandomApply, v2.RandomGrayscale)) for t in plain.transforms)
    strong = train_transform(TransformConfig(height=32, width=16, color_jitter=0.4, grayscale_p=0.2, blur_p=0.5))
    kinds = [type(t) for t in strong.transforms]
    assert kinds.count(v2.RandomApply) == 2 and v2.RandomGrayscale in kinds
    out = strong(Image.fromarray(np.full((40, 20, 3), 128, np.uint8)))
    assert out.shape == (3, 32, 16) and out.dtype == torch.float32
    with pytest.raises(ValueError, match="color_jitter"):
        TransformConfig(color_jitter=1.5)
    with pytest.raises(ValueError, match="blur_p"):
        TransformConfig(blur_p=-0.1)
