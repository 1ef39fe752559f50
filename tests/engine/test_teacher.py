"""Offline teacher → student: checkpoint round trip, early refusal of a mismatched teacher, student epochs."""

import pytest
import torch

from ray_reid.config import config_from_dict
from ray_reid.engine.context import LocalContext
from ray_reid.engine.loop import model_config, train_worker
from ray_reid.engine.teacher import TeacherMismatchError, check_teacher, load_teacher
from ray_reid.models import ModelConfig


def cfg_for(root, storage, name, **extra):
    overrides = {
        "data.dataset": "synthetic", "data.root": str(root), "data.height": 32, "data.width": 16,
        "model.backbone": "resnet18", "model.views": "global+parts", "cluster.merge_percent": 0.5,
        "optim.epochs": 1, "optim.iters": 2, "optim.p": 4, "optim.k": 2, "run.num_workers": 0,
        "run.storage_path": str(storage), "run.name": name, "run.eval_every": 1,
    }
    overrides.update(extra)
    return config_from_dict({}, overrides)


@pytest.fixture(scope="module")
def teacher_run(tiny_synthetic_root, tmp_path_factory):
    storage = tmp_path_factory.mktemp("teacher")
    cfg = cfg_for(tiny_synthetic_root, storage, "teacher")
    train_worker(cfg, LocalContext(cfg.cluster, storage / "teacher"))
    return storage / "teacher", cfg


def test_teacher_checkpoint_round_trips(teacher_run):
    run_dir, cfg = teacher_run
    ckpt = sorted(run_dir.glob("checkpoint_*"))[-1]
    state = torch.load(ckpt / "state.pt", weights_only=True)["model"]
    teacher = load_teacher(str(run_dir), model_config(cfg))
    for key, value in teacher.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    x = torch.randn(3, 3, 32, 16)
    out = teacher(x)
    assert set(out) == {"global", "up", "down"}
    torch.testing.assert_close(out["global"].norm(dim=1), torch.ones(3))


@pytest.mark.parametrize("student, field", [
    (ModelConfig(backbone="resnet18", views="global"), "views"),
    (ModelConfig(backbone="resnet34", views="global+parts"), "backbone"),
])
def test_mismatched_teacher_is_refused_before_training(teacher_run, student, field):
    run_dir, _ = teacher_run
    with pytest.raises(TeacherMismatchError, match=f"teacher .* has {field}="):
        check_teacher(str(run_dir), student)


def test_missing_teacher_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        check_teacher(str(tmp_path / "nowhere"), ModelConfig(backbone="resnet18"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="teacher checkpoint not found: .*empty is neither a checkpoint"):
        check_teacher(str(tmp_path / "empty"), ModelConfig(backbone="resnet18"))


def test_train_job_refuses_mismatched_teacher_before_any_epoch(teacher_run, tiny_synthetic_root, tmp_path):
    from ray_reid import run

    run_dir, _ = teacher_run
    cfg = cfg_for(tiny_synthetic_root, tmp_path, "student", **{"model.views": "global", "run.teacher": str(run_dir)})
    with pytest.raises(TeacherMismatchError):
        run.train(cfg)
    assert not (tmp_path / "student").exists()


def test_student_first_epoch_learns_from_teacher_then_from_itself(teacher_run, tiny_synthetic_root, tmp_path):
    run_dir, _ = teacher_run
    cfg = cfg_for(tiny_synthetic_root, tmp_path, "student",
                  **{"optim.epochs": 2, "run.teacher": str(run_dir), "optim.distill_weight": 1.0})
    history = train_worker(cfg, LocalContext(cfg.cluster, tmp_path / "student"))
    assert [row["labels_from"] for row in history] == ["teacher", "model"]
    for row in history:
        assert row["distill_global"] >= 0 and "distill_up" in row and "distill_down" in row
