"""load: decode the input to 16 kHz float32 (the mix, and each channel of a multi-channel source)."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from tasks.core.records import one_line
from tasks.pipeline import layout
from tasks.pipeline.stage import Stage, StageContext

log = logging.getLogger("emoflow.load")


def _identity(path: str) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns


def _warn(message: str) -> None:
    """A load warning in the run's log (Prefect's, inside a task run) and the Python log."""
    try:
        from prefect.logging import get_run_logger

        get_run_logger().warning("%s", message)
    except Exception:  # noqa: BLE001 - not in a Prefect run (the UI, tests): the Python log
        log.warning("%s", message)


def compute(ctx: StageContext) -> dict[str, Any]:
    """``audio.npy`` (mix), ``channels.npy`` (2+ channels, kept apart: a call's channels may be
    its speakers) and ``info.json`` (the source's format facts).

    The artefact is keyed by the sha256 the run computed when it planned (``job.sha256``); the
    file is hashed again after decoding, so that what is stored under that key is exactly what
    those bytes decode to: a file changed in between (rewritten, replaced, still being copied)
    fails with :class:`~tasks.audio.decode.ChangedInputError` and nothing is stored.
    """
    from tasks.audio.decode import ChangedInputError, load_channels
    from tasks.core.storage import sha256_file

    path = ctx.job.recording.open_path
    try:
        before = _identity(path)
    except OSError:
        before = None  # load_channels names the cause
    channels, info = load_channels(path, config=ctx.config.audio)  # decoded once
    try:
        changed = _identity(path) != before or sha256_file(path) != ctx.job.sha256
    except OSError:
        changed = True  # removed or replaced by something unreadable while it was decoded
    if changed:
        raise ChangedInputError(path)
    for warning in info.warnings:
        _warn(f"{one_line(ctx.job.source_path)}: {warning}")
    if channels.shape[0] >= 2:
        layout.write_audio(ctx.out, channels, name=layout.CHANNELS)
        layout.write_audio(ctx.out, channels.mean(axis=0, dtype=np.float32))  # = load_audio's mix
    else:
        layout.write_audio(ctx.out, channels[0])
    del channels
    layout.write_json(ctx.out / layout.AUDIO_INFO, {k: v for k, v in info.to_dict().items() if k != "path"})
    return {"duration": info.duration, "silent": info.silent, "warnings": info.warnings,
            "format": {k: getattr(info, k) for k in ("container", "codec", "sample_rate", "channels",
                                                      "sample_format", "bits_per_sample", "header_duration")}}


STAGE = Stage(name="load", compute=compute, sections=("audio",))
