"""The console keeps our lines and drops the libraries' chatter; the log file keeps everything."""

import io
import logging

import pytest

from ray_reid import logs


@pytest.fixture
def clean_root():
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    root.handlers = []
    yield root
    for handler in root.handlers:
        handler.close()
    root.handlers, root.level = saved_handlers, saved_level


def test_console_drops_noise_and_the_file_keeps_it(clean_root, tmp_path):
    stream = io.StringIO()
    path = logs.setup_logging(log_file=tmp_path / "run.log", stream=stream)
    logging.getLogger("faiss.loader").info("Could not load library with AVX512 support due to: ModuleNotFoundError")
    logging.getLogger("/x/ray/train/v2/_internal/execution/context.py").info(
        "Reporting training result 3: TrainingReport(checkpoint=None, metrics={'loss': 1.0}) from rank 1")
    logging.getLogger("faiss.loader").warning("faiss could not load at all")
    logging.getLogger("ray_reid.engine.loop").info("epoch 3: loss 4.2, 135 clusters")
    console = stream.getvalue()
    assert "epoch 3: loss 4.2" in console and "faiss could not load at all" in console
    assert "AVX512" not in console and "Reporting training result" not in console
    for handler in clean_root.handlers:
        handler.flush()
    text = path.read_text()
    assert "AVX512" in text and "Reporting training result 3" in text and "epoch 3" in text


def test_verbose_shows_everything_and_a_second_setup_replaces_the_file(clean_root, tmp_path):
    stream = io.StringIO()
    logs.setup_logging(verbose=True, log_file=tmp_path / "a.log", stream=stream)
    logs.setup_logging(verbose=True, log_file=tmp_path / "b.log", stream=stream)
    logging.getLogger("faiss.loader").info("Loading faiss with AVX2 support.")
    assert "AVX2" in stream.getvalue()
    assert sum(getattr(h, "ray_reid_log_file", False) for h in clean_root.handlers) == 1
    assert sum(getattr(h, "ray_reid_console", False) for h in clean_root.handlers) == 1
