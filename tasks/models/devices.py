"""Which device a model runs on: the one ``auto``/``cpu``/``cuda`` resolution of emoflow."""

from __future__ import annotations


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
