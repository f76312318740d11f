"""Where a model runs: the one ``auto``/``cpu``/``cuda`` resolution of emoflow, and how many CPU
threads torch uses while it does."""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

_THREADS_LOCK = threading.Lock()  # torch's thread count is process-wide


def resolve_device(device: str, *, setting: str = "device") -> str:
    """``auto`` → ``cuda`` when a GPU is available, else ``cpu``; ``cuda`` without a GPU is an
    error naming the config ``setting`` to change.

    Parameters
    ----------
    device : str
        ``auto``, ``cpu``, ``cuda`` or a torch device string (``cuda:1``).
    setting : str
        The config key the value came from (``emotion.device``), named in the error.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"{setting} is 'cuda' but no CUDA GPU is available; use --set {setting}=cpu")
    return device


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch CPU threads (0 = unchanged), restoring the previous setting."""
    import torch

    if n <= 0 or n == torch.get_num_threads():
        yield
        return
    with _THREADS_LOCK:
        before = torch.get_num_threads()
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


MAX_CPU_WORKERS = 4
"""Most forward passes one stage runs at once on CPU."""


def cpu_workers(requested: int, *, threads: int, device: str) -> int:
    """How many forward passes run at once: ``requested`` when > 0; otherwise, on CPU, the
    cores this process may use divided by each pass's torch ``threads`` (at most
    :data:`MAX_CPU_WORKERS`), and 1 on a GPU.

    Small models (SenseVoiceSmall: 512-d matrices) use one core far better than two: their
    matrix products are too small to split, so each extra core does better running its own
    pass.
    """
    import os

    if requested > 0:
        return int(requested)
    if not str(device).startswith("cpu"):
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_CPU_WORKERS, cores // max(1, int(threads))))
