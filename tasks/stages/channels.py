"""channels: diarize a recording as one mix, or as one speaker per channel (a two-channel call)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks.pipeline import layout
from tasks.pipeline.stage import Stage, StageContext
from tasks.speakers.linking import VOICE_KEYS


def compute(ctx: StageContext) -> dict[str, Any]:
    """``channels.json`` (mode, the reason in words, its figures, the channel labels) and, when
    split, each channel's speech activity (``activity.npz``, read by diarize)."""
    from tasks.diarization.channels import (ChannelDecision, channel_activity, channel_labels, decide_channel_mode,
                                            plain_figures, write_activity)

    config = ctx.config.diarization
    channels = layout.read_channels(ctx["load"])
    if channels is None:
        decision = ChannelDecision("mix", "mono recording", {"channels": 1, "requested": config.channels})
    else:
        decision = decide_channel_mode(np.asarray(channels, dtype=np.float32), mode=config.channels, config=config)
    labels: list[str] = []
    if decision.mode == "split" and channels is not None:
        labels = channel_labels(count=int(channels.shape[0]), names=config.channel_names)
        activity = decision.activity or channel_activity(np.asarray(channels, dtype=np.float32), config=config)
        write_activity(ctx.out, activity)
    figures = plain_figures(decision.figures)
    layout.write_channel_decision(ctx.out, mode=decision.mode, reason=decision.reason, figures=figures, labels=labels)
    return {"mode": decision.mode, "reason": decision.reason, **figures}


STAGE = Stage(name="channels", compute=compute, reads={"load": "load"}, sections=("diarization",),
              keys_not_read={"diarization": VOICE_KEYS}, models=("segmentation", "embedding"))
