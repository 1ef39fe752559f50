"""Helpers shared by the embed tests (in-process and Ray Data): a crops folder with one bad file, the reference."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

BAD_NAME = "0007_c2s1_000001_01.jpg"  # a JPEG name whose bytes are no image


def crops_folder(tiny_synthetic_root, dest: Path, *, bad: bool = True) -> Path:
    """The synthetic gallery copied to ``dest`` (one sub-folder, to check the recursive listing), plus a bad file."""
    shutil.copytree(Path(tiny_synthetic_root) / "bounding_box_test", dest / "cam_a")
    if bad:
        (dest / "cam_a" / BAD_NAME).write_bytes(b"\xff\xd8\xff\xe0 truncated, not a JPEG")
    return dest


def reference_embeddings(checkpoint, paths: list[str]) -> np.ndarray:
    """Global embeddings of ``paths`` the way ``evaluate`` extracts them (test_transform + extract_features)."""
    from ray_reid.data.records import ImageRecord
    from ray_reid.data.config import DataConfig
    from ray_reid.data.transforms import test_transform
    from ray_reid.engine.extract import extract_features
    from ray_reid.inference.model import build_network, load_trained

    weights, spec = load_trained(checkpoint)
    model = build_network(weights, spec)
    transform = test_transform(DataConfig(height=spec.height, width=spec.width))
    records = [ImageRecord(p, 0, 0) for p in paths]
    return extract_features(model, records, transform)["global"]
