"""Dataset names -> reader functions, so jobs pick a dataset by a string in their config.

A reader is any callable ``reader(root, **options) -> ReidDataset``. Readers register
themselves on import (``ray_reid.data`` imports them all), and a wrong name or option is
reported with the valid ones instead of a bare ``KeyError``/``TypeError`` from deep inside.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable
from typing import TypeVar

from ray_reid.data.records import ReidDataset

log = logging.getLogger(__name__)

Reader = Callable[..., ReidDataset]
R = TypeVar("R", bound=Reader)

_READERS: dict[str, Reader] = {}


def _normalise(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"dataset name must be a non-empty string, got {name!r}")
    return name.strip().lower()


def register_dataset(name: str) -> Callable[[R], R]:
    """Decorator registering ``reader`` under ``name`` (case-insensitive).

    Registering a name twice is refused: a silent override would make the dataset a job
    trains on depend on import order.
    """
    key = _normalise(name)

    def decorator(reader: R) -> R:
        if key in _READERS and _READERS[key] is not reader:
            raise ValueError(f"dataset {key!r} is already registered (by {_READERS[key]!r})")
        _READERS[key] = reader
        return reader

    return decorator


def available_datasets() -> list[str]:
    """Sorted registered dataset names."""
    return sorted(_READERS)


def _accepted_options(reader: Reader) -> list[str] | None:
    """Keyword options ``reader`` takes besides ``root``; None when it takes ``**kwargs``."""
    params = list(inspect.signature(reader).parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [
        p.name
        for p in params[1:]
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]


def load_dataset(name: str, root: str | os.PathLike[str], **options: object) -> ReidDataset:
    """Read dataset ``name`` from ``root`` (the dataset folder or the folder containing it).

    Raises ValueError for an unknown name or option (listing the valid ones), and whatever
    the reader raises for a broken tree (FileNotFoundError / ValueError naming the path).
    """
    key = _normalise(name)
    if key not in _READERS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(available_datasets())}")
    reader = _READERS[key]
    accepted = _accepted_options(reader)
    if accepted is not None:
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            valid = ", ".join(accepted) if accepted else "none"
            raise ValueError(f"dataset {key!r} got unknown option(s) {unknown}; valid options: {valid}")
    dataset = reader(root, **options)
    log.info("loaded %s", dataset.summary())
    return dataset
