"""voices: each speaker's voice vector, and the enrolled name it matches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tasks.core.config import Config
from tasks.pipeline import layout
from tasks.pipeline.stage import Stage, StageContext
from tasks.pipeline.heard import audio_stage


def reads(config: Config) -> dict[str, str]:
    return {"diarization": "diarize", "channels": "channels", "audio": audio_stage(config, heard_by="diarization")}


def known_speakers(config: Config) -> list[str]:
    """The voiceprint store's digest: enrolling or removing a voice names speakers anew."""
    from tasks.speakers.linking import store_digest

    return [store_digest(config.diarization.known_speakers)]


def compute(ctx: StageContext) -> dict[str, Any]:
    """``voices.npz`` (label → vector, each speaker heard in their own audio) and
    ``speakers.json`` (label → the enrolled name it matches, else itself)."""
    from tasks.diarization.rttm import parse_rttm
    from tasks.models.hub import resolve
    from tasks.speakers.campplus import load_embedding_model
    from tasks.speakers.voiceprints import load_voiceprints, name_speakers, speaker_centroids

    config = ctx.config.diarization
    annotation = next(iter(parse_rttm(layout.read_rttm_text(ctx["diarization"])).values()), None)
    centroids: dict[str, np.ndarray] = {}
    if annotation is not None and annotation.labels():
        embedder = load_embedding_model(config.embedding_model, config.device)
        heard = layout.HeardAudio(audio=ctx["audio"], channels=ctx["channels"])
        if not heard.split:
            centroids = speaker_centroids(np.asarray(heard.mix()), annotation, embedder=embedder)
        else:
            centroids = speaker_centroids(np.asarray(heard.channels()), annotation, embedder=embedder,
                                          channel_of=heard.channel_of)
    labels = sorted(annotation.labels(), key=str) if annotation is not None else []
    names = {label: label for label in labels}
    if config.known_speakers and centroids:
        sha = resolve(config.embedding_model, kind="embedding").sha256
        voiceprints = load_voiceprints(store=Path(config.known_speakers).expanduser(), model_sha256=sha)
        names.update(name_speakers(centroids, voiceprints, threshold=config.known_threshold))
    layout.write_voices(ctx.out, centroids=centroids, names=names)
    return {"speakers": len(labels), "embedded": len(centroids),
            "named": {k: v for k, v in names.items() if k != v}}


STAGE = Stage(name="voices", compute=compute, reads=reads, sections=("diarization",), models=("embedding",),
              key_inputs=known_speakers)
