"""The stages of a recording, one module each; the registry lists them in pipeline order.

Adding a stage is one new module holding a :class:`~tasks.pipeline.stage.Stage` and one line
here (see docs/architecture.md).
"""

from tasks.pipeline.registry import StageRegistry
from tasks.stages import (channels, denoise, diarize, emotion, export, load, screen, segment, transcribe,
                          voices)

REGISTRY = StageRegistry([
    load.STAGE,
    channels.STAGE,
    denoise.STAGE,
    diarize.STAGE,
    voices.STAGE,
    segment.STAGE,
    emotion.STAGE,
    transcribe.STAGE,
    screen.STAGE,
    export.STAGE,
])
