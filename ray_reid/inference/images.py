"""Where the crops are (a folder or an S3 prefix), what their names say, and how they are decoded.

Decoding here is the test transform of :mod:`ray_reid.data.transforms` split in two: the
resize to the model's input size on CPU (PIL bicubic, as ``v2.Resize`` does on a PIL image),
giving uint8 pixels that travel cheaply between Ray Data stages, and the float normalisation,
done next to the model. The embeddings therefore equal what ``evaluate`` extracts.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable

import numpy as np
from PIL import Image, UnidentifiedImageError

from ray_reid.data._folders import is_image_file
from ray_reid.storage.s3 import is_s3_uri, parse_s3_uri

#: ``0001_c1s1_000151_01.jpg``: person id, then ``c`` and the camera number (Market, Duke, synthetic).
MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)")
UNKNOWN = -1


def list_images(location: str | os.PathLike, *, endpoint_url: str | None = None) -> list[str]:
    """Every image file under a local folder (recursively) or an ``s3://`` prefix, sorted.

    Local entries come back as absolute paths, S3 ones as ``s3://bucket/key``. An empty
    result is an error naming the location: it is always a wrong path, never a job to run.
    """
    text = os.fspath(location)
    if is_s3_uri(text):
        from ray_reid.storage import s3_client

        bucket, prefix = parse_s3_uri(text)
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        paginator = s3_client(endpoint_url).get_paginator("list_objects_v2")
        found = [f"s3://{bucket}/{obj['Key']}"
                 for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
                 for obj in page.get("Contents", [])
                 if is_image_file(obj["Key"].rsplit("/", 1)[-1])]
    else:
        if "://" in text:
            raise ValueError(f"unsupported image location {text!r}: use a local folder or s3://bucket/prefix")
        root = os.path.abspath(os.path.expanduser(text))
        if not os.path.isdir(root):
            raise FileNotFoundError(f"image folder {root} does not exist or is not a folder")
        found = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            found += [os.path.join(dirpath, name) for name in filenames if is_image_file(name)]
    if not found:
        raise FileNotFoundError(f"no image files (.jpg, .jpeg, .png, .bmp) under {text}")
    return sorted(found)


def parse_ids(path: str) -> tuple[int, int]:
    """``(person id, camera number)`` from a Market-style file name; ``-1`` where the name says nothing.

    The camera is the number written in the name (``c1`` -> 1). Unlabelled crops from a
    real camera network are usually named otherwise: that is not an error, they simply get
    no camera (the camera filter of ``search`` then keeps all their hits).
    """
    match = MARKET_NAME.match(path.rsplit("/", 1)[-1])
    if match is None:
        return UNKNOWN, UNKNOWN
    return int(match.group(1)), int(match.group(2))


def cameras_of(paths: Iterable[str]) -> np.ndarray:
    return np.array([parse_ids(p)[1] for p in paths], dtype=np.int32)


def decode_crop(data: bytes, height: int, width: int) -> tuple[np.ndarray | None, str]:
    """``(uint8 [height, width, 3] pixels, "")``, or ``(None, reason)`` for bytes that are no image.

    The resize is PIL's bicubic with antialiasing, exactly what ``test_transform`` applies.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # PIL decodes lazily: a truncated file must fail here, not later
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        # PIL names the in-memory buffer with its address: drop it, so a rerun lists the file the same way
        return None, f"{type(exc).__name__}: {re.sub(r' <_io.BytesIO object at 0x[0-9a-f]+>', '', str(exc))}"
    resized = rgb.resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(resized, dtype=np.uint8), ""


def read_bytes(path: str, *, endpoint_url: str | None = None) -> bytes:
    """The whole file at a local path or ``s3://`` URI (small files only: crops, thumbnails)."""
    if is_s3_uri(path):
        from ray_reid.storage import s3_client

        bucket, key = parse_s3_uri(path)
        return s3_client(endpoint_url).get_object(Bucket=bucket, Key=key)["Body"].read()
    with open(path, "rb") as fh:
        return fh.read()
