"""export: the recording's contract files in ``recordings/<id>/``, named after the recording."""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks.core.config import Config
from tasks.pipeline import layout
from tasks.pipeline.artefacts import read_meta
from tasks.pipeline.stage import Stage, StageContext


def reads(config: Config) -> dict[str, str]:
    """What the contract files hold; ``audio``: the denoised audio (the original when denoising is off)."""
    return {"diarization": "diarize", "segments": "segment", "screen": "screen", "emotion": "emotion",
            "transcribe": "transcribe", "denoise": "denoise", "voices": "voices",
            "audio": "denoise" if config.denoise.enabled else "load"}


def compute(ctx: StageContext) -> dict[str, Any]:
    """Write the recording's folder from the artefacts (:func:`tasks.output.export.export_recording`)."""
    from tasks.output.export import export_recording

    job, cfg = ctx.job, ctx.config
    segments = layout.read_segments(ctx["segments"], recording_id=job.recording_id)
    art = layout.EmotionArtefact(ctx["emotion"])
    vectors = art.embeddings()

    def embedding(pos: int) -> np.ndarray | None:
        row = art.row(pos)
        return None if row is None else vectors[row]

    return export_recording(
        recording=job.recording, folder=ctx.out, rttm=layout.read_rttm_text(ctx["diarization"]),
        segments=segments, results=layout.read_screen(ctx["screen"], segments=segments),
        curves=layout.read_frame_curves(ctx["screen"]), embeddings=embedding,
        snr=read_meta(ctx["denoise"]).get("facts", {}), model=job.models.get("emotion", {}),
        config=cfg.export, threshold=cfg.screen.threshold, hop_s=cfg.drilldown.frame_hop_s,
        denoised=lambda: layout.read_audio(ctx["audio"]), speaker_names=layout.read_voices(ctx["voices"])[1],
        transcripts=layout.read_transcripts(ctx["transcribe"]) if cfg.transcribe.enabled else None,
        transcribe_model=job.models.get("transcribe"))


STAGE = Stage(name="export", compute=compute, reads=reads, sections=("export",), publishes=True)
