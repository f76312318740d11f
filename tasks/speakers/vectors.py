"""Speaker vectors: the one normalisation of CAM++ embeddings and of the centroids made from them.

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
