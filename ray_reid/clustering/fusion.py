"""Fuse several feature views into one matrix whose squared distances are the weighted sum.

Learning to Purification clusters on 0.7·D_global + 0.15·D_up + 0.15·D_down. For a clusterer
that works on features (SSE needs sums and centroids, not just distances) the same fusion is
exact as one vector: concatenate the views scaled by √w, because
‖[√w₁a₁, √w₂a₂] − [√w₁b₁, √w₂b₂]‖² = w₁‖a₁ − b₁‖² + w₂‖a₂ − b₂‖².
NumPy and CuPy arrays both work; all views must live on the same device.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ray_reid.clustering._backend import array_module, to_numpy

PURIFICATION_WEIGHTS = (0.7, 0.15, 0.15)  # global, upper half, lower half
_CHECK_ROWS = 8192


def _checked(views: Sequence[Any], weights: Sequence[float], normalize: bool, *, check_finite: bool = True
             ) -> tuple[Any, list[Any], list[float]]:
    if len(views) == 0:
        raise ValueError("views must hold at least one N×d array")
    if len(views) != len(weights):
        raise ValueError(f"got {len(views)} views but {len(weights)} weights; pass one weight per view")
    xp = array_module(views[0])
    arrays = []
    for v, view in enumerate(views):
        if array_module(view) is not xp:
            raise ValueError(f"view {v} is a {type(view).__module__} array but view 0 is {xp.__name__}; use one device")
        view = xp.asarray(view)
        if view.ndim != 2:
            raise ValueError(f"view {v} must be 2-D (N, d), got shape {tuple(view.shape)}")
        if view.shape[0] != views[0].shape[0]:
            raise ValueError(f"view {v} has {view.shape[0]} rows but view 0 has {views[0].shape[0]}; views must align")
        if check_finite and not bool(xp.isfinite(view).all()):
            raise ValueError(f"view {v} contains NaN or inf values")
        if normalize:
            norms = xp.linalg.norm(view, axis=1, keepdims=True)
            if bool((norms == 0).any()):
                raise ValueError(f"view {v} has all-zero rows, which cannot be L2-normalised")
            view = view / norms
        arrays.append(view)
    checked_weights = []
    for v, w in enumerate(weights):
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w) or w < 0:
            raise ValueError(f"weight {v} must be a finite real number >= 0, got {w!r}")
        checked_weights.append(float(w))
    if not any(checked_weights):
        raise ValueError(f"weights must not all be zero, got {tuple(weights)}")
    return xp, arrays, checked_weights


def fuse_views(views: Sequence[Any], weights: Sequence[float], *, normalize: bool = True) -> Any:
    """One N×Σd matrix whose squared Euclidean distances are Σ_v w_v · ‖view_v[i] − view_v[j]‖².

    Views are L2-normalised per row first when ``normalize``; zero-weight views are left out.
    """
    xp, arrays, ws = _checked(views, weights, normalize)
    return xp.concatenate([math.sqrt(w) * a for a, w in zip(arrays, ws) if w > 0], axis=1)


def fused_sq_distances(views: Sequence[Any], weights: Sequence[float], *, normalize: bool = True) -> Any:
    """Dense N×N Σ_v w_v · squared distances, view by view (the reference that ``fuse_views`` must match)."""
    xp, arrays, ws = _checked(views, weights, normalize)
    total = None
    for a, w in zip(arrays, ws):
        sq = xp.einsum("ij,ij->i", a, a)
        d = xp.maximum(sq[:, None] + sq[None, :] - 2 * (a @ a.T), 0)
        total = w * d if total is None else total + w * d
    return total


def split_views(X: Any) -> tuple[tuple[str, ...], list[Any]]:
    """The clusterers' input boundary: one N×d array, or ``{view: N×d array}`` (global first) for several views.

    This is where embeddings are checked, once, before any clusterer touches them: 2-D, the same
    rows in every view, real and finite. Errors name the view and how many rows are bad.
    """
    if isinstance(X, Mapping):
        if not X:
            raise ValueError("got no feature views to cluster")
        names, arrays = tuple(str(v) for v in X), list(X.values())
    else:
        names, arrays = ("X",), [X]
    checked = []
    n = None
    for name, arr in zip(names, arrays):
        what = "X" if names == ("X",) else f"features of view {name!r}"
        if getattr(arr, "ndim", None) is None:
            arr = np.asarray(arr)
        xp = array_module(arr)
        if arr.ndim != 2:
            raise ValueError(f"{what} must be a 2-D array (n_samples, n_features), got {arr.ndim} dimension(s)")
        if arr.shape[0] < 1 or arr.shape[1] < 1:
            raise ValueError(f"{what} must have at least one sample and one feature, got shape {tuple(arr.shape)}")
        if n is not None and arr.shape[0] != n:
            raise ValueError(f"{what} has {arr.shape[0]} rows but view {names[0]!r} has {n}; views must align")
        n = arr.shape[0]
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)) \
                or arr.dtype == np.bool_:
            raise ValueError(f"{what} must hold real numbers, got dtype {arr.dtype}")
        # by blocks of rows: a bool copy of a 1M × 512 array would be 0.5 GB
        bad = xp.concatenate([~xp.isfinite(arr[i:i + _CHECK_ROWS]).all(axis=1)
                              for i in range(0, arr.shape[0], _CHECK_ROWS)])
        if bool(bad.any()):
            rows = to_numpy(xp.flatnonzero(bad))
            raise ValueError(f"{what} hold NaN or inf in {rows.size} of {n} rows (first bad rows: "
                             f"{rows[:5].tolist()}); refusing to cluster")
        checked.append(arr)
    return names, checked


def weights_for(names: Sequence[str], view_weights: Sequence[float]) -> list[float]:
    """Fusion weights in the order of ``names`` (global first, then up/down, as in DESIGN.md §5)."""
    if len(names) > len(view_weights):
        raise ValueError(f"{len(view_weights)} view weights {tuple(view_weights)} for {len(names)} views {tuple(names)}")
    return [float(w) for w in view_weights[: len(names)]]


def fuse_checked(views: Sequence[Any], weights: Sequence[float], *, normalize: bool = True) -> Any:
    """:func:`fuse_views` for views :func:`split_views` already checked (no second pass for NaN)."""
    xp, arrays, ws = _checked(views, weights, normalize, check_finite=False)
    return xp.concatenate([math.sqrt(w) * a for a, w in zip(arrays, ws) if w > 0], axis=1)
