"""Write a command's outputs into a local folder or an ``s3://`` prefix through one code path."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ray_reid.storage.s3 import is_s3_uri, upload_dir


@contextlib.contextmanager
def staged_output(location: str | os.PathLike, *, endpoint_url: str | None = None) -> Iterator[Path]:
    """Yield a local folder to write into; for ``s3://`` it is a temp folder uploaded on success.

    Each file is written whole (callers use temp-then-rename helpers) and each object lands
    whole, so an interrupted command leaves earlier outputs as they were. Nothing is uploaded
    if the body raises.
    """
    text = os.fspath(location)
    if is_s3_uri(text):
        with tempfile.TemporaryDirectory(prefix="ray_reid_out_") as tmp:
            yield Path(tmp)
            upload_dir(tmp, text.rstrip("/"), endpoint_url=endpoint_url)
        return
    if "://" in text:
        raise ValueError(f"unsupported output location {text!r}: use a local folder or s3://bucket/prefix")
    folder = Path(text).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    yield folder
