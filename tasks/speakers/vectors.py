"""Speaker vectors: the one normalisation of CAM++ embeddings and the one way centroids are made from them.

They are compared by cosine everywhere (clustering, resegmentation, refinement, voiceprints,
linking across recordings), so every one of them is scaled to unit length the same way. numpy
only: reading stored vectors imports no model code.
"""

from __future__ import annotations

import numpy as np


def unit(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` scaled to unit length along their last axis (zero rows stay zero, NaN rows NaN)."""
    v = np.asarray(vectors)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def unit_centroids(
    vectors: np.ndarray,
    *,
    owner: np.ndarray,
    count: int,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """The unit centroid of each group of ``vectors``: ``(count, D)``, NaN rows for empty groups.

    Parameters
    ----------
    vectors : np.ndarray
        ``(n, D)`` unit vectors; rows with a NaN or inf are left out.
    owner : np.ndarray
        ``(n,)`` group of each row, ``0 <= owner < count``.
    count : int
        Number of groups.
    weights : np.ndarray, optional
        ``(n,)`` weight of each row (e.g. seconds of speech); rows count equally without.

    Returns
    -------
    np.ndarray
        ``(count, D)`` float64: the (weighted) mean of each group's finite rows, scaled to unit
        length.
    """
    vectors = np.asarray(vectors)
    owner = np.asarray(owner, dtype=np.int64).reshape(-1)
    dim = vectors.shape[1] if vectors.ndim == 2 else 0
    out = np.full((count, dim), np.nan)
    if owner.size == 0:
        return out
    finite = np.isfinite(vectors).all(axis=1)
    for k in range(count):
        mine = finite & (owner == k)
        if not mine.any():
            continue
        if weights is None:
            out[k] = unit(vectors[mine].mean(axis=0))
        else:
            out[k] = unit((vectors[mine] * np.asarray(weights)[mine, None]).sum(axis=0))
    return out
