import pytest

from ray_reid.config import TrainConfig, config_from_dict, load_config, save_config


def test_defaults_validate_and_round_trip_through_yaml(tmp_path):
    cfg = config_from_dict({"cluster": {"lam": 0.25}}, {"optim.epochs": "3", "run.num_workers": 2})
    assert cfg.cluster.lam == 0.25 and cfg.optim.epochs == 3 and isinstance(cfg.optim.epochs, int)
    path = save_config(cfg, tmp_path / "c.yaml")
    assert load_config(path) == cfg


def test_embedded_job_config_loads():
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[1] / "jobs" / "configs" / "synthetic.yaml")
    assert cfg.data.dataset == "synthetic" and cfg.data.root is None
    assert cfg.model.backbone == "resnet18"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"cluster.lamda": 1}, r"unknown config key cluster\.lamda; valid keys of 'cluster': method, lam"),
        ({"cluster.lam": -1}, r"cluster\.lam=-1\.0 is invalid"),
        ({"cluster.method": "kmeans"}, r"cluster\.method='kmeans'.*hc_sse"),
        ({"optim.p": "x"}, r"optim\.p='x' is invalid: expected int"),
        ({"optim.epochs": 0}, r"optim\.epochs=0"),
        ({"run.num_workers": 3, "optim.p": 2}, r"optim\.p=2.*at least run\.num_workers=3"),
        ({"run.num_workers": 4, "run.min_workers": 5}, r"run\.min_workers=5.*\[1, run\.num_workers=4\]"),
        ({"run.min_workers": 0}, r"run\.min_workers=0"),
        ({"nosuch.key": 1}, r"section\.key"),
        ({"data.dataset": "market1501"}, r"data\.root is required"),
        ({"model.views": "all"}, r"model\.views='all'.*global\+parts"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        config_from_dict({}, overrides)


def test_bad_yaml_file_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("cluster:\n  lam: [1,\n")
    with pytest.raises(ValueError, match="bad.yaml is not valid YAML"):
        load_config(path)
    path.write_text("cluster:\n  nope: 1\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: unknown config key cluster\.nope"):
        load_config(path)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")


def test_config_is_frozen():
    cfg = TrainConfig()
    with pytest.raises(Exception):
        cfg.optim.lr = 1.0  # type: ignore[misc]


def test_absolute_paths_resolves_local_paths_and_keeps_uris(tmp_path, monkeypatch):
    from ray_reid.config import absolute_paths

    monkeypatch.chdir(tmp_path)
    cfg = config_from_dict({}, {"data.dataset": "market1501", "data.root": "data/m", "run.teacher": "runs/t",
                                "model.pretrained": "s3://b/w.pth", "run.storage_path": "runs"})
    out = config_from_dict(absolute_paths(cfg.to_dict()))
    assert out.data.root == str(tmp_path / "data" / "m") and out.run.teacher == str(tmp_path / "runs" / "t")
    assert out.run.storage_path == str(tmp_path / "runs") and out.model.pretrained == "s3://b/w.pth"
