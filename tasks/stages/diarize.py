"""diarize: who spoke when (pyannote segmentation-3.0 + CAM++, or one speaker per channel)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks.core.config import Config
from tasks.pipeline import layout
from tasks.pipeline.stage import Stage, StageContext
from tasks.speakers.linking import VOICE_KEYS
from tasks.pipeline.heard import audio_stage


def reads(config: Config) -> dict[str, str]:
    return {"channels": "channels", "audio": audio_stage(config, heard_by="diarization")}


def compute(ctx: StageContext) -> dict[str, Any]:
    """``diarization.rttm`` (overlap-aware, neutral uri) and ``turns.json`` (turns and overlaps):
    the mix through the diarization pipeline, or each channel as one speaker when split."""
    from tasks.diarization.pipeline import diarize
    from tasks.diarization.rttm import ANONYMOUS_URI, write_rttm

    config = ctx.config.diarization
    heard = layout.HeardAudio(audio=ctx["audio"], channels=ctx["channels"])
    progress = ctx.progress()
    if not heard.split:
        result = diarize(np.asarray(heard.mix()), recording_id=ANONYMOUS_URI, config=config, progress=progress)
    else:
        from tasks.diarization.channels import diarize_channels, read_activity

        if progress is not None:
            progress(0.0, 1.0)
        # the activity the channels stage found on the original channels (denoised ones are redetected)
        activity = None if layout.has_denoised(ctx["audio"]) else read_activity(ctx["channels"])
        result = diarize_channels(np.asarray(heard.channels(), dtype=np.float32), config=config,
                                  names=heard.labels(), recording_id=ANONYMOUS_URI, activity=activity)
        if progress is not None:
            progress(1.0, 1.0)
    write_rttm(result.annotation, ctx.out / layout.RTTM, uri=ANONYMOUS_URI)
    turns, overlaps = result.turns(), result.overlaps()
    layout.write_turns(ctx.out, turns, overlaps)
    return {"speakers": sorted({t.speaker for t in turns}), "turns": len(turns),
            "speech_s": round(sum(t.end - t.start for t in turns), 3),
            "overlap_s": round(sum(e - s for s, e in overlaps), 3),
            "channels": "split" if heard.split else "mix"}


STAGE = Stage(name="diarize", compute=compute, reads=reads, sections=("diarization",),
              keys_not_read={"diarization": VOICE_KEYS}, models=("segmentation", "embedding"), progress_unit="‰")
