"""The record type every dataset reader produces and every consumer reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class ImageRecord(NamedTuple):
    """One crop: where it is, whose it is (-1 unknown / junk never appears), which camera (0-based)."""

    path: str
    pid: int
    camid: int


@dataclass(frozen=True)
class ReidDataset:
    """Train / query / gallery splits of one dataset, as lists of records.

    Train ids are relabelled 0..n-1; query and gallery keep the original ids so that
    distractors (pid 0 in Market-style sets) stay distinguishable.
    """

    name: str
    root: str
    train: list[ImageRecord] = field(repr=False)
    query: list[ImageRecord] = field(repr=False)
    gallery: list[ImageRecord] = field(repr=False)

    @property
    def num_train_pids(self) -> int:
        return len({r.pid for r in self.train})

    @property
    def num_cams(self) -> int:
        return len({r.camid for r in (*self.train, *self.query, *self.gallery)})

    def summary(self) -> str:
        def ids(split: list[ImageRecord]) -> int:
            return len({r.pid for r in split})

        return (
            f"{self.name} at {self.root}: train {len(self.train)} imgs / {ids(self.train)} ids, "
            f"query {len(self.query)} / {ids(self.query)}, gallery {len(self.gallery)} / {ids(self.gallery)}, "
            f"{self.num_cams} cameras"
        )
