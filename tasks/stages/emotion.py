"""emotion: one pass of emotion2vec+ over the ``ok`` segments (scores, frame logits, embeddings)."""

from __future__ import annotations

from typing import Any

from tasks.core.config import Config
from tasks.pipeline import layout
from tasks.pipeline.stage import Stage, StageContext
from tasks.pipeline.heard import audio_stage


def reads(config: Config) -> dict[str, str]:
    return {"segments": "segment", "channels": "channels", "audio": audio_stage(config, heard_by="emotion")}


def compute(ctx: StageContext) -> dict[str, Any]:
    """Scores, frame logits and embeddings of the ``ok`` segments, each cut from the speaker's
    own audio (:class:`~tasks.pipeline.layout.HeardAudio`)."""
    from tasks.emotion.model import get_emotion_model, score_segments

    scored = [(i, s) for i, s in enumerate(layout.read_segments(ctx["segments"], recording_id="recording"))
              if s.status == "ok"]
    # Batching policy (GPU: batch_seconds buckets; CPU: one clip per forward) is the engine's.
    model = get_emotion_model(ctx.config.emotion, max_s=ctx.config.segmentation.max_s)
    heard = layout.HeardAudio(audio=ctx["audio"], channels=ctx["channels"])
    results = score_segments(model, audio=heard.by_speaker(), segments=[s for _, s in scored],
                             progress=ctx.progress())
    layout.write_emotion(ctx.out, positions=[i for i, _ in scored], results=results, embed_dim=model.embed_dim)
    return {"segments": len(results), "seconds_of_audio": round(sum(s.duration for _, s in scored), 3),
            "model_sha256": model.sha256, "heard": "channel" if heard.split else "mix"}


STAGE = Stage(name="emotion", compute=compute, reads=reads, sections=("emotion",), models=("emotion",),
              progress_unit="s")
