"""load: decode the input to 16 kHz float32 (the mix, and each channel of a multi-channel source)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks.pipeline import layout
from tasks.pipeline.stage import Stage, StageContext


def compute(ctx: StageContext) -> dict[str, Any]:
    """``audio.npy`` (mix), ``channels.npy`` (2+ channels, kept apart: a call's channels may be
    its speakers) and ``info.json`` (the source's format facts)."""
    from tasks.audio.decode import load_channels

    channels, info = load_channels(ctx.job.source_path, config=ctx.config.audio)  # decoded once
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
