"""One recording's work order and what a stage reports back: small, picklable records."""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tasks.core.config import Config
from tasks.core.records import Recording
from tasks.pipeline.artefacts import ArtefactStore

DEFAULT_REGISTRY = "tasks.stages:REGISTRY"
"""The stages emoflow runs, as ``module:attribute`` (:func:`tasks.pipeline.registry.load_registry`)."""


@dataclass(frozen=True)
class RecordingJob:
    """Everything a stage needs to know about one recording: the
    :class:`~tasks.core.records.Recording`, where the run writes, its config, the artefact keys,
    the models and the registry of stages (by name, so a job pickles to Dask workers)."""

    recording: Recording
    out_dir: str
    config: dict[str, Any]
    keys: dict[str, str]
    models: dict[str, dict[str, Any]]
    registry: str = DEFAULT_REGISTRY

    @property
    def recording_id(self) -> str:
        return self.recording.recording_id

    @property
    def source_path(self) -> str:
        return self.recording.source_path

    @property
    def sha256(self) -> str:
        return self.recording.sha256

    @functools.cached_property
    def cfg(self) -> Config:
        """The validated config: validated on first use, then kept on this job object (a frozen
        dataclass without slots, so the cache lives in its ``__dict__``)."""
        return Config.model_validate(self.config)

    def __getstate__(self) -> dict[str, Any]:
        """Pickles (Dask, Prefect) carry the plain ``config`` only; the receiver validates it once."""
        return {k: v for k, v in self.__dict__.items() if k != "cfg"}

    @property
    def store(self) -> ArtefactStore:
        return ArtefactStore(Path(self.out_dir) / ".emoflow" / "artefacts")

    @property
    def recording_dir(self) -> Path:
        """The recording's visible folder, ``<out>/recordings/<id>``."""
        return Path(self.out_dir) / "recordings" / self.recording_id

    def artefact(self, stage: str) -> Path:
        """The folder of ``stage``'s artefact under this job's key (it must exist and match what
        was committed: a damaged one is discarded and this raises)."""
        path = self.store.get(stage, self.keys[stage])
        if path is None:
            raise RuntimeError(f"{self.recording_id}: artefact of stage {stage!r} is missing or damaged "
                               "(it is computed again on the next run)")
        return path


@dataclass
class StageReport:
    """What a stage did for one recording."""

    recording_id: str
    stage: str
    status: str  # computed | reused
    seconds: float
    facts: dict[str, Any] = field(default_factory=dict)
    discarded: str | None = None
    """Why an earlier artefact of this stage was found damaged and computed again (None: it was not)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
