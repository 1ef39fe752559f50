import numpy as np
import pytest
from scipy.spatial.distance import cdist

from ray_reid.clustering._backend import cupy_available
from ray_reid.clustering.fusion import PURIFICATION_WEIGHTS, fuse_views, fused_sq_distances


def _views(n=30, dims=(16, 8, 8), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, d)) for d in dims]


def test_fused_distances_are_the_weighted_sum_of_view_distances():
    views = _views()
    unit = [v / np.linalg.norm(v, axis=1, keepdims=True) for v in views]
    want = sum(w * cdist(u, u, "sqeuclidean") for u, w in zip(unit, PURIFICATION_WEIGHTS))
    fused = fuse_views(views, PURIFICATION_WEIGHTS)
    assert fused.shape == (30, 32)
    np.testing.assert_allclose(cdist(fused, fused, "sqeuclidean"), want, atol=1e-12)
    np.testing.assert_allclose(fused_sq_distances(views, PURIFICATION_WEIGHTS), want, atol=1e-12)
    # the fused vector of unit views has squared norm Σw (= 1 for the Purification weights)
    np.testing.assert_allclose((fused**2).sum(1), 1.0)


def test_without_normalisation_and_zero_weight_views_dropped():
    views = _views(seed=1)
    weights = (2.0, 0.0, 0.5)
    want = 2.0 * cdist(views[0], views[0], "sqeuclidean") + 0.5 * cdist(views[2], views[2], "sqeuclidean")
    fused = fuse_views(views, weights, normalize=False)
    assert fused.shape == (30, 24)
    np.testing.assert_allclose(cdist(fused, fused, "sqeuclidean"), want, atol=1e-10)
    np.testing.assert_allclose(fused_sq_distances(views, weights, normalize=False), want, atol=1e-10)


@pytest.mark.parametrize(
    ("views", "weights", "match"),
    [
        ([], [], "at least one"),
        (_views(), (0.5, 0.5), "3 views but 2 weights"),
        ([np.ones((4, 2)), np.ones((5, 2))], (1, 1), "view 1 has 5 rows but view 0 has 4"),
        ([np.ones(4)], (1,), r"view 0 must be 2-D"),
        (_views(), (0.5, -0.1, 0.6), "weight 1 must be a finite real number >= 0"),
        (_views(), (0.5, float("nan"), 0.6), "weight 1"),
        (_views(), (0, 0, 0), "must not all be zero"),
        ([np.zeros((3, 2))], (1,), "view 0 has all-zero rows"),
        ([np.full((3, 2), np.nan)], (1,), "view 0 contains NaN"),
    ],
)
def test_bad_input_raises(views, weights, match):
    with pytest.raises(ValueError, match=match):
        fuse_views(views, weights)
    with pytest.raises(ValueError, match=match):
        fused_sq_distances(views, weights)


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_available(), reason="needs a CUDA device with CuPy")
def test_cupy_views_stay_on_device_and_match():
    import cupy

    views = _views()
    fused = fuse_views([cupy.asarray(v) for v in views], PURIFICATION_WEIGHTS)
    assert isinstance(fused, cupy.ndarray)
    np.testing.assert_allclose(fused.get(), fuse_views(views, PURIFICATION_WEIGHTS), atol=1e-12)
    with pytest.raises(ValueError, match="use one device"):
        fuse_views([cupy.asarray(views[0]), views[1]], (1, 1))
