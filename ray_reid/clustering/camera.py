"""Take out what each camera adds to every image before clustering.

A camera's light, colour cast and viewpoint move all of its images the same way in feature space, so a
clusterer on raw distances groups images *by camera* as readily as by person: from the proxy's
pretrained init, the hierarchy's clusters drew 64% of their images from their main camera where the
true identities draw 39% (``benchmarks/hc_diagnose.py``). Subtracting each camera's mean feature
removes the shared shift and keeps what differs between the people inside a camera. Camera ids come
with every re-ID image (they are not identity labels), and the memory and training still see the
model's own features: only the clustering input is centred.
"""

from __future__ import annotations

import numpy as np


def centre_by_camera(x: np.ndarray, camids: np.ndarray, *, unit: bool = True) -> np.ndarray:
    """``x`` (N×d, any float dtype) minus its camera's mean row, as float32; rows L2-normalised first when ``unit``.

    With ``unit`` the rows are sphere features: each camera's mean is taken over the normalised rows and
    the clusterer renormalises the centred ones. A camera with a single image becomes a zero row under
    ``unit`` (nothing is left once its own mean is removed), so such a camera is refused by name.
    """
    x = np.asarray(x)
    camids = np.asarray(camids)
    if x.ndim != 2:
        raise ValueError(f"features must be N×d, got shape {x.shape}")
    if camids.shape != (x.shape[0],):
        raise ValueError(f"camids must have one entry per feature row ({x.shape[0]}), got shape {camids.shape}")
    out = x.astype(np.float32, copy=True)
    if unit:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        if (norms == 0).any():
            raise ValueError(f"cannot L2-normalise all-zero feature rows (first: {np.flatnonzero(norms[:, 0] == 0)[:5]})")
        out /= norms
    cams, inverse, counts = np.unique(camids, return_inverse=True, return_counts=True)
    if unit and (counts < 2).any():
        raise ValueError(f"camera(s) {cams[counts < 2].tolist()} hold a single image: centring would leave a zero "
                         "feature; turn cluster.camera_centred off or give each camera at least two images")
    means = np.zeros((len(cams), out.shape[1]), dtype=np.float64)
    np.add.at(means, inverse, out)
    means /= counts[:, None]
    out -= means[inverse].astype(np.float32)
    return out
