"""segment: single-speaker pieces of 1.5–10 s from the diarized turns."""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks.core.config import Config
from tasks.pipeline import layout
from tasks.pipeline.stage import Stage, StageContext
from tasks.pipeline.heard import audio_stage


def reads(config: Config) -> dict[str, str]:
    return {"diarization": "diarize", "audio": audio_stage(config, heard_by="diarization")}


def compute(ctx: StageContext) -> dict[str, Any]:
    """``segments.json`` (no ids: readers name them), split points from the audio's energy."""
    from tasks.diarization.segments import build_segments

    turns, overlaps = layout.read_turns(ctx["diarization"])
    segments = build_segments(turns, recording_id="recording", config=ctx.config.segmentation, overlaps=overlaps,
                              audio=np.asarray(layout.read_audio(ctx["audio"])) if turns else None)  # no turns: no split points
    layout.write_segments(ctx.out, segments)
    counts = {st: sum(1 for s in segments if s.status == st) for st in ("ok", "too_short", "overlap")}
    facts: dict[str, Any] = {"segments": len(segments), **counts}
    if not segments:
        facts["note"] = "no speech found: zero segments"
    return facts


STAGE = Stage(name="segment", compute=compute, reads=reads, sections=("segmentation",))
