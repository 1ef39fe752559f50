"""A console that reads like a story: our progress and epoch lines, not the libraries' internal chatter.

Some libraries log, at INFO or WARNING, things that are not news to a person watching a run: faiss
announces which CPU build it probes (``No module named 'faiss.swigfaiss_avx512'`` is that probe, not
an error), and every Ray Train rank logs each report as a ``TrainingReport(...)`` dump. They are
dropped from *console* handlers only; file handlers keep them (the driver's log file, Ray Train's
``logs/train/*.log`` in the Ray session folder). Ray Train's own ``ray.train`` logger is quietened
through its setting (``RunConfig(logging_config=LoggingConfig(log_level=...))``, ``run.ray_log_level``),
which keeps everything in its system log file.

No Ray here: the distributed layer calls :func:`quiet_console` in its worker processes.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: (logger name prefix or "*", message prefix or "", highest level dropped)
NOISE: tuple[tuple[str, str, int], ...] = (
    ("faiss.loader", "", logging.INFO),  # which SIMD build of faiss loads
    ("*", "Reporting training result", logging.INFO),  # Ray Train, once per rank per epoch
)


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
    """Add :class:`ConsoleNoise` to the console handlers of ``logger`` (default: root), once."""
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
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for old in [h for h in root.handlers if getattr(h, "ray_reid_console", False)]:  # a command run again
        root.removeHandler(old)
    console = logging.StreamHandler(stream or sys.stderr)
    console.ray_reid_console = True
    console.setFormatter(logging.Formatter(FORMAT))
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
    file_handler.setFormatter(logging.Formatter(FORMAT))
    file_handler.setLevel(logging.DEBUG)
    root.addHandler(file_handler)
    return path
