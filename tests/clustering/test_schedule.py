import pytest

from ray_reid.clustering.schedule import fixed_target, hct_target_clusters


def test_hct_targets_shrink_linearly_and_clip_at_one():
    n = 12936
    targets = [hct_target_clusters(n, 0.05, s) for s in range(25)]
    assert targets[0] == round(n * 0.95) == 12289
    assert targets[1] == round(n * 0.90)
    assert all(a > b for a, b in zip(targets[:19], targets[1:19]))
    assert targets[19] == 1  # 1 - 0.05 * 20 == 0 -> clipped
    assert targets[24] == 1
    assert hct_target_clusters(10, 1.0, 0) == 1
    assert hct_target_clusters(1, 0.5, 0) == 1


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0, 0.05, 0), "n_samples must be an integer >= 1"),
        ((10.0, 0.05, 0), "n_samples must be an integer >= 1"),
        ((10, 0.0, 0), r"merge_percent must be a real number in \(0, 1\]"),
        ((10, 1.5, 0), r"merge_percent must be a real number in \(0, 1\]"),
        ((10, float("nan"), 0), "merge_percent"),
        ((10, 0.05, -1), "step must be an integer >= 0"),
        ((10, 0.05, True), "step must be an integer >= 0"),
    ],
)
def test_hct_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        hct_target_clusters(*args)


def test_fixed_target_caps_at_n_and_validates():
    schedule = fixed_target(751)
    assert schedule(12936, 0) == 751 == schedule(12936, 40)
    assert schedule(500, 3) == 500
    with pytest.raises(ValueError, match="n_clusters must be an integer >= 1"):
        fixed_target(0)
    with pytest.raises(ValueError, match="step must be an integer >= 0"):
        schedule(100, -2)
