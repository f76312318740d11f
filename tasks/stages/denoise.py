"""denoise: noisereduce or RNNoise, per channel for a split call; SNR before and after."""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

import numpy as np

from tasks.core.config import Config
from tasks.pipeline import layout
from tasks.pipeline.stage import Stage, StageContext
from tasks.pipeline.heard import denoise_reads_diarization


def reads(config: Config) -> dict[str, str]:
    """The original audio and the channel decision; the diarization of the original audio when
    it gives the speech regions (no second voice-activity pass)."""
    out = {"original": "load", "channels": "channels"}
    if denoise_reads_diarization(config):
        out["diarization"] = "diarize"
    return out


def _rounded(stats: Any) -> dict[str, Any]:
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(stats).items()}


def compute(ctx: StageContext) -> dict[str, Any]:
    """``denoised.npy`` (and ``denoised_channels.npy``, each channel with its own speaker's
    speech regions, when split); nothing when denoising is off (readers hear the original)."""
    from tasks.audio.denoise import denoise

    config = ctx.config.denoise
    if not config.enabled:
        return {"method": "none", "snr_before_db": None, "snr_after_db": None}
    turns, overlaps = layout.read_turns(ctx["diarization"]) if "diarization" in ctx.inputs else (None, [])
    heard = layout.HeardAudio(audio=ctx["original"], channels=ctx["channels"])
    if not heard.split:
        speech = None if turns is None else sorted([(t.start, t.end) for t in turns] + list(overlaps))
        clean, stats = denoise(np.array(heard.mix()), config=config, speech=speech)
        original = ctx["original"] / layout.AUDIO
        if not clean.any() and not original.is_symlink():  # digital silence: the same bytes as load's audio
            try:
                os.link(original, ctx.out / layout.DENOISED)  # a hard link: no second copy in the cache
                return _rounded(stats)
            except OSError:
                pass
        layout.write_audio(ctx.out, clean, name=layout.DENOISED)
        return _rounded(stats)
    sources = heard.channels()
    cleaned, per_channel = [], []
    for row, label in enumerate(heard.labels()):
        speech = None if turns is None else sorted((t.start, t.end) for t in turns if t.speaker == label)
        clean, stats = denoise(np.asarray(sources[row], dtype=np.float32), config=config, speech=speech)
        cleaned.append(clean.astype(np.float32, copy=False))
        per_channel.append({"channel": label, **_rounded(stats)})
    stacked = np.stack(cleaned)
    layout.write_audio(ctx.out, stacked, name=layout.DENOISED_CHANNELS)
    layout.write_audio(ctx.out, stacked.mean(axis=0), name=layout.DENOISED)

    def mean_of(key: str) -> float | None:
        values = [c[key] for c in per_channel if c[key] is not None]
        return round(float(np.mean(values)), 3) if values else None

    return {"method": config.method, "snr_before_db": mean_of("snr_before_db"),
            "snr_after_db": mean_of("snr_after_db"), "channels": per_channel}


STAGE = Stage(name="denoise", compute=compute, reads=reads, sections=("denoise",), models=("segmentation",))
