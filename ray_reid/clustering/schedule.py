"""How many clusters to ask for at each step of training.

HCT re-clusters from singletons every step and merges down to a target that shrinks
linearly: step s (0-based) keeps ``round(N · (1 − mp · (s + 1)))`` clusters, never fewer
than one. A fixed target (e.g. the known number of identities, for ablations) is the
other schedule.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def hct_target_clusters(n_samples: int, merge_percent: float, step: int) -> int:
    """Target number of clusters at HCT step ``step`` (0-based): round(N(1 − mp(s+1))), clipped to >= 1."""
    n_samples = _check_int("n_samples", n_samples, 1)
    step = _check_int("step", step, 0)
    if (
        isinstance(merge_percent, bool)
        or not isinstance(merge_percent, numbers.Real)
        or not math.isfinite(merge_percent)
        or not 0 < merge_percent <= 1
    ):
        raise ValueError(f"merge_percent must be a real number in (0, 1], got {merge_percent!r}")
    return max(1, round(n_samples * (1.0 - merge_percent * (step + 1))))


def fixed_target(n_clusters: int) -> Callable[[int, int], int]:
    """A schedule ``(n_samples, step) -> n_clusters`` that always asks for ``n_clusters`` (capped at N)."""
    n_clusters = _check_int("n_clusters", n_clusters, 1)

    def target(n_samples: int, step: int) -> int:
        _check_int("n_samples", n_samples, 1)
        _check_int("step", step, 0)
        return min(n_clusters, n_samples)

    return target


def scheduled_target(n_samples: int, epoch: int, *, merge_percent: float, first_step: int = 0,
                     min_clusters_ratio: float = 0.0) -> int:
    """The hierarchical clusterer's target at ``epoch``: HCT step ``first_step + epoch``, floored at
    ``ceil(min_clusters_ratio · N)`` so a long run never merges below a sensible number of identities."""
    floor = max(1, math.ceil(min_clusters_ratio * n_samples))
    return max(floor, hct_target_clusters(n_samples, merge_percent, first_step + epoch))
