"""Market-1501, DukeMTMC-reID and the synthetic set: one folder layout, one reader.

``bounding_box_train/``, ``query/``, ``bounding_box_test/`` with names parsed by
``^(-?\\d+)_c(\\d+)``. The synthetic generator writes this exact layout, so a pipeline
tested on synthetic data reads Market-1501 unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ray_reid.data._folders import (
    MARKET_SPLITS,
    detect_root,
    read_market_folder,
    relabel,
    require_folder,
    sort_records,
)
from ray_reid.data.records import ReidDataset
from ray_reid.data.registry import register_dataset


def read_market_layout(
    root: str | os.PathLike[str],
    *,
    name: str,
    num_cams: int | None,
    canonical: Sequence[str] = (),
) -> ReidDataset:
    """Read a Market-style tree at ``root`` (or in one of its ``canonical`` subfolders).

    ``num_cams`` bounds the 1-based camera number in file names (None: any >= 1).
    """
    base = detect_root(root, markers=[f for f, _ in MARKET_SPLITS], canonical=canonical, dataset=name)
    splits = {}
    for folder, split in MARKET_SPLITS:
        path = require_folder(os.path.join(base, folder), f"{name} {split} split")
        splits[split] = sort_records(read_market_folder(path, num_cams=num_cams))
    return ReidDataset(
        name=name,
        root=base,
        train=relabel(splits["train"]),
        query=splits["query"],
        gallery=splits["gallery"],
    )


@register_dataset("market1501")
def market1501(root: str | os.PathLike[str]) -> ReidDataset:
    """Market-1501: 6 cameras; pid 0 = distractors (kept), -1 = junk (dropped)."""
    return read_market_layout(
        root, name="market1501", num_cams=6, canonical=("Market-1501-v15.09.15", "Market-1501")
    )


@register_dataset("dukemtmc")
def dukemtmc(root: str | os.PathLike[str]) -> ReidDataset:
    """DukeMTMC-reID: 8 cameras, names like ``0005_c2_f0046985.jpg``."""
    return read_market_layout(root, name="dukemtmc", num_cams=8, canonical=("DukeMTMC-reID",))


@register_dataset("synthetic")
def synthetic(root: str | os.PathLike[str]) -> ReidDataset:
    """The generated set (``ray_reid.data.synthetic``): Market layout, any number of cameras."""
    return read_market_layout(root, name="synthetic", num_cams=None)
