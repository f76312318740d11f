"""Loaded models, kept once per process.

A worker process loads each model (emotion2vec, SenseVoice, segmentation-3.0, CAM++, a
diarization pipeline) the first time a stage needs it and reuses it for every later recording.
One lock and one table serve them all.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Hashable, TypeVar

T = TypeVar("T")

_LOCK = threading.RLock()
_MODELS: dict[Hashable, Any] = {}


def cached_model(key: Hashable, build: Callable[[], T], *, usable: Callable[[T], bool] | None = None) -> T:
    """The process's model under ``key``, built by ``build()`` the first time.

    Parameters
    ----------
    key : hashable
        What identifies the loaded model: its kind, resolved path or checksum, device, options.
    build : callable
        Loads the model (called under the lock, so two threads never load one model twice).
    usable : callable, optional
        Whether a cached model serves this request (e.g. it was built for clips at least as
        long); when it returns False the model is built again and replaces the cached one.
    """
    with _LOCK:
        model = _MODELS.get(key)
        if key not in _MODELS or (usable is not None and not usable(model)):
            model = _MODELS[key] = build()
        return model


def clear_models() -> None:
    """Forget every loaded model (tests)."""
    with _LOCK:
        _MODELS.clear()
