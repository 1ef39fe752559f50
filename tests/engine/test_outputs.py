"""The run summary: the last evaluated figures, the best mAP, and the group sizes an elastic run went through."""

from ray_reid.config import TrainConfig
from ray_reid.engine.outputs import summarize


def test_summary_lists_the_world_sizes_of_an_elastic_run():
    history = [{"epoch": 0, "world_size": 2, "mAP": 0.1, "loss": 3.0},
               {"epoch": 1, "world_size": 1, "loss": 2.5},
               {"epoch": 2, "world_size": 2, "mAP": 0.3, "loss": 2.0}]
    summary = summarize(history, TrainConfig(), wall_seconds=1.0)
    assert summary["world_sizes"] == [1, 2]
    assert summary["epochs"] == 3 and summary["mAP"] == 0.3 and summary["best_epoch"] == 2
    assert "world_sizes" not in summarize([{"epoch": 0, "loss": 1.0}], TrainConfig(), wall_seconds=1.0)
