"""screen / drill down: labels and confidences; frame curves where the top score is low."""

from __future__ import annotations

from typing import Any

from tasks.pipeline import layout
from tasks.pipeline.stage import Stage, StageContext


def compute(ctx: StageContext) -> dict[str, Any]:
    """``screen.json`` (results by segment position) and the drilled segments' curves (``frames.npz``)."""
    from tasks.emotion.screen import screen_segments

    segs = layout.read_segments(ctx["segments"], recording_id="recording")
    art = layout.EmotionArtefact(ctx["emotion"])
    results, curves = screen_segments(art.results(segs), segments=segs, positions=art.positions,
                                      frame_logits=art.frame_logits, screen=ctx.config.screen,
                                      drilldown=ctx.config.drilldown)
    layout.write_screen(ctx.out, positions=art.positions, results=results, curves=curves)
    return {"screened": len(results), "drilled": len(curves)}


STAGE = Stage(name="screen", compute=compute, reads={"segments": "segment", "emotion": "emotion"},
              sections=("screen", "drilldown"))
