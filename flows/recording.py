"""The stages of one recording, orchestrated over keyed artefacts.

Each ``run_<stage>(job)`` reuses the stage's artefact when its key is unchanged; otherwise it
hands the stage function in ``tasks/`` the artefact folders it reads and a fresh folder to write,
and commits that folder atomically. Every decision (which audio a stage hears, what is drilled,
what is exported) is made in ``tasks/``, whose source is each stage's code version
(:mod:`tasks.stages`); this module only picks folders. They return a small
:class:`StageReport`; the Prefect tasks in :mod:`flows.pipeline` are thin wrappers around them.
"""

from __future__ import annotations

import functools
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tasks import layout
from tasks.artefacts import ArtefactStore, stage_key
from tasks.config import Config
from tasks.records import Recording, Segment
from tasks.stages import STAGES, compute_keys, reuses_diarization_for_denoise, stage_dependencies

__all__ = ["RecordingJob", "StageReport", "STAGES", "STAGE_FUNCTIONS", "compute_keys", "stage_dependencies",
           "read_segments"]


@dataclass(frozen=True)
class RecordingJob:
    """Everything a stage needs to know about one recording (small and picklable): the
    :class:`~tasks.records.Recording`, where the run writes, its config and the artefact keys."""

    recording: Recording
    out_dir: str
    config: dict[str, Any]
    keys: dict[str, str]
    models: dict[str, dict[str, Any]]

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

    def artefact(self, stage: str) -> Path:
        path = self.store.get(stage, self.keys[stage])
        if path is None:
            raise RuntimeError(f"{self.recording_id}: artefact of stage {stage!r} is missing")
        return path

    @property
    def export_marker(self) -> str:
        """What the exported folder must be made from to be reused: the export key and the
        names export writes (a renamed or moved input is exported anew)."""
        return stage_key(self.keys["export"], self.recording_id, self.source_path)

    @property
    def recording_dir(self) -> Path:
        return Path(self.out_dir) / "recordings" / self.recording_id

    def reusable(self, stage: str) -> bool:
        """Whether ``stage``'s output is already on disk under its key (a cheap file check)."""
        if stage == "export":
            from tasks.export import exported_facts

            return exported_facts(self.recording_dir, key=self.export_marker) is not None
        return self.store.get(stage, self.keys[stage]) is not None


@dataclass
class StageReport:
    """What a stage did for one recording."""

    recording_id: str
    stage: str
    status: str  # computed | reused
    seconds: float
    facts: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _run(job: RecordingJob, stage: str, compute: Callable[[Path], dict[str, Any]]) -> StageReport:
    store, key = job.store, job.keys[stage]
    t0 = time.perf_counter()
    if store.get(stage, key) is not None:
        facts = store.meta(stage, key).get("facts", {})
        return StageReport(job.recording_id, stage, "reused", time.perf_counter() - t0, facts)
    tmp = store.begin(stage, key)
    try:
        facts = compute(tmp)
        seconds = time.perf_counter() - t0
        # content-keyed: the artefact holds no recording name (the same audio under another
        # name reuses it; names are applied by export)
        store.commit(stage, key, tmp, {"stage": stage, "key": key, "seconds": seconds, "facts": facts})
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return StageReport(job.recording_id, stage, "computed", seconds, facts)


def _progress(job: RecordingJob, stage: str, unit: str):  # type: ignore[no-untyped-def]
    from tasks.progress import ProgressReporter

    return ProgressReporter(out_dir=job.out_dir, recording_id=job.recording_id, stage=stage, unit=unit)


def _reads(job: RecordingJob, stage: str) -> list[Path]:
    """The artefact folders ``stage`` reads, in :func:`~tasks.stages.stage_dependencies` order."""
    return [job.artefact(d) for d in stage_dependencies(job.cfg)[stage]]


def audio_folder(job: RecordingJob, folder: Path) -> Path:
    """``folder`` if it holds audio, else the load artefact (a denoise artefact with denoising
    off holds none: the original passes through)."""
    return folder if layout.has_audio(folder) else job.artefact("load")


def read_segments(job: RecordingJob) -> list[Segment]:
    """The recording's segments, with ids of the recording as it is named in this run."""
    return layout.read_segments(job.artefact("segment"), recording_id=job.recording_id)


def run_load(job: RecordingJob) -> StageReport:
    """Decode the input to 16 kHz mono float32."""
    from tasks.audio import compute_load

    return _run(job, "load", lambda out: compute_load(source_path=job.source_path, config=job.cfg.audio, out=out))


def run_channels(job: RecordingJob) -> StageReport:
    """One mix, or one speaker per channel."""
    from tasks.channels import compute_channels

    return _run(job, "channels", lambda out: compute_channels(load=_reads(job, "channels")[0],
                                                              config=job.cfg.diarization, out=out))


def run_denoise(job: RecordingJob) -> StageReport:
    """Denoise and estimate SNR before and after."""
    from tasks.denoise import compute_denoise

    def compute(out: Path) -> dict[str, Any]:
        reads = _reads(job, "denoise")
        diarization = reads[2] if reuses_diarization_for_denoise(job.cfg) else None
        return compute_denoise(original=reads[0], channels=reads[1], diarization=diarization,
                               config=job.cfg.denoise, out=out)

    return _run(job, "denoise", compute)


def run_diarize(job: RecordingJob) -> StageReport:
    """Who spoke when."""
    from tasks.diarize import compute_diarization

    def compute(out: Path) -> dict[str, Any]:
        channels, audio = _reads(job, "diarize")
        return compute_diarization(audio=audio_folder(job, audio), channels=channels, config=job.cfg.diarization,
                                   out=out, progress=_progress(job, "diarize", "‰"))

    return _run(job, "diarize", compute)


def run_voices(job: RecordingJob) -> StageReport:
    """Each speaker's voice vector, and the enrolled names they match."""
    from tasks.voices import compute_voices

    def compute(out: Path) -> dict[str, Any]:
        diarization, channels, audio = _reads(job, "voices")
        return compute_voices(diarization=diarization, channels=channels, audio=audio_folder(job, audio),
                              config=job.cfg.diarization, out=out)

    return _run(job, "voices", compute)


def run_segment(job: RecordingJob) -> StageReport:
    """Single-speaker segments of ``min_s``–``max_s``."""
    from tasks.segment import compute_segments

    def compute(out: Path) -> dict[str, Any]:
        diarization, audio = _reads(job, "segment")
        return compute_segments(diarization=diarization, audio=audio_folder(job, audio),
                                config=job.cfg.segmentation, out=out)

    return _run(job, "segment", compute)


def run_emotion(job: RecordingJob) -> StageReport:
    """One batched pass of the emotion model over the ``ok`` segments."""
    from tasks.emotion import compute_emotion

    def compute(out: Path) -> dict[str, Any]:
        segments, channels, audio = _reads(job, "emotion")
        return compute_emotion(segments=segments, channels=channels, audio=audio_folder(job, audio),
                               config=job.cfg.emotion,
                               max_s=job.cfg.segmentation.max_s, out=out, progress=_progress(job, "emotion", "s"))

    return _run(job, "emotion", compute)


def run_screen(job: RecordingJob) -> StageReport:
    """Labels and confidences; frame curves and their summary for drilled segments."""
    from tasks.screen import compute_screen

    def compute(out: Path) -> dict[str, Any]:
        segments, emotion = _reads(job, "screen")
        return compute_screen(segments=segments, emotion=emotion, screen=job.cfg.screen,
                              drilldown=job.cfg.drilldown, out=out)

    return _run(job, "screen", compute)


def run_export(job: RecordingJob) -> StageReport:
    """Write the recording's contract files into ``recordings/<id>/`` (reused, with its facts,
    when the folder was made from the same artefacts under the same names)."""
    from tasks.export import export_recording, exported_facts

    t0 = time.perf_counter()
    folder, key = job.recording_dir, job.export_marker
    facts = exported_facts(folder, key=key)
    if facts is not None:
        return StageReport(job.recording_id, "export", "reused", time.perf_counter() - t0, facts)
    diarization, segment_dir, screen, emotion, denoise, voices = _reads(job, "export")
    segments = layout.read_segments(segment_dir, recording_id=job.recording_id)
    art = layout.EmotionArtefact(emotion)
    vectors = art.embeddings()

    def embedding(pos: int) -> np.ndarray | None:
        row = art.row(pos)
        return None if row is None else vectors[row]

    cfg = job.cfg
    facts = export_recording(
        recording=job.recording, folder=folder, key=key, rttm=layout.read_rttm_text(diarization),
        segments=segments, results=layout.read_screen(screen, segments=segments),
        curves=layout.read_frame_curves(screen), embeddings=embedding,
        snr=job.store.meta("denoise", job.keys["denoise"]).get("facts", {}), model=job.models.get("emotion", {}),
        config=cfg.export, threshold=cfg.screen.threshold, hop_s=cfg.drilldown.frame_hop_s,
        denoised=lambda: layout.read_audio(audio_folder(job, denoise)), speaker_names=layout.read_voices(voices)[1])
    return StageReport(job.recording_id, "export", "computed", time.perf_counter() - t0, facts)


STAGE_FUNCTIONS: dict[str, Callable[[RecordingJob], StageReport]] = {
    "load": run_load, "channels": run_channels, "denoise": run_denoise, "diarize": run_diarize,
    "voices": run_voices, "segment": run_segment, "emotion": run_emotion, "screen": run_screen, "export": run_export,
}
