"""cluster.yaml passes Ray's own validation and matches what the code asks the cluster for."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture(scope="module")
def raw_config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture(scope="module")
def prepared(raw_config) -> dict:
    pytest.importorskip("jsonschema")
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(raw_config)
    validate_config(config)
    return config


def _node_types(config: dict) -> dict:
    return config["available_node_types"]


def test_passes_ray_validation_with_every_node_type_resourced(prepared):
    types = _node_types(prepared)
    assert set(types) == {"head", "gpu_worker", "clusterer"}
    assert prepared["head_node_type"] == "head"
    for name, spec in types.items():
        assert "CPU" in spec["resources"], f"node type {name} must declare CPU explicitly"
        assert "GPU" in spec["resources"], f"node type {name} must declare GPU explicitly"


def test_head_offers_no_slots_for_training(prepared):
    head = _node_types(prepared)[prepared["head_node_type"]]
    assert head["resources"]["CPU"] == 0 and head["resources"]["GPU"] == 0
    assert "clusterer" not in head["resources"]


def test_exactly_one_node_type_carries_the_clusterer_resource_with_a_gpu(prepared):
    carriers = {n: s for n, s in _node_types(prepared).items() if "clusterer" in s["resources"]}
    assert list(carriers) == ["clusterer"]
    spec = carriers["clusterer"]
    assert spec["resources"]["clusterer"] == 1 and spec["resources"]["GPU"] >= 1
    assert spec["min_workers"] >= 1 and spec["max_workers"] == 1


def test_autoscaling_bounds_fit_the_cluster_limit(prepared):
    workers = {n: s for n, s in _node_types(prepared).items() if n != prepared["head_node_type"]}
    for name, spec in workers.items():
        assert 0 <= spec["min_workers"] <= spec["max_workers"], name
    assert sum(s["max_workers"] for s in workers.values()) <= prepared["max_workers"]
    gpu = workers["gpu_worker"]["resources"]
    assert gpu["GPU"] == 1 and gpu["CPU"] >= 4 and "clusterer" not in gpu


def test_actor_placement_asks_for_the_resource_the_yaml_provides_before_any_worker_joined(raw_config):
    """Right after `ray up` only the head is up; the request must still be the clusterer node's, GPU included."""
    from ray_reid.distributed.placement import clusterer_placement, node_types_from_config

    types = _node_types(raw_config)
    head_only = [{"node_id": "head", "resources": dict(types[raw_config["head_node_type"]]["resources"])}]
    placement = clusterer_placement(requested=False, nodes=head_only, declared=node_types_from_config(raw_config),
                                    num_workers=8, gpus_per_worker=1, cpus_per_worker=4)
    assert placement.waits_for == {"clusterer": 1} and not placement.fallback
    wanted = dict(placement.options.get("resources", {}))
    wanted["CPU"] = placement.options.get("num_cpus", 1)
    wanted["GPU"] = placement.options.get("num_gpus", 0)
    assert wanted["GPU"] == 1  # the clusterer node's GPU is the actor's, not a DDP rank's
    fits = [n for n, s in types.items() if all(s["resources"].get(k, 0) >= v for k, v in wanted.items() if v)]
    assert fits == ["clusterer"]


def test_s3_access_is_by_instance_profile_with_no_keys(raw_config):
    text = CLUSTER_YAML.read_text()
    assert not re.search(r"aws_access_key|aws_secret|AKIA[0-9A-Z]{16}|AWS_SECRET_ACCESS_KEY", text, re.I)
    for name, spec in raw_config["available_node_types"].items():
        profile = spec["node_config"].get("IamInstanceProfile")
        assert profile and (profile.get("Name") or profile.get("Arn")), f"{name} has no IAM instance profile"


def test_ray_is_pinned_and_the_package_installed_on_every_node(prepared):
    commands = "\n".join(prepared["setup_commands"])
    assert '"ray[default,train,tune]==2.60.0"' in commands
    assert "-e ~/ray-reid" in commands
    assert prepared["file_mounts"].get("~/ray-reid") == "."


def test_dashboard_bound_to_loopback_only(prepared):
    head_start = " ".join(prepared["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in head_start


def _with_docker_enabled(text: str) -> str:
    """cluster.yaml with its commented ``# docker:`` block uncommented, as a user would."""
    out, inside = [], False
    for line in text.splitlines():
        if line.startswith("# docker:"):
            inside = True
            out.append(line[2:])
        elif inside and line.startswith("#   "):
            out.append(line[2:])
        else:
            inside = False
            out.append(line)
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def prepared_docker() -> dict:
    pytest.importorskip("jsonschema")
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load(_with_docker_enabled(CLUSTER_YAML.read_text()))
    config = prepare_config(raw)
    validate_config(config)
    return config


def test_docker_section_is_commented_out_by_default(raw_config):
    assert "docker" not in raw_config
    assert "\n# docker:\n" in CLUSTER_YAML.read_text()


def test_passes_ray_validation_with_the_docker_section_enabled(prepared_docker, prepared):
    docker = prepared_docker["docker"]
    assert docker["image"] and docker["container_name"] and docker["pull_before_run"] is True
    # enabling the container changes nothing else: same node types, same setup commands
    assert prepared_docker["available_node_types"] == prepared["available_node_types"]
    assert prepared_docker["setup_commands"] == prepared["setup_commands"]


def test_dockerfile_builds_on_the_official_ray_gpu_image_of_the_pinned_versions():
    root = CLUSTER_YAML.parent
    dockerfile = (root / "Dockerfile").read_text()
    base = re.search(r"^ARG RAY_IMAGE=(\S+)$", dockerfile, re.M)
    assert base and re.search(r"^FROM \$\{RAY_IMAGE\}$", dockerfile, re.M)
    match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py3(\d+)-gpu", base.group(1))
    assert match, f"base image {base.group(1)} is not an official Ray GPU image"
    pyproject = (root / "pyproject.toml").read_text()
    assert f'"ray[default,train,tune]=={match.group(1)}"' in pyproject
    minimum = re.search(r'requires-python = ">=3\.(\d+)"', pyproject).group(1)
    assert int(match.group(2)) >= int(minimum)
    # the image holds the layout the setup_commands make, so they run in the container as no-ops
    assert "~/venv" in dockerfile and "-e ~/ray-reid" in dockerfile
    assert f'"ray[default,train,tune]=={match.group(1)}"' in dockerfile
    ignored = (root / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored and "runs" in ignored


def test_header_example_names_dataset_and_gpus(raw_config):
    header = "\n".join(line for line in CLUSTER_YAML.read_text().splitlines() if line.startswith("#"))
    example = header[header.index("ray job submit"):header.index("ray down")]
    for flag in ("--dataset", "--data-root", "--storage-path s3://", "--gpus-per-worker 1", "--workers"):
        assert flag in example, flag
    # and the train parser accepts it as written
    import shlex

    from ray_reid.cli.train import build_parser
    from ray_reid.cli.flags import config_from_args

    words = shlex.split(example.replace("#", " ").replace("\\\n", " "))
    argv = words[words.index("jobs/train.py") + 1:]
    cfg = config_from_args(build_parser().parse_args(argv))
    assert cfg.data.dataset == "market1501" and cfg.run.gpus_per_worker == 1
    assert cfg.run.storage_path.startswith("s3://")
