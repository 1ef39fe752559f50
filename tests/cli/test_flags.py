"""The shared config flags: every command spells --loader-workers and --amp the same way."""

import pytest

from ray_reid.cli import purify as purify_cli
from ray_reid.cli import train as train_cli
from ray_reid.cli import tune as tune_cli
from ray_reid.cli.flags import config_from_args


@pytest.mark.parametrize("cli", [train_cli, purify_cli, tune_cli])
def test_loader_workers_and_amp_reach_the_config(cli):
    args = cli.build_parser().parse_args(["--loader-workers", "3", "--amp"])
    cfg = config_from_args(args)
    assert cfg.data.loader_workers == 3 and cfg.optim.amp is True


def test_amp_defaults_to_the_yaml_and_no_amp_switches_it_off(tmp_path):
    yaml_on = tmp_path / "on.yaml"
    yaml_on.write_text("optim: {amp: true}\n")
    parser = train_cli.build_parser()
    assert config_from_args(parser.parse_args(["--config", str(yaml_on)])).optim.amp is True
    assert config_from_args(parser.parse_args(["--config", str(yaml_on), "--no-amp"])).optim.amp is False
    assert config_from_args(parser.parse_args([])).optim.amp is False


def test_negative_loader_workers_is_refused_naming_the_key():
    args = train_cli.build_parser().parse_args(["--loader-workers", "-1"])
    with pytest.raises(SystemExit, match="data.loader_workers=-1"):
        config_from_args(args)


def test_loader_workers_must_be_an_integer():
    with pytest.raises(SystemExit):
        train_cli.build_parser().parse_args(["--loader-workers", "two"])


@pytest.mark.parametrize("value, want", [("4", (4, None)), ("2-8", (8, 2)), ("3-3", (3, 3)), ("0", (0, None))])
def test_workers_is_a_count_or_an_elastic_range(value, want):
    cfg = config_from_args(train_cli.build_parser().parse_args(["--workers", value, "--p", "8"]))
    assert (cfg.run.num_workers, cfg.run.min_workers) == want


@pytest.mark.parametrize("value, match", [("two", "expected a count"), ("8-2", "1 <= MIN <= MAX"),
                                          ("0-4", "1 <= MIN <= MAX"), ("2-", "expected a count")])
def test_bad_worker_ranges_are_refused_naming_the_flag(value, match):
    with pytest.raises(SystemExit, match=match):
        config_from_args(train_cli.build_parser().parse_args(["--workers", value]))


def test_shared_storage_flag_reaches_the_config():
    parser = train_cli.build_parser()
    assert config_from_args(parser.parse_args(["--shared-storage"])).run.shared_storage is True
    assert config_from_args(parser.parse_args([])).run.shared_storage is False
@pytest.mark.parametrize("cli", [train_cli, purify_cli, tune_cli])
def test_placement_flags_reach_the_config(cli):
    cfg = config_from_args(cli.build_parser().parse_args(["--clusterer-resource", "--placement-timeout", "90"]))
    assert cfg.run.clusterer_resource is True and cfg.run.placement_timeout_s == 90.0
    default = config_from_args(cli.build_parser().parse_args([]))
    assert default.run.clusterer_resource is False and default.run.placement_timeout_s == 1800.0


def test_a_non_positive_placement_timeout_is_refused_naming_the_key():
    args = train_cli.build_parser().parse_args(["--placement-timeout", "0"])
    with pytest.raises(SystemExit, match="run.placement_timeout_s=0"):
        config_from_args(args)


def test_tune_takes_the_cluster_size_and_an_s3_out():
    _, _, sweep, args = tune_cli.parse(["--max-cluster-gpus", "8", "--out", "s3://b/reports/lam", "--workers", "1"])
    assert sweep.max_cluster_gpus == 8.0 and args.out == "s3://b/reports/lam"
    with pytest.raises(SystemExit, match="--max-cluster-gpus -1"):
        tune_cli.parse(["--max-cluster-gpus", "-1"])


@pytest.mark.parametrize("workers, match", [("2-4", r"run.min_workers=2 \(--workers 2-4\) is elastic"),
                                            ("0", "run.num_workers=0 trains in-process")])
def test_tune_refuses_trials_it_cannot_run_before_ray_starts(workers, match):
    with pytest.raises(SystemExit, match=match):
        tune_cli.parse(["--workers", workers])
