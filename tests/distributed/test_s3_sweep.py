"""A sweep whose Tune state and outputs live on S3 (a real moto server on loopback), restored from there.

The sweep folder is ``s3://…/sweeps/<name>``: Tune's experiment state (through a pyarrow S3 filesystem
pointed at ``run.s3_endpoint``), each trial's Train run, and the table, best config and pictures.
Nothing lands in the driver's working directory, which on a cluster is the job's temporary folder.
"""

from __future__ import annotations

import pytest
from s3_server import keys_under

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def test_sweep_state_and_outputs_on_s3_and_restore_from_there(ray_session, s3, tiny_synthetic_root, tmp_path,
                                                              monkeypatch):
    from ray import tune

    from ray_reid.config import config_from_dict, load_config
    from ray_reid.distributed.tune import run_sweep
    from ray_reid.storage import pyarrow_filesystem
    from ray_reid.tuning.space import SweepConfig, parse_search_space

    monkeypatch.chdir(tmp_path)  # a stray local write would land here: checked below
    base = config_from_dict({}, {
        "data.dataset": "synthetic", "data.root": str(tiny_synthetic_root), "data.height": 32, "data.width": 16,
        "model.backbone": "resnet18", "cluster.merge_percent": 0.5, "optim.epochs": 1, "optim.iters": 1,
        "optim.p": 4, "optim.k": 2, "run.num_workers": 1, "run.cpus_per_worker": 1, "run.eval_every": 1,
        "run.s3_endpoint": s3.endpoint})
    space = parse_search_space({"cluster.lam": {"type": "grid", "values": [0.1, 1.0]}})
    sweep = SweepConfig(name="s3sweep", storage_path=f"s3://{s3.bucket}/sweeps", search="grid", scheduler="fifo",
                        max_concurrent_trials=1)
    outcome = run_sweep(base, space, sweep)
    assert outcome.experiment_path == f"s3://{s3.bucket}/sweeps/s3sweep"
    assert sorted(r["cluster.lam"] for r in outcome.rows) == [0.1, 1.0]
    assert all(r["status"] == "TERMINATED" and r["epochs_run"] == 1 for r in outcome.rows), outcome.rows

    prefix = "sweeps/s3sweep/"
    objects = keys_under(s3.client, s3.bucket, prefix)
    names = {key[len(prefix):] for key in objects}
    outputs = {"table": "trials.csv", "best_config": "best_config.yaml", "scatter": "map_lambda_mu.png",
               "curves": "learning_curves.png"}
    assert outcome.files == {kind: f"s3://{s3.bucket}/{prefix}{name}" for kind, name in outputs.items()}
    assert {*outputs.values(), "base_config.yaml", "tuner.pkl"} <= names, sorted(names)
    assert any(n.startswith("experiment_state") for n in names), sorted(names)
    png = s3.client.get_object(Bucket=s3.bucket, Key=f"{prefix}map_lambda_mu.png")["Body"].read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    for row in outcome.rows:  # each trial's Train run (checkpoint included) is in the bucket
        trial = row["path"].rstrip("/").split("/")[-1]
        assert any(k.startswith(f"{prefix}{trial}/train/checkpoint_") and k.endswith("/state.pt") for k in objects)
    assert not (tmp_path / "runs").exists() and not any(tmp_path.iterdir())  # nothing written locally

    # Tune itself can restore the sweep from the bucket
    fs, path = pyarrow_filesystem(f"s3://{s3.bucket}/sweeps/s3sweep", s3.endpoint)
    assert tune.Tuner.can_restore(path, storage_filesystem=fs)
    results = {k: v["ETag"] for k, v in objects.items() if k.endswith("/result.json")}
    assert len(results) == 2

    # ...and the same command restores it: finished trials are not trained again; --out s3:// takes the outputs
    again = run_sweep(base, space, sweep, out_dir=f"s3://{s3.bucket}/report")
    assert {r["trial_id"] for r in again.rows} == {r["trial_id"] for r in outcome.rows}
    after = keys_under(s3.client, s3.bucket, prefix)
    assert {k: v["ETag"] for k, v in after.items() if k.endswith("/result.json")} == results
    report = keys_under(s3.client, s3.bucket, "report/")
    assert {"report/trials.csv", "report/best_config.yaml", "report/map_lambda_mu.png",
            "report/learning_curves.png"} <= set(report)
    best = s3.client.get_object(Bucket=s3.bucket, Key="report/best_config.yaml")["Body"].read().decode()
    (tmp_path / "best.yaml").write_text(best)
    assert load_config(tmp_path / "best.yaml").cluster.lam == pytest.approx(again.best["cluster.lam"])
