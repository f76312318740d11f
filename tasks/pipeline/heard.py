"""Which stage's audio each stage hears: the one place the audio settings are read for the graph."""

from __future__ import annotations

from typing import Literal

from tasks.core.config import Config


def audio_stage(config: Config, *, heard_by: Literal["diarization", "emotion"]) -> str:
    """``denoise`` when ``<heard_by>.audio`` asks for the denoised audio and denoising is on,
    else ``load`` (the original)."""
    section = config.diarization if heard_by == "diarization" else config.emotion
    return "denoise" if section.audio == "denoised" and config.denoise.enabled else "load"


def denoise_reads_diarization(config: Config) -> bool:
    """Whether the denoiser takes its speech regions from the diarization of the original audio
    (instead of running the segmentation model a second time for voice activity)."""
    return config.denoise.enabled and config.diarization.audio == "original"
