"""Names of the node cache's own files, known to the cache that writes them and to uploads that skip them.

Kept apart from both so that :mod:`ray_reid.storage.cache` (which needs the S3 client) and
:mod:`ray_reid.storage.s3` (whose ``upload_dir`` must never publish a half-downloaded temp
file) depend on it instead of on each other.
"""

from __future__ import annotations

INDEX_NAME = ".ray_reid_fetch_index.json"
MARKER_NAME = ".ray_reid_fetch_complete.json"
TEMP_SUFFIX = ".ray_reid.part"
SIDECAR_SUFFIX = ".ray_reid.json"
LOCK_SUFFIX = ".ray_reid.lock"


def is_bookkeeping_name(name: str) -> bool:
    """True for the cache's own files (index, marker, temp, sidecar, lock), never dataset content."""
    return name in (INDEX_NAME, MARKER_NAME) or name.endswith((TEMP_SUFFIX, SIDECAR_SUFFIX, LOCK_SUFFIX))
