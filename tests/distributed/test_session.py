"""session.connect: the private local Ray it starts, seen from its workers."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_PROBE = """
import json, os, ray
from ray_reid.distributed.session import connect
connect(num_cpus=1)

@ray.remote(num_cpus=0)
def worker_env():
    return os.environ.get("TQDM_MININTERVAL")

print(json.dumps({"worker": ray.get(worker_env.remote()), "driver": os.environ.get("TQDM_MININTERVAL")}))
ray.shutdown()
"""


def _probe(env_extra: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "TQDM_MININTERVAL")}
    env.update(env_extra, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_local_ray_workers_update_progress_bars_every_10s_and_the_driver_keeps_its_own():
    # Ray forwards a worker's stderr a line per tqdm update: the default 0.1 s flooded the console
    assert _probe({}) == {"worker": "10", "driver": None}


def test_a_users_own_progress_interval_is_left_alone():
    assert _probe({"TQDM_MININTERVAL": "0.5"}) == {"worker": "0.5", "driver": "0.5"}
