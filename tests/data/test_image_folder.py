import logging

import numpy as np
import pytest
import torch
from PIL import Image

from ray_reid.data.image_folder import BadImageError, RecordImageDataset
from ray_reid.data.records import ImageRecord
from ray_reid.data.config import DataConfig
from ray_reid.data.transforms import test_transform as make_test_transform


@pytest.fixture
def records(tmp_path):
    out = []
    for i in range(3):
        path = tmp_path / f"{i:04d}_c1.jpg"
        mode = "L" if i == 1 else "RGB"  # a greyscale file must still come out RGB
        Image.fromarray(np.full((20, 10, 3), 40 * i, dtype=np.uint8)).convert(mode).save(path)
        out.append(ImageRecord(str(path), i, 0))
    return out


def test_returns_tensor_and_index(records):
    ds = RecordImageDataset(records, make_test_transform(DataConfig(height=16, width=8)))
    assert len(ds) == 3
    for i in range(3):
        image, index = ds[i]
        assert index == i and image.shape == (3, 16, 8) and image.dtype == torch.float32
    loader = torch.utils.data.DataLoader(ds, batch_size=3)
    images, indices = next(iter(loader))
    assert images.shape == (3, 3, 16, 8) and indices.tolist() == [0, 1, 2]


def test_default_transform_is_unit_range(records):
    image, _ = RecordImageDataset(records)[2]
    assert image.shape == (3, 20, 10)
    torch.testing.assert_close(image, torch.full_like(image, 80 / 255))


def test_bad_image_raises_naming_path(records, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 truncated nonsense")
    ds = RecordImageDataset([*records, ImageRecord(str(bad), 9, 0)])
    with pytest.raises(BadImageError, match="broken.jpg"):
        ds[3]
    missing = RecordImageDataset([ImageRecord(str(tmp_path / "gone.jpg"), 0, 0)])
    with pytest.raises(FileNotFoundError, match="gone.jpg"):
        missing[0]


def test_skip_policy_substitutes_next_image(records, tmp_path, caplog):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    recs = [records[0], ImageRecord(str(bad), 9, 0), records[2]]
    ds = RecordImageDataset(recs, bad_image_policy="skip")
    with caplog.at_level(logging.WARNING):
        image, index = ds[1]
        ds[1]
    assert index == 2 and ds.bad_paths == [str(bad)]
    assert sum("broken.jpg" in r.message for r in caplog.records) == 1
    with pytest.raises(ValueError, match="bad_image_policy"):
        RecordImageDataset(recs, bad_image_policy="ignore")
