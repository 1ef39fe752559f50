"""Sweep admission against the cluster it can scale to: a warning for today's smaller cluster, a refusal only
when one trial fits nowhere."""

from __future__ import annotations

import pytest

from ray_reid.config import config_from_dict
from ray_reid.tuning.space import SweepConfig, admit


def cfg(**extra):
    return config_from_dict({}, {"run.num_workers": 4, "run.cpus_per_worker": 4, "run.gpus_per_worker": 1, **extra})


def test_an_empty_worker_pool_is_admitted_with_a_warning_and_full_concurrency():
    most = {"CPU": 72.0, "GPU": 9.0}  # head (0) + 8 × (8 CPU, 1 GPU) + clusterer (8 CPU, 1 GPU)
    out = admit({"CPU": 8.0, "GPU": 1.0}, most, cfg(), SweepConfig(), source="the autoscaler config")
    assert out.fits_now == 0 and out.fits_most == 2 and out.max_concurrent == 2
    (warning,) = out.warnings
    assert "today's nodes hold 0 trial(s)" in warning and "scale to 2" in warning and "autoscaler config" in warning


def test_a_trial_larger_than_the_largest_cluster_is_refused_naming_need_and_source():
    with pytest.raises(ValueError, match=r"one trial needs CPU=17, GPU=4 .*at most CPU=72, GPU=3 \(stated\).*"
                                         r"--max-cluster-gpus"):
        admit({}, {"CPU": 72.0, "GPU": 3.0}, cfg(), SweepConfig(), source="stated")


def test_the_clusterer_slots_and_the_users_limit_bound_concurrency():
    most = {"CPU": 1000.0, "GPU": 100.0}
    assert admit(most, most, cfg(), SweepConfig(), source="s", clusterer_slots=3).max_concurrent == 3
    assert admit(most, most, cfg(), SweepConfig(), source="s").warnings == ()
    over = admit(most, most, cfg(), SweepConfig(max_concurrent_trials=50), source="s", clusterer_slots=3)
    assert over.max_concurrent == 50 and "--max-concurrent-trials 50 > 3" in over.warnings[0]


def test_the_actors_gpu_share_counts_against_the_gpus():
    out = admit({}, {"CPU": 100.0, "GPU": 4.0}, cfg(**{"run.num_workers": 1}), SweepConfig(), source="s",
                actor_gpus=0.5)
    assert out.fits_most == 2  # 1.5 GPU a trial
    with pytest.raises(ValueError, match="--max-cluster-gpus"):
        SweepConfig(max_cluster_gpus=-1)
