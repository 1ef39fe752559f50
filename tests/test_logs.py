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


def test_no_secret_reaches_any_handler_or_the_log_file(clean_root, tmp_path, monkeypatch):
    secret, key_id = "SECRETsentinel9f3c2e7a1b", "AKIASENTINEL9F3C2E7A"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_SESSION_TOKEN", secret + "token")
    stream, foreign = io.StringIO(), io.StringIO()
    path = logs.setup_logging(verbose=True, log_file=tmp_path / "run.log", stream=stream)
    other = logging.StreamHandler(foreign)  # a handler we do not own (pytest's capture, Ray's session files)
    clean_root.addHandler(other)
    log = logging.getLogger("ray_reid.storage.s3")
    log.info("signed with %s / %s", key_id, secret)
    log.debug("headers {'Authorization': 'AWS4-HMAC-SHA256 Credential=%s/20261203/us-east-1/s3/aws4_request, "
              "Signature=0a1b2c3d', 'x-amz-security-token': '%stoken'}", key_id, secret)
    try:
        raise RuntimeError(f"request failed for {secret}")
    except RuntimeError:
        log.exception("upload failed")
    logging.getLogger("botocore.endpoint").debug("Sending http request: <AWSPreparedRequest ...>")
    logging.getLogger("ray_reid.engine.loop").info("epoch 1: loss 3.1")
    for handler in clean_root.handlers:
        handler.flush()
    for text in (path.read_text(), stream.getvalue(), foreign.getvalue()):
        assert "epoch 1: loss 3.1" in text and "upload failed" in text and "[REDACTED]" in text
        assert secret not in text and key_id not in text and "0a1b2c3d" not in text
        assert "Sending http request" not in text  # botocore's signing transcript stays below its INFO floor
    # a short value is not a secret worth mangling every line for
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    assert logs.redact("testing the model") == "testing the model"
