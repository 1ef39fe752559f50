"""Offline teacher → student: checkpoint round trip, early refusal of a mismatched teacher, student epochs."""

import pytest
import torch

from ray_reid.config import config_from_dict
from ray_reid.engine.context import LocalContext
from ray_reid.engine.loop import train_worker
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
    teacher = load_teacher(str(run_dir), cfg.model)
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


def _teacher_labels(run_dir, cfg):
    """What the teacher's own features cluster into, extracted and clustered here independently of the loop."""
    from ray_reid.data.resolve import load_configured_dataset
    from ray_reid.data.transforms import test_transform
    from ray_reid.engine.extract import extract_features
    from ray_reid.engine.pseudo_labels import assign_pseudo_labels

    teacher = load_teacher(str(run_dir), cfg.model)
    train = list(load_configured_dataset(cfg.data.dataset, cfg.data.root).train)
    feats = extract_features(teacher, train, test_transform(cfg.data), normalize=cfg.cluster.sphere)
    return assign_pseudo_labels(feats, cfg.cluster, epoch=0)


def test_student_epoch_minus_one_trains_on_teacher_labels_at_twice_the_iterations(teacher_run, tiny_synthetic_root,
                                                                                   tmp_path):
    """Purification_train_usl.py L164-241: epoch -1 clusters the teacher's features, its memories stay the
    teacher's centroids (momentum 1.0, cm.py L142-145) and it runs 2 x iters; then optim.epochs of its own."""
    run_dir, _ = teacher_run
    cfg = cfg_for(tiny_synthetic_root, tmp_path, "student",
                  **{"optim.epochs": 2, "run.teacher": str(run_dir), "optim.distill_weight": 1.0})
    assert cfg.optim.teacher_epoch_iters == 2.0 and cfg.optim.teacher_bn == "train"  # the published defaults
    history = train_worker(cfg, LocalContext(cfg.cluster, tmp_path / "student"))
    assert [row["labels_from"] for row in history] == ["teacher", "model", "model"]
    assert [row["iterations"] for row in history] == [4, 2, 2]
    for row in history:
        assert row["distill_global"] >= 0 and "distill_up" in row and "distill_down" in row

    expected = _teacher_labels(run_dir, cfg)
    first = torch.load(tmp_path / "student" / "checkpoint_000000" / "state.pt", weights_only=True)
    assert expected.n_clusters > 1
    assert first["labels"].tolist() == expected.labels.tolist()
    for view, memory in first["memories"].items():  # frozen through the epoch: still the teacher's centroids
        torch.testing.assert_close(memory, torch.tensor(expected.centroids[view]), rtol=0, atol=1e-6)
    second = torch.load(tmp_path / "student" / "checkpoint_000001" / "state.pt", weights_only=True)
    assert history[1]["labels_from"] == "model" and second["memories"]["global"].shape[0] == history[1]["n_clusters"]


def test_student_without_the_teacher_epoch(teacher_run, tiny_synthetic_root, tmp_path):
    run_dir, _ = teacher_run
    cfg = cfg_for(tiny_synthetic_root, tmp_path, "student",
                  **{"optim.epochs": 2, "run.teacher": str(run_dir), "optim.teacher_epoch_iters": 0})
    history = train_worker(cfg, LocalContext(cfg.cluster, tmp_path / "student"))
    assert [row["labels_from"] for row in history] == ["model", "model"]
    assert [row["iterations"] for row in history] == [2, 2]


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_teacher_batchnorm_mode_is_honoured_while_distilling(teacher_run, tiny_synthetic_root, tmp_path, mode):
    """The public trainer keeps the teacher in train() (Purification_train_usl.py L161, trainers.py L76):
    its BN layers normalise with each batch's statistics; "eval" uses the running ones."""
    run_dir, _ = teacher_run
    cfg = cfg_for(tiny_synthetic_root, tmp_path, "student", **{
        "optim.epochs": 1, "run.teacher": str(run_dir), "optim.teacher_bn": mode, "optim.teacher_epoch_iters": 0})
    teacher = load_teacher(str(run_dir), cfg.model)
    seen = []
    teacher.register_forward_hook(lambda module, args, out: seen.append(
        (torch.is_grad_enabled(), module.training, module.backbone.bn1.training)))
    before = {k: v.clone() for k, v in teacher.state_dict().items() if "running_mean" in k}
    train_worker(cfg, LocalContext(cfg.cluster, tmp_path / "student"), teacher=teacher)
    # no epoch on the teacher's labels here, so the teacher runs only to be distilled from: once per step
    assert [(grad, training, bn) for grad, training, bn in seen] == [(False, mode == "train", mode == "train")] * 2
    assert not teacher.training  # put back as it was after the epoch
    moved = any(not torch.equal(before[k], teacher.state_dict()[k]) for k in before)
    assert moved == (mode == "train")  # batch statistics (which also move the running ones) only in train mode


def test_student_hierarchical_schedule_continues_from_the_teacher(teacher_run, tiny_synthetic_root, tmp_path):
    """With hc_sse's HCT schedule, the student's epoch -1 clusters at the teacher's last step and its own
    epochs take the steps after it, instead of restarting from near-singletons at step 0."""
    import json
    import shutil

    from ray_reid.clustering.schedule import scheduled_target

    def target_clusters(n, epoch, c):
        return scheduled_target(n, epoch, merge_percent=c.merge_percent, first_step=c.first_step,
                                min_clusters_ratio=c.min_clusters_ratio)

    from ray_reid.engine.teacher import teacher_schedule_offset

    run_dir, _ = teacher_run
    teacher = tmp_path / "teacher"
    shutil.copytree(run_dir, teacher)
    meta_path = sorted(teacher.glob("checkpoint_*"))[-1] / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["epoch"], meta["config"]["cluster"]["first_step"] = 3, 1  # as if it had trained 4 epochs from step 1
    meta_path.write_text(json.dumps(meta))
    history_path = meta_path.with_name("history.json")  # a complete checkpoint's history ends at its epoch
    rows = json.loads(history_path.read_text())
    history_path.write_text(json.dumps(rows[:-1] + [{**rows[-1], "epoch": 3}]))
    over = {"optim.epochs": 1, "optim.iters": 1, "optim.teacher_epoch_iters": 1, "run.teacher": str(teacher),
            "cluster.merge_percent": 0.1, "cluster.min_clusters_ratio": 0.01}
    cfg = cfg_for(tiny_synthetic_root, tmp_path, "student", **over)
    assert teacher_schedule_offset(cfg, str(teacher)) == 4  # the teacher's last step: 1 + 3
    no_warmup = cfg_for(tiny_synthetic_root, tmp_path, "x", **{**over, "optim.teacher_epoch_iters": 0})
    assert teacher_schedule_offset(no_warmup, str(teacher)) == 5
    dbscan = cfg_for(tiny_synthetic_root, tmp_path, "x", **{**over, "cluster.method": "dbscan_jaccard"})
    assert teacher_schedule_offset(dbscan, str(teacher)) == 0

    history = train_worker(cfg, LocalContext(cfg.cluster, tmp_path / "student"))
    from ray_reid.data.resolve import load_configured_dataset

    n = len(load_configured_dataset(cfg.data.dataset, cfg.data.root).train)
    assert [row["cluster_target"] for row in history] == [target_clusters(n, 4, cfg.cluster),
                                                          target_clusters(n, 5, cfg.cluster)]
    assert history[0]["cluster_target"] < target_clusters(n, 0, cfg.cluster)  # not restarted


def test_distillation_step_matches_the_public_loss_on_the_same_batch():
    """cm.py L135-159 of the public code, written out: normalised features, MSELoss(reduce=False).mean(0).sum()
    per view, (1-lambda2)(CE_g + mu D_g) + lambda2 (CE_up + mu D_up) + lambda2 (CE_down + mu D_down)."""
    import torch.nn.functional as F

    from ray_reid.config import OptimConfig
    from ray_reid.engine.train_epoch import train_one_epoch
    from ray_reid.losses.cluster_memory import ClusterMemory

    torch.manual_seed(0)
    views = ("global", "up", "down")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.ModuleDict({v: torch.nn.Linear(12, 8) for v in views})
            self.views = views

        def forward(self, x):
            return {v: F.normalize(self.lin[v](x.flatten(1)), dim=1) for v in views}

    student, teacher = Net(), Net().requires_grad_(False)
    images, labels = torch.randn(6, 3, 2, 2), torch.tensor([0, 0, 1, 1, 2, 2])
    centroids = {v: F.normalize(torch.randn(3, 8), dim=1) for v in views}
    cfg = OptimConfig(lr=1e-3, parts_weight=0.2, distill_weight=0.7, temp=0.05, momentum=0.1)

    s_out, t_out = student(images), teacher(images)
    public = 0.0
    for v in views:
        ce = F.cross_entropy(s_out[v] @ centroids[v].t() / 0.05, labels)
        distill = torch.nn.MSELoss(reduction="none")(s_out[v], t_out[v]).mean(0).sum()
        public = public + (0.8 if v == "global" else 0.2) * (ce + 0.7 * distill)

    memories = {v: ClusterMemory.from_centroids(centroids[v], temp=0.05, momentum=0.1) for v in views}
    optimizer = torch.optim.SGD(student.parameters(), lr=0.0)
    metrics = train_one_epoch(student, [(images, torch.arange(6))], labels.numpy(), memories, optimizer, cfg,
                              epoch=0, teacher=teacher)
    assert metrics["iterations"] == 1
    assert abs(metrics["loss"] - float(public.detach())) < 1e-5
