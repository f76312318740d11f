"""A stage declared once: what it reads, what it depends on, and the function that computes it.

Every stage of emoflow is one module under :mod:`tasks.stages` holding one :class:`Stage`.
The generic runner (:mod:`tasks.pipeline.runner`) does everything else the same way for every
stage: the artefact key (:mod:`tasks.pipeline.registry`), the reuse check, the atomic commit,
progress and the Prefect task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

if TYPE_CHECKING:
    from tasks.core.config import Config
    from tasks.core.progress import ProgressReporter
    from tasks.pipeline.job import RecordingJob

Reads = Mapping[str, str]
"""Role → the name of the stage whose artefact the stage reads in that role."""


@dataclass(frozen=True)
class Stage:
    """One stage of a recording.

    Parameters
    ----------
    name : str
        The stage's name (its artefact folder, its Prefect task, its manifest entry).
    compute : callable
        ``compute(ctx: StageContext) -> facts``: writes the stage's files into ``ctx.out`` and
        returns small JSON facts (the manifest shows them). Decides everything about its output.
    reads : mapping or callable
        Role → stage name of the artefacts it reads, or a function of the config giving that
        mapping (which audio a stage hears depends on the config).
    sections : tuple of str
        The config sections it reads (their values are part of its key).
    keys_not_read : mapping
        Section → keys of that section it does not read (changing them does not recompute it).
    models : tuple of str
        The models it runs (``emotion``, ``segmentation``, ``embedding``, ...): their checksums
        are part of its key.
    key_inputs : callable, optional
        ``key_inputs(config) -> list of str``: anything else outside the recording it depends on
        (the voiceprint store's digest).
    progress_unit : str, optional
        The unit of the progress it reports (``‰``, ``s``); None: it reports none.
    publishes : bool
        Its output is the recording's visible folder (``recordings/<id>/``, named after the
        recording) instead of a content-keyed artefact.
    """

    name: str
    compute: Callable[["StageContext"], dict[str, Any]]
    reads: Reads | Callable[["Config"], Reads] = field(default_factory=dict)
    sections: tuple[str, ...] = ()
    keys_not_read: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    models: tuple[str, ...] = ()
    key_inputs: Callable[["Config"], Sequence[str]] | None = None
    progress_unit: str | None = None
    publishes: bool = False

    def inputs(self, config: "Config") -> dict[str, str]:
        """Role → stage name of what it reads under ``config``."""
        return dict(self.reads(config) if callable(self.reads) else self.reads)

    @property
    def module(self) -> str:
        """The module that declares the stage (its code version starts there)."""
        return self.compute.__module__


@dataclass
class StageContext:
    """What a stage's ``compute`` gets: the job, the folders it reads (by role) and where to write."""

    job: "RecordingJob"
    stage: Stage
    out: Path
    inputs: dict[str, Path]

    def __getitem__(self, role: str) -> Path:
        """The artefact folder read in ``role``."""
        return self.inputs[role]

    @property
    def config(self) -> "Config":
        return self.job.cfg

    def progress(self) -> "ProgressReporter | None":
        """A reporter for this recording and stage (None when the stage declares no unit)."""
        if self.stage.progress_unit is None:
            return None
        from tasks.core.progress import ProgressReporter

        return ProgressReporter(out_dir=self.job.out_dir, recording_id=self.job.recording_id, stage=self.stage.name,
                                unit=self.stage.progress_unit)
