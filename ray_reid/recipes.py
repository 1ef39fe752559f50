"""The published training recipes, by name: cluster-contrast, Learning to Purification, hierarchical SSE.

Each recipe is a YAML config under ``jobs/configs/`` whose every value carries, in a comment, the
file and line (or README command) of the public code it was taken from; a test holds them against
a separate table of the published hyper-parameters. Loading one by name saves a researcher from
assembling ~20 flags and from the drift between copied settings.

>>> cfg = load_recipe("cluster_contrast_market1501", {"data.root": "/data/market1501"})
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray_reid.config import TrainConfig, load_config

#: Folder of the recipe YAML files (a checkout's jobs/configs); RAY_REID_RECIPES points elsewhere.
RECIPE_DIR = Path(__file__).resolve().parents[1] / "jobs" / "configs"

#: recipe name -> what it reproduces (the file is ``<name>.yaml``)
RECIPES: dict[str, str] = {
    "cluster_contrast_market1501": "cluster-contrast baseline (DBSCAN + cluster memory), Market-1501",
    "cluster_contrast_dukemtmc": "cluster-contrast baseline, DukeMTMC-reID",
    "cluster_contrast_msmt17": "cluster-contrast baseline, MSMT17",
    "purification_teacher_market1501": "Learning to Purification teacher (global + up + down views), Market-1501",
    "purification_student_market1501": "Learning to Purification student (distils from the teacher), Market-1501",
    "purification_teacher_msmt17": "Learning to Purification teacher, MSMT17",
    "purification_student_msmt17": "Learning to Purification student, MSMT17",
    "hc_sse_market1501": "hierarchical clustering + SSE on sphere features (Clustering Matters / HCT), Market-1501",
    "hc_sse_dukemtmc": "hierarchical clustering + SSE, DukeMTMC-reID",
    "hc_sse_msmt17": "hierarchical clustering + SSE, MSMT17",
}

#: dataset -> (teacher recipe, student recipe) of Learning to Purification (published for these two only)
PURIFICATION: dict[str, tuple[str, str]] = {
    ds: (f"purification_teacher_{ds}", f"purification_student_{ds}") for ds in ("market1501", "msmt17")
}


def recipe_dir() -> Path:
    return Path(os.environ.get("RAY_REID_RECIPES", RECIPE_DIR)).expanduser()


def recipe_path(name: str) -> Path:
    """The YAML file of recipe ``name``; ValueError listing the valid names for an unknown one."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; valid recipes: {', '.join(sorted(RECIPES))}")
    path = recipe_dir() / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"recipe {name!r} should be at {path}, which does not exist "
                                "(set RAY_REID_RECIPES to the folder holding jobs/configs)")
    return path


def load_recipe(name: str, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Recipe ``name`` as a validated config, with ``{"section.key": value}`` overrides on top.

    Recipes for real datasets need ``data.root`` (the dataset folder or ``s3://`` prefix).
    """
    return load_config(recipe_path(name), overrides)


def purification_recipes(dataset: str) -> tuple[str, str]:
    """(teacher, student) recipe names of Learning to Purification for ``dataset``."""
    try:
        return PURIFICATION[dataset]
    except KeyError:
        raise ValueError(f"Learning to Purification was published for {', '.join(sorted(PURIFICATION))}, "
                         f"not {dataset!r}: pass one of those to --recipe") from None
