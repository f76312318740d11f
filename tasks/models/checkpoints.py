"""Checkpoint loading that never runs code from a model file.

Model directories come from hubs, mirrors and colleagues. A PyTorch checkpoint is a pickle, and
unpickling can call any function the file names (``os.system`` ...). Every checkpoint emoflow
loads therefore goes through

* ``safetensors`` (``*.safetensors``: tensors only, no code), or
* ``torch.load(weights_only=True)``: PyTorch's restricted unpickler, which only builds tensors,
  containers and plain values (plus, for pyannote checkpoints, the few pyannote types listed in
  :func:`pyannote_safe_globals`).

A file that needs anything else is refused with :class:`UnsafeCheckpointError` (nothing from it
is executed); a corrupt, truncated or foreign file raises :class:`CheckpointLoadError`. Both are
:class:`~tasks.models.hub.ModelUnavailableError`, so the CLI reports them in one line and exits 2.

pyannote's ``Model.from_pretrained`` unpickles without the weights-only restriction; :func:`load_pyannote_model`
reads the file once, checks those bytes with the restricted unpickler, and hands pyannote the
same checked bytes (never the path, which could change in between).
"""

from __future__ import annotations

import io
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

from tasks.models.hub import ModelUnavailableError
from tasks.core.errors import first_line

STATE_KEYS = ("state_dict", "model_state_dict", "model")
"""Keys under which checkpoints nest their state dict (unwrapped in this order)."""

PYANNOTE_FILE = "pytorch_model.bin"
PYANNOTE_MODULE_PREFIX = "pyannote.audio.models."


class CheckpointLoadError(ModelUnavailableError):
    """A checkpoint cannot be read (corrupt, truncated, wrong format); the message is one line."""


class UnsafeCheckpointError(CheckpointLoadError):
    """A checkpoint needs arbitrary unpickling (it could run code) and was refused unread."""


def convert_hint(path: str | os.PathLike[str]) -> str:
    """A one-line command that converts a pickled state dict to safetensors (run it elsewhere).

    The command itself loads with ``weights_only=True``: on a file that needs more, torch's own
    error names each global and how to allow it, so nothing is allowed unseen.
    """
    p = Path(path)
    target = p.with_name("model.safetensors")
    return (
        "convert it to safetensors, allowing only globals you have checked (torch's error names each one, "
        "torch.serialization.add_safe_globals allows it), on a machine you trust: python -c \"import torch, "
        f"safetensors.torch as s; c = torch.load('{p}', weights_only=True); c = c.get('model', c); "
        f"s.save_file({{k: v.contiguous().clone() for k, v in c.items()}}, '{target}')\""
    )


def _refusal(path: Path, exc: pickle.UnpicklingError, hint: str) -> CheckpointLoadError:
    """Turn the restricted unpickler's (multi-line) refusal into a one-line error."""
    text = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return UnsafeCheckpointError(
            f"{path}: refused: the checkpoint needs arbitrary unpickling (it calls for {found.group(1)}; "
            f"loading it could run code, nothing was run); {hint}"
        )
    op = re.search(r"Unsupported operand (\d+)", text)
    what = f"pickle opcode {op.group(1)} is not allowed" if op else first_line(exc, limit=200)
    return CheckpointLoadError(
        f"{path}: cannot read the checkpoint safely ({what}; nothing in it was run): it is corrupt or "
        "not a torch.save file; download it again"
    )


def load_checkpoint(path: str | os.PathLike[str], *, data: bytes | None = None, mmap: bool = True,
                    allowed: list[Any] | None = None, hint: str | None = None) -> Any:
    """Read a checkpoint without running code from it.

    Parameters
    ----------
    path : path-like
        A ``*.safetensors`` file (read with safetensors) or a ``torch.save`` file (read with
        ``torch.load(weights_only=True)``); named in error messages.
    data : bytes, optional
        The file's content, already read (then ``path`` only names it).
    mmap : bool
        Memory-map zip-format torch files (the weights are not held twice while loading);
        legacy (non-zip) files are read normally.
    allowed : list, optional
        Extra classes the restricted unpickler may build (``torch.serialization.safe_globals``).
    hint : str, optional
        What to do when the file is refused (default: :func:`convert_hint`).

    Returns
    -------
    object
        What the file holds: for safetensors a ``dict[str, Tensor]``; for torch files whatever
        was saved (built from tensors, containers, plain values and ``allowed`` only).

    Raises
    ------
    UnsafeCheckpointError
        The file needs arbitrary unpickling; nothing from it was executed.
    CheckpointLoadError
        The file is missing, corrupt, truncated or not a checkpoint.
    """
    import torch

    name = Path(path)
    hint = hint or convert_hint(name)
    if name.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load, load_file

        try:
            return load(data) if data is not None else load_file(str(name), device="cpu")
        except OSError as exc:
            raise CheckpointLoadError(f"{name}: cannot read ({exc.strerror or first_line(exc, limit=200)})") from None
        except SafetensorError as exc:
            raise CheckpointLoadError(f"{name}: cannot read the safetensors file ({first_line(exc, limit=200)}): "
                                      "it is corrupt or truncated; download it again") from None
    try:
        with torch.serialization.safe_globals(list(allowed or [])), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            if data is not None:
                return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            if mmap:
                try:
                    return torch.load(str(name), map_location="cpu", weights_only=True, mmap=True)
                except RuntimeError:  # legacy (non-zip) files cannot be mapped; errors recur below
                    pass
            return torch.load(str(name), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _refusal(name, exc, hint) from None
    except OSError as exc:
        raise CheckpointLoadError(f"{name}: cannot read ({exc.strerror or first_line(exc, limit=200)})") from None
    except (RuntimeError, EOFError, ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
        reason = "empty or truncated file" if isinstance(exc, EOFError) else first_line(exc, limit=200)
        raise CheckpointLoadError(f"{name}: cannot read the checkpoint ({reason}): it is corrupt, truncated "
                                  "or not a PyTorch/safetensors file; download it again") from None


def load_state(path: str | os.PathLike[str], *, mmap: bool = True) -> dict[str, Any]:
    """The state dict (name → tensor) of a checkpoint, read without running code from it.

    Parameters
    ----------
    path : path-like
        A ``*.safetensors`` or ``torch.save`` file; a state dict nested under ``state_dict``,
        ``model_state_dict`` or ``model`` (funasr, lightning) is unwrapped.
    mmap : bool
        Memory-map zip-format torch files.

    Raises
    ------
    UnsafeCheckpointError, CheckpointLoadError
        See :func:`load_checkpoint`; also when the file holds no state dict of tensors.
    """
    import torch

    state = load_checkpoint(path, mmap=mmap)
    for key in STATE_KEYS:
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not state:
        raise CheckpointLoadError(f"{path}: holds no state dict (a mapping of names to tensors) "
                                  f"but {type(state).__name__}")
    bad = [str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointLoadError(f"{path}: not a state dict: {len(bad)} entries are not tensors "
                                  f"(e.g. {', '.join(bad[:3])})")
    return state


def pyannote_safe_globals() -> list[Any]:
    """The non-tensor types pyannote.audio model checkpoints hold (task specifications and the
    saved torch version): plain data classes and enums, safe to build."""
    import torch
    from pyannote.audio.core.task import Problem, Resolution, Specifications

    return [Specifications, Problem, Resolution, torch.torch_version.TorchVersion]


def pyannote_checkpoint_file(path: str | os.PathLike[str]) -> Path:
    """The checkpoint file of a pyannote model: ``path`` itself, or ``path/pytorch_model.bin``."""
    p = Path(path)
    f = p if p.is_file() else p / PYANNOTE_FILE
    if not f.is_file():
        raise CheckpointLoadError(f"{p}: no {PYANNOTE_FILE} (pyannote model checkpoint) found")
    return f


def read_pyannote_checkpoint(path: str | os.PathLike[str]) -> tuple[bytes, dict[str, Any]]:
    """Read a pyannote model checkpoint and check it with the restricted unpickler.

    Returns
    -------
    data : bytes
        The file's bytes, as checked (hand these, not the path, to pyannote).
    checkpoint : dict
        Its content: ``state_dict``, ``hyper_parameters`` and ``pyannote.audio`` (whose
        ``architecture.module`` must lie in ``pyannote.audio.models``).

    Raises
    ------
    UnsafeCheckpointError, CheckpointLoadError
    """
    f = pyannote_checkpoint_file(path)
    try:
        data = f.read_bytes()
    except OSError as exc:
        raise CheckpointLoadError(f"{f}: cannot read ({exc.strerror or exc})") from None
    hint = ("pyannote checkpoints may hold only tensors, plain values and pyannote's Specifications; "
            "re-save it with those on a machine you trust")
    ckpt = load_checkpoint(f, data=data, allowed=pyannote_safe_globals(), hint=hint)
    try:
        module = ckpt["pyannote.audio"]["architecture"]["module"]
        ckpt["pyannote.audio"]["architecture"]["class"]
        ckpt["state_dict"]
    except (TypeError, KeyError):
        raise CheckpointLoadError(f"{f}: not a pyannote.audio model checkpoint (no pyannote.audio "
                                  "architecture or state_dict)") from None
    if not isinstance(module, str) or not module.startswith(PYANNOTE_MODULE_PREFIX):
        raise UnsafeCheckpointError(f"{f}: refused: the checkpoint names architecture module {module!r}, "
                                    f"not one of pyannote's ({PYANNOTE_MODULE_PREFIX}*)")
    return data, ckpt


def load_pyannote_model(path: str | os.PathLike[str]):
    """A pyannote.audio model from a checked checkpoint (see :func:`read_pyannote_checkpoint`),
    on the CPU, in eval mode.

    Raises
    ------
    UnsafeCheckpointError, CheckpointLoadError
        One line naming the file; nothing from a refused file is executed.
    """
    import torch
    from pyannote.audio import Model

    f = pyannote_checkpoint_file(path)
    data, _ = read_pyannote_checkpoint(f)
    try:
        # the restricted unpickler accepted these bytes: unpickling them again builds only the
        # same allowed objects
        model = Model.from_pretrained(io.BytesIO(data), map_location=torch.device("cpu"))
    except Exception as exc:  # pyannote/lightning raise many types for a bad architecture
        raise CheckpointLoadError(f"{f}: pyannote.audio could not build the model "
                                  f"({type(exc).__name__}: {first_line(exc, limit=200)})") from None
    if not isinstance(model, Model):
        raise CheckpointLoadError(f"{f}: pyannote.audio could not build the model")
    return model.eval()
