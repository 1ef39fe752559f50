"""The pictures people look at: training curves, rank lists, and embeddings.

Everything renders with matplotlib's Agg backend (no display on cluster nodes) into a
figure object that is never registered with pyplot, and is written atomically (temp file
in the target folder, then rename), so a dashboard polling the PNG never sees half a file.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageOps

from ray_reid.atomic import atomic_write
from ray_reid.eval.rank import JUNK_PID, _as_numpy_2d

log = logging.getLogger(__name__)

#: Cell size (height, width) of one crop in a rank list; re-ID crops are 2:1.
_THUMB = (128, 64)
_RIGHT, _WRONG, _QUERY = (0, 170, 0), (210, 0, 0), (90, 90, 90)


def _save(fig: Figure, out_png: str | os.PathLike) -> Path:
    out = Path(out_png)
    if out.suffix.lower() != ".png":
        raise ValueError(f"out_png must end in .png, got {str(out)!r}")
    FigureCanvasAgg(fig)
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
    log.info("wrote %s", out)
    return out


def _column(rows: Sequence[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values) where ``key`` is present and finite."""
    xs, ys = [], []
    for i, row in enumerate(rows):
        value = row.get(key)
        if value is None:
            continue
        value = float(value)
        if math.isfinite(value):
            xs.append(float(row.get("epoch", i)))
            ys.append(value)
    return np.asarray(xs), np.asarray(ys)


_PANELS = (
    ("accuracy", ("mAP", "rank1")),
    ("loss", ("loss",)),
    ("clusters", ("n_clusters",)),
    ("clustering quality", ("ari", "nmi")),
)


def plot_training_curves(rows: list[dict], out_png: str | os.PathLike) -> Path:
    """One figure, four panels (mAP & rank-1, loss, number of clusters, ARI/NMI) over epochs.

    ``rows`` are per-epoch metric dicts as ``ray.train.report`` receives them; ``epoch``
    is the x axis (the row index when absent). Keys may be missing or NaN in some rows
    (evaluation runs only every few epochs): those points are skipped, and a panel with
    no data at all says so instead of failing.
    """
    if not isinstance(rows, Sequence) or not all(isinstance(r, dict) for r in rows):
        raise ValueError("rows must be a list of dicts, one per epoch")
    fig = Figure(figsize=(12, 8))
    axes = fig.subplots(2, 2).ravel()
    for ax, (title, keys) in zip(axes, _PANELS):
        plotted = False
        for key in keys:
            x, y = _column(rows, key)
            if len(x):
                ax.plot(x, y, marker="o", markersize=3, label=key)
                plotted = True
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if plotted:
            ax.legend(loc="best")
        else:
            ax.text(0.5, 0.5, f"no {'/'.join(keys)} recorded", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return _save(fig, out_png)


def _thumb(path: str, colour: tuple[int, int, int]) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img = img.convert("RGB").resize((_THUMB[1], _THUMB[0]))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"rank list image not found: {path}") from exc
    return np.asarray(ImageOps.expand(img, border=4, fill=colour))


def _records(name: str, records: Sequence[Any]) -> tuple[list[str], np.ndarray, np.ndarray]:
    try:
        paths = [str(r[0]) for r in records]
        pids = np.asarray([int(r[1]) for r in records], dtype=np.int64)
        cams = np.asarray([int(r[2]) for r in records], dtype=np.int64)
    except (TypeError, IndexError, ValueError) as exc:
        raise ValueError(f"{name} must be (path, pid, camid) records: {exc}") from exc
    return paths, pids, cams


def plot_rank_list(
    query_records: Sequence[Any],
    gallery_records: Sequence[Any],
    distmat: Any,
    out_png: str | os.PathLike,
    *,
    n_queries: int = 8,
    topk: int = 10,
    seed: int = 0,
) -> Path:
    """Rows of a query crop followed by its ``topk`` nearest gallery crops.

    The gallery is filtered as :func:`~ray_reid.eval.rank.evaluate_rank` filters it (same
    pid and camera removed, junk dropped), so what is shown is what was scored; a green
    border marks a right match, red a wrong one. ``n_queries`` queries are drawn at random
    (``seed``) among those with a valid match in the gallery.
    """
    q_paths, q_pids, q_cams = _records("query_records", query_records)
    g_paths, g_pids, g_cams = _records("gallery_records", gallery_records)
    dist = _as_numpy_2d(distmat)
    if dist.shape != (len(q_paths), len(g_paths)):
        raise ValueError(
            f"distmat has shape {dist.shape} but there are {len(q_paths)} query and {len(g_paths)} gallery records"
        )
    for name, value in (("n_queries", n_queries), ("topk", topk)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")

    keep = ~((q_pids[:, None] == g_pids[None, :]) & (q_cams[:, None] == g_cams[None, :]))
    keep &= (g_pids != JUNK_PID)[None, :]
    has_match = ((q_pids[:, None] == g_pids[None, :]) & keep).any(axis=1)
    candidates = np.flatnonzero(has_match)
    if len(candidates) == 0:
        raise ValueError("no query has a valid match in the gallery: nothing to show")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(candidates, size=min(n_queries, len(candidates)), replace=False))

    fig = Figure(figsize=(1.1 * (topk + 1), 2.3 * len(chosen)))
    axes = np.asarray(fig.subplots(len(chosen), topk + 1, squeeze=False))
    for row, qi in enumerate(chosen):
        kept = np.flatnonzero(keep[qi])
        order = kept[np.argsort(dist[qi, kept], kind="stable")][:topk]
        cells = [(_thumb(q_paths[qi], _QUERY), f"query\npid {q_pids[qi]} c{q_cams[qi]}")]
        for rank, gi in enumerate(order, start=1):
            right = g_pids[gi] == q_pids[qi]
            cells.append((_thumb(g_paths[gi], _RIGHT if right else _WRONG), f"{rank}: pid {g_pids[gi]}\n{dist[qi, gi]:.3f}"))
        _draw_row(axes[row], cells)
    fig.tight_layout()
    return _save(fig, out_png)


def _label_colours(labels: np.ndarray) -> np.ndarray:
    """RGBA per point: a categorical colour per label, outliers (-1) light grey."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    _, idx = np.unique(labels, return_inverse=True)
    colours = cmap(idx.ravel() % cmap.N)
    colours[labels == -1] = (0.75, 0.75, 0.75, 0.6)
    return colours


def plot_embedding(
    features: Any,
    true_ids: Any,
    pseudo_labels: Any,
    out_png: str | os.PathLike,
    *,
    max_points: int = 2000,
    seed: int = 0,
) -> Path:
    """2-D t-SNE of the embeddings, side by side coloured by true id and by pseudo-label.

    Shows at a glance whether clusters are merged identities (one pseudo colour over
    several true colours) or split ones. At most ``max_points`` points (a seeded random
    subset) go through t-SNE, which is quadratic-ish and slow beyond a few thousand.
    Outliers (pseudo-label -1) are grey.
    """
    from sklearn.manifold import TSNE  # local: only plotting needs it

    if type(features).__module__.startswith("torch"):
        features = features.detach().float().cpu().numpy()
    feats = np.asarray(features, dtype=np.float64)
    true_ids = np.asarray(true_ids)
    pseudo = np.asarray(pseudo_labels)
    if feats.ndim != 2:
        raise ValueError(f"features must be 2-D (num_images, dim), got shape {feats.shape}")
    if true_ids.shape != (len(feats),) or pseudo.shape != (len(feats),):
        raise ValueError(
            f"true_ids {true_ids.shape} and pseudo_labels {pseudo.shape} must both be 1-D of length {len(feats)}"
        )
    if len(feats) < 5:
        raise ValueError(f"t-SNE needs at least 5 points, got {len(feats)}")
    if isinstance(max_points, bool) or not isinstance(max_points, (int, np.integer)) or max_points < 5:
        raise ValueError(f"max_points must be an integer >= 5, got {max_points!r}")

    rng = np.random.default_rng(seed)
    if len(feats) > max_points:
        pick = np.sort(rng.choice(len(feats), size=max_points, replace=False))
        feats, true_ids, pseudo = feats[pick], true_ids[pick], pseudo[pick]
    perplexity = float(min(30.0, (len(feats) - 1) / 3))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(feats)

    fig = Figure(figsize=(13, 6))
    ax_true, ax_pseudo = fig.subplots(1, 2)
    n_out = int((pseudo == -1).sum())
    for ax, labels, title in (
        (ax_true, true_ids, f"true ids ({len(np.unique(true_ids))})"),
        (ax_pseudo, pseudo, f"pseudo-labels ({len(np.unique(pseudo[pseudo != -1]))} clusters, {n_out} outliers)"),
    ):
        ax.scatter(xy[:, 0], xy[:, 1], c=_label_colours(labels), s=8, linewidths=0)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return _save(fig, out_png)


def plot_sweep_scatter(x: Sequence[float], y: Sequence[float], score: Sequence[float | None],
                       out_png: str | os.PathLike, *, x_label: str, y_label: str) -> Path:
    """Best mAP of every trial of a sweep over two searched values (x on a log axis when all positive)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    score = np.array([np.nan if s is None else s for s in score], dtype=float)
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    ok = np.isfinite(score)
    if ok.any():
        points = ax.scatter(x[ok], y[ok], c=100 * score[ok], cmap="viridis", s=80, edgecolors="black")
        fig.colorbar(points, ax=ax, label="best mAP (%)")
    if (~ok).any():
        ax.scatter(x[~ok], y[~ok], marker="x", color="red", s=60, label="no mAP (errored)")
        ax.legend(loc="best")
    if len(x) and (x > 0).all():
        ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(f"{len(x)} trials: best mAP")
    ax.grid(True, alpha=0.3)
    return _save(fig, out_png)


def plot_sweep_curves(curves: Sequence[tuple[str, Sequence[tuple[int, float]], bool]],
                      out_png: str | os.PathLike) -> Path:
    """mAP over epochs of every trial: ``(label, [(epoch, mAP), ...], stopped_early)``, stopped ones dashed."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    for label, points, stopped in curves:
        if points:
            ax.plot([e + 1 for e, _ in points], [100 * v for _, v in points], "--" if stopped else "-", marker="o",
                    label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mAP (%)")
    ax.set_title("learning curves (dashed: stopped early)")
    ax.grid(True, alpha=0.3)
    if len(curves) <= 12 and any(points for _, points, _ in curves):
        ax.legend(fontsize=7, loc="best")
    return _save(fig, out_png)


def _draw_row(axes_row, cells: list[tuple[np.ndarray, str]]) -> None:
    """One rank-list row: each cell's thumbnail and caption, spare axes left blank."""
    for col, ax in enumerate(axes_row):
        ax.set_axis_off()
        if col < len(cells):
            image, label = cells[col]
            ax.imshow(image)
            ax.set_title(label, fontsize=7)


def _thumb_bytes(data: bytes, colour: tuple[int, int, int]) -> np.ndarray:
    import io

    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("RGB").resize((_THUMB[1], _THUMB[0]))
    return np.asarray(ImageOps.expand(img, border=4, fill=colour))


def plot_search_results(
    query_paths: Sequence[str],
    gallery_paths: Sequence[str],
    indices: Any,
    distances: Any,
    out_png: str | os.PathLike,
    *,
    read: Any,
    n_queries: int = 8,
    topk: int = 10,
    query_pids: Sequence[int] | None = None,
    gallery_pids: Sequence[int] | None = None,
) -> Path:
    """Rows of a query crop followed by its ``topk`` hits, as ``search`` returned them.

    ``read(path) -> bytes`` fetches a crop (local or S3). When both sides carry identities
    (``*_pids``, -1 = unknown), a green border marks a right hit and red a wrong one;
    otherwise borders stay neutral and each hit is labelled with its distance only.
    The first ``n_queries`` queries are shown.
    """
    idx = np.asarray(indices)
    dist = np.asarray(distances)
    if idx.shape != dist.shape or idx.ndim != 2 or idx.shape[0] != len(query_paths):
        raise ValueError(f"indices {idx.shape} and distances {dist.shape} must both be "
                         f"({len(query_paths)} queries, k)")
    if isinstance(n_queries, bool) or not isinstance(n_queries, (int, np.integer)) or n_queries < 1:
        raise ValueError(f"n_queries must be a positive integer, got {n_queries!r}")
    labelled = query_pids is not None and gallery_pids is not None
    rows = min(n_queries, len(query_paths))
    cols = min(topk, idx.shape[1]) + 1
    fig = Figure(figsize=(1.1 * cols, 2.3 * rows))
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False))
    for row in range(rows):
        qpid = int(query_pids[row]) if labelled else -1
        cells = [(_thumb_bytes(read(query_paths[row]), _QUERY), f"query\n{os.path.basename(query_paths[row])[:14]}")]
        for rank, (gi, d) in enumerate(zip(idx[row, :cols - 1], dist[row, :cols - 1]), start=1):
            if gi < 0:
                break
            gpid = int(gallery_pids[gi]) if labelled else -1
            colour = _QUERY if qpid < 0 or gpid < 0 else (_RIGHT if gpid == qpid else _WRONG)
            cells.append((_thumb_bytes(read(gallery_paths[gi]), colour), f"{rank}: {d:.3f}"))
        _draw_row(axes[row], cells)
    fig.tight_layout()
    return _save(fig, out_png)
