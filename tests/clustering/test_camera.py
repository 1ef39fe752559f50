"""Camera-centred clustering input: a shift every image of a camera shares is removed, people stay apart."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from ray_reid.clustering.camera import centre_by_camera
from ray_reid.clustering.hierarchical import HierarchicalSSE


def people_seen_by_cameras(n_people=6, n_cams=3, per_cam=3, dim=32, camera_strength=3.0, seed=0):
    """Each person appears in every camera; each camera adds one strong shift to all of its images."""
    rng = np.random.default_rng(seed)
    person = rng.standard_normal((n_people, dim))
    camera = camera_strength * rng.standard_normal((n_cams, dim))
    pids, camids, rows = [], [], []
    for p in range(n_people):
        for c in range(n_cams):
            for _ in range(per_cam):
                rows.append(person[p] + camera[c] + 0.1 * rng.standard_normal(dim))
                pids.append(p)
                camids.append(c)
    return np.array(rows, dtype=np.float32), np.array(pids), np.array(camids)


def test_centring_turns_camera_clusters_into_person_clusters():
    x, pids, camids = people_seen_by_cameras()
    fit = lambda feats: HierarchicalSSE(6, linkage="average", regularizer="none", device="cpu").fit_predict(feats)
    by_camera = fit(x)
    # the camera shift dominates the raw distances: every cluster holds one camera's images
    assert all(len(np.unique(camids[by_camera == k])) == 1 for k in np.unique(by_camera))
    assert adjusted_rand_score(pids, by_camera) < 0.1
    by_person = fit(centre_by_camera(x, camids))
    assert adjusted_rand_score(pids, by_person) == 1.0


def test_each_cameras_mean_is_removed_and_rows_are_unit_first():
    x, _, camids = people_seen_by_cameras(seed=1)
    out = centre_by_camera(x, camids)
    assert out.dtype == np.float32
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    for c in np.unique(camids):
        np.testing.assert_allclose(out[camids == c].mean(axis=0), 0.0, atol=1e-6)
        np.testing.assert_allclose(out[camids == c] + unit[camids == c].mean(axis=0), unit[camids == c], atol=1e-6)
    raw = centre_by_camera(x.astype(np.float16), camids, unit=False)  # fp16 shards are accepted
    np.testing.assert_allclose(raw[camids == 0].mean(axis=0), 0.0, atol=1e-3)


def test_bad_input_is_refused_by_name():
    x, _, camids = people_seen_by_cameras()
    with pytest.raises(ValueError, match="one entry per feature row"):
        centre_by_camera(x, camids[:-1])
    lonely = camids.copy()
    lonely[0] = 99
    with pytest.raises(ValueError, match=r"camera\(s\) \[99\] hold a single image"):
        centre_by_camera(x, lonely)
    with pytest.raises(ValueError, match="all-zero"):
        centre_by_camera(np.zeros_like(x), camids)
