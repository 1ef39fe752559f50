"""CUHK03 under the new protocol (CUHK03-NP): 767 train / 700 test ids, Market-style folders.

``cuhk03-np/{detected,labeled}/{bounding_box_train,query,bounding_box_test}``; "detected"
(boxes from a person detector) is the default because it is the harder, more realistic one.
"""

from __future__ import annotations

import os

from ray_reid.data._folders import existing_root
from ray_reid.data.market import read_market_layout
from ray_reid.data.records import ReidDataset
from ray_reid.data.registry import register_dataset

SUBSETS = ("detected", "labeled")
CANONICAL = "cuhk03-np"


def _subset_root(root: str | os.PathLike[str], subset: str) -> str:
    """``root/subset`` or ``root/cuhk03-np/subset``; the subset folder itself is also accepted."""
    base = existing_root(root)
    for candidate in (os.path.join(base, subset), os.path.join(base, CANONICAL, subset)):
        if os.path.isdir(candidate):
            return candidate
    if os.path.basename(base) == subset:
        return base
    raise FileNotFoundError(
        f"no CUHK03-NP {subset!r} subset under {base}: expected folder "
        f"{os.path.join(base, subset)} or {os.path.join(base, CANONICAL, subset)}"
    )


@register_dataset("cuhk03")
def cuhk03(root: str | os.PathLike[str], subset: str = "detected") -> ReidDataset:
    """CUHK03-NP, ``subset`` "detected" (default) or "labeled"; the name records the subset."""
    if subset not in SUBSETS:
        raise ValueError(f"cuhk03 subset must be one of {SUBSETS}, got {subset!r}")
    return read_market_layout(_subset_root(root, subset), name=f"cuhk03-{subset}", num_cams=None)


@register_dataset("cuhk03-detected")
def cuhk03_detected(root: str | os.PathLike[str]) -> ReidDataset:
    return cuhk03(root, subset="detected")


@register_dataset("cuhk03-labeled")
def cuhk03_labeled(root: str | os.PathLike[str]) -> ReidDataset:
    return cuhk03(root, subset="labeled")
