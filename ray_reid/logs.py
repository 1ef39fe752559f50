"""A console that reads like a story: our progress and epoch lines, not the libraries' internal chatter.

Some libraries log, at INFO or WARNING, things that are not news to a person watching a run: faiss
announces which CPU build it probes (``No module named 'faiss.swigfaiss_avx512'`` is that probe, not
an error), and every Ray Train rank logs each report as a ``TrainingReport(...)`` dump. They are
dropped from *console* handlers only; file handlers keep them (the driver's log file, Ray Train's
``logs/train/*.log`` in the Ray session folder). Ray Train's own ``ray.train`` logger is quietened
through its setting (``RunConfig(logging_config=LoggingConfig(log_level=...))``, ``run.ray_log_level``),
which keeps everything in its system log file.

Secrets never reach a log, whoever logs them: every record made in a process where
:func:`setup_logging` or :func:`quiet_console` ran has credential values (the AWS/MLflow
variables of :data:`SECRET_ENV_VARS`, AWS key ids, SigV4 credential scopes and signatures)
replaced by ``[REDACTED]`` before any handler sees it (pytest's and Ray's included), and our
handlers redact the formatted text again, tracebacks included. botocore's DEBUG output is a
request-signing transcript, so the AWS client libraries stay at INFO even with ``-v``.

No Ray here: the distributed layer calls :func:`quiet_console` in its worker processes.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: (logger name prefix or "*", message prefix or "", highest level dropped)
NOISE: tuple[tuple[str, str, int], ...] = (
    ("faiss.loader", "", logging.INFO),  # which SIMD build of faiss loads
    ("*", "Reporting training result", logging.INFO),  # Ray Train, once per rank per epoch
)


#: Environment variables whose values are secrets.
SECRET_ENV_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                   "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
#: AWS access key ids, and what SigV4 writes into headers and URLs (credential scope, signature, token).
_SECRET_PATTERN = re.compile(
    r"\b(?:AKIA|ASIA|AIDA|AROA|AGPA|ANPA|ANVA)[A-Z0-9]{16}\b"
    r"|(?<=Credential=)[^,&\s'\"]+|(?<=Signature=)[0-9a-fA-F]+"
    r"|(?i:(?<=X-Amz-Security-Token=)|(?<=x-amz-security-token': ')|(?<=x-amz-security-token: ))[^,&\s'\"]+")
#: Shorter environment values are not treated as secrets (a test's "testing" would be redacted everywhere).
_MIN_SECRET_LEN = 12
#: Client libraries whose DEBUG records spell out signed requests; never below INFO.
AWS_LOGGERS = ("botocore", "boto3", "s3transfer", "aiobotocore", "s3fs", "urllib3")
REDACTED = "[REDACTED]"
_PLAIN = logging.Formatter()


def redact(text: str) -> str:
    """``text`` with every credential value (see the module docstring) replaced by ``[REDACTED]``."""
    for name in SECRET_ENV_VARS:
        value = os.environ.get(name, "")
        if len(value) >= _MIN_SECRET_LEN and value in text:
            text = text.replace(value, REDACTED)
    return _SECRET_PATTERN.sub(REDACTED, text)


class RedactingFormatter(logging.Formatter):
    """A formatter whose output, traceback included, went through :func:`redact`."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def install_redaction() -> None:
    """Make every log record of this process carry a redacted message (once per process).

    A record factory, not a handler filter: it runs before any handler, so handlers we do not own
    (pytest's capture, Ray's session log files, a library's own) never see the secret either.
    """
    factory = logging.getLogRecordFactory()
    if getattr(factory, "ray_reid_redacts", False):
        return

    def redacting_factory(*args, **kwargs) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # malformed %-args: the handler reports them; nothing to redact yet
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:  # formatters reuse exc_text instead of formatting again
            record.exc_text = redact(_PLAIN.formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return record

    redacting_factory.ray_reid_redacts = True
    logging.setLogRecordFactory(redacting_factory)
    for name in AWS_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level < logging.INFO:  # NOTSET included: it would follow a DEBUG root
            logger.setLevel(logging.INFO)


class ConsoleNoise(logging.Filter):
    """Drops the :data:`NOISE` records; everything else (and anything above its level) passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, prefix, level in NOISE:
            if record.levelno > level:
                continue
            if name != "*" and not (record.name == name or record.name.startswith(name + ".")):
                continue
            if prefix and not str(record.msg).startswith(prefix):
                continue
            return False
        return True


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler) \
        and type(handler).__name__ != "SessionFileHandler"


def quiet_console(logger: logging.Logger | None = None) -> None:
    """Add :class:`ConsoleNoise` to the console handlers of ``logger`` (default: root), once; redact secrets."""
    install_redaction()
    for handler in (logger or logging.getLogger()).handlers:
        if _is_console(handler) and not any(isinstance(f, ConsoleNoise) for f in handler.filters):
            handler.addFilter(ConsoleNoise())


def default_log_file(command: str) -> Path:
    """Where a command's full log goes: ``RAY_REID_LOG_DIR`` or ``<cache>/logs``, one file per start."""
    from ray_reid.data.resolve import cache_dir

    folder = Path(os.environ.get("RAY_REID_LOG_DIR") or cache_dir() / "logs").expanduser()
    return folder / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


def setup_logging(verbose: bool = False, log_file: str | os.PathLike | None = None, *, stream=None) -> Path | None:
    """Our lines on the console (INFO, or DEBUG with ``verbose``), without :data:`NOISE`; everything in
    ``log_file`` when given. Returns the log file's path."""
    install_redaction()
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for old in [h for h in root.handlers if getattr(h, "ray_reid_console", False)]:  # a command run again
        root.removeHandler(old)
    console = logging.StreamHandler(stream or sys.stderr)
    console.ray_reid_console = True
    console.setFormatter(RedactingFormatter(FORMAT))
    root.addHandler(console)
    if not verbose:
        quiet_console(root)
    if log_file is None:
        return None
    for old in [h for h in root.handlers if getattr(h, "ray_reid_log_file", False)]:  # a command run again
        root.removeHandler(old)
        old.close()
    path = Path(log_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    file_handler = logging.FileHandler(path)
    file_handler.ray_reid_log_file = True
    file_handler.setFormatter(RedactingFormatter(FORMAT))
    file_handler.setLevel(logging.DEBUG)
    root.addHandler(file_handler)
    return path
