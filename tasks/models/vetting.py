"""Every model a config needs, resolved to local files and vetted before the first recording.

Fails fast with one :class:`~tasks.core.errors.RunError` line naming the file at fault and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.core.config import Config
from tasks.core.errors import RunError, first_line


CHECKS = {"emotion": "tasks.emotion.model:check_emotion_model",
          "transcribe": "tasks.transcription.sensevoice:check_sensevoice",
          "segmentation": "tasks.models.checkpoints:read_pyannote_checkpoint",
          "embedding": "tasks.speakers.campplus:check_campplus"}
"""Model kind → the function (``module:name``) that vets its files."""


def check_models(models: dict[str, dict[str, Any]]) -> None:
    """Vet resolved model files before any recording is processed: each checkpoint safe to read
    (no code runs from it) and fitting its model, emotion2vec's config.yaml and tokens.txt usable.

    Raises
    ------
    ModelUnavailableError
        One line: the file at fault and why.
    """
    import importlib

    from tasks.models.hub import already_vetted, mark_vetted

    for kind, check in CHECKS.items():
        record = models.get(kind)
        if record is None or already_vetted(kind, record):
            continue
        module, _, name = check.partition(":")  # imported only when a model must be vetted
        getattr(importlib.import_module(module), name)(record["path"])
        mark_vetted(kind, record)


def resolve_models(config: Config, *, load: bool = False) -> dict[str, dict[str, Any]]:
    """Resolve every model the config needs and vet its files (:func:`check_models`), then
    optionally load them; fail fast with a one-line :class:`RunError`."""
    from tasks.models.hub import ModelUnavailableError, resolve
    from tasks.models.testmodels import is_test_model

    out: dict[str, dict[str, Any]] = {}
    try:
        emotion = resolve(config.emotion.model, kind="emotion", hub=config.emotion.hub)
        out["emotion"] = {"id": config.emotion.model, "path": emotion.path, "sha256": emotion.sha256,
                          "source": emotion.source, "is_test_model": is_test_model(emotion.path)}
        if config.transcribe.enabled:
            sv = resolve(config.transcribe.model, kind="transcribe", hub=config.transcribe.hub)
            out["transcribe"] = {"id": config.transcribe.model, "path": sv.path, "sha256": sv.sha256,
                                 "source": sv.source, "is_test_model": is_test_model(sv.path)}
        if config.diarization.pipeline == "offline":
            seg = resolve(config.diarization.segmentation_model, kind="segmentation")
            emb = resolve(config.diarization.embedding_model, kind="embedding")
            out["segmentation"] = {"id": seg.ref, "path": seg.path, "sha256": seg.sha256, "source": seg.source}
            out["embedding"] = {"id": emb.ref, "path": emb.path, "sha256": emb.sha256, "source": emb.source}
        else:
            out["diarization_pipeline"] = {"id": config.diarization.pipeline, "path": "", "sha256": "",
                                           "source": "pyannote"}
        check_models(out)
        if config.diarization.known_speakers and "embedding" in out:
            from tasks.speakers.voiceprints import SpeakerError, load_voiceprints

            try:  # a missing store or a voiceprint of another CAM++ model stops the run before it starts
                load_voiceprints(store=Path(config.diarization.known_speakers).expanduser(),
                                 model_sha256=out["embedding"]["sha256"])
            except SpeakerError as exc:
                raise RunError(str(exc)) from None
    except ModelUnavailableError as exc:
        raise RunError(str(exc)) from None
    if load:
        try:
            from tasks.emotion.model import get_emotion_model

            get_emotion_model(config.emotion)
            if config.transcribe.enabled:
                from tasks.transcription.sensevoice import get_sensevoice

                get_sensevoice(config.transcribe)
            from tasks.diarization.pipeline import load_diarization_pipeline

            load_diarization_pipeline(config.diarization)
        except ModelUnavailableError as exc:  # one line naming the file already
            raise RunError(str(exc)) from None
        except Exception as exc:  # loading errors are reported, not raised as tracebacks
            raise RunError(f"model failed to load: {type(exc).__name__}: {first_line(exc, limit=300)}") from None
    return out
