"""A real Ray Train run: 2 gloo workers, the named ClusteringActor, checkpoints, resume."""

import json

import pytest

from ray_reid.config import config_from_dict


@pytest.fixture
def two_worker_cfg(tiny_synthetic_root, tmp_path):
    def make(**extra):
        overrides = {
            "data.dataset": "synthetic", "data.root": str(tiny_synthetic_root), "data.height": 32,
            "data.width": 16, "model.backbone": "resnet18", "cluster.merge_percent": 0.5, "optim.epochs": 2,
            "optim.iters": 2, "optim.p": 4, "optim.k": 2, "run.num_workers": 2, "run.cpus_per_worker": 1,
            "run.storage_path": str(tmp_path / "runs"), "run.name": "ddp", "run.eval_every": 1,
        }
        overrides.update(extra)
        return config_from_dict({}, overrides)

    return make


def test_two_worker_gloo_run_with_actor_and_resume(ray_session, two_worker_cfg, tmp_path):
    from ray_reid.distributed.trainer import fit

    outcome = fit(two_worker_cfg())
    assert [row["epoch"] for row in outcome.history] == [0, 1]
    assert all(row["n_clusters"] >= 1 for row in outcome.history)
    assert 0.0 <= outcome.history[-1]["mAP"] <= 1.0
    run_dir = tmp_path / "runs" / "ddp"
    assert len([p for p in run_dir.glob("checkpoint_*") if (p / "state.pt").is_file()]) == 2

    # rerun with the same name and one more epoch: resumes at epoch 2, epochs 0-1 are not redone
    resumed = fit(two_worker_cfg(**{"optim.epochs": 3}))
    assert [row["epoch"] for row in resumed.history] == [0, 1, 2]
    assert resumed.history[:2] == outcome.history
    latest = sorted(p for p in run_dir.glob("checkpoint_*") if p.is_dir())[-1]
    assert json.loads((latest / "meta.json").read_text())["epoch"] == 2


def test_actor_goes_to_cpu_without_gpus_or_clusterer_resource(ray_session):
    from ray_reid.distributed.placement import clusterer_placement, live_nodes

    placement = clusterer_placement(requested=False, nodes=live_nodes(), declared={}, num_workers=2,
                                    gpus_per_worker=0, cpus_per_worker=1)
    options = placement.options
    assert "clusterer" not in options.get("resources", {}) and "num_gpus" not in options
    assert placement.fallback and placement.waits_for is None and "CPU" in placement.reason


def test_final_outcome_reads_the_newest_complete_checkpoint_not_the_last_registered(tmp_path):
    """A rerun's controller may have registered only an older checkpoint than the workers finished."""
    from ray_reid.distributed.trainer import final_outcome
    from ray_reid.engine.checkpoint import save_checkpoint

    run = tmp_path / "run"
    rows = [{"epoch": e, "mAP": 0.1 * (e + 1)} for e in range(3)]
    for epoch in range(3):
        save_checkpoint(run / f"checkpoint_00000{epoch}", {"w": epoch}, {"epoch": epoch}, rows[:epoch + 1])
    (run / "checkpoint_000003").mkdir()  # a later folder cut short: no state.pt
    (run / "checkpoint_000003" / "meta.json").write_text(json.dumps({"epoch": 3}))

    outcome = final_outcome(str(run))
    assert [row["epoch"] for row in outcome.history] == [0, 1, 2]
    assert outcome.checkpoint_path == str(run / "checkpoint_000002")
    assert final_outcome(str(tmp_path / "empty")).history == []
