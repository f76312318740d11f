"""The stages of one recording, as plain functions over keyed artefacts.

Each ``run_<stage>(job)`` reuses the stage's artefact when its key is unchanged, otherwise
reads the previous stage's artefact from disk, calls the stage function from ``tasks/``, and
commits its own artefact atomically. They return a small :class:`StageReport`; the Prefect
tasks in :mod:`flows.pipeline` are thin wrappers around them.
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tasks.artefacts import ArtefactStore, source_hash, stage_key
from tasks.config import Config
from tasks.records import EmotionResult, Recording, Segment, Turn, segment_id

SEGMENT_FIELDS = ("speaker", "start", "end", "status")
"""What a segment artefact stores per segment (ids are derived when it is read)."""

TASKS_DIR = Path(__file__).resolve().parent.parent / "tasks"
# This module reads and writes every stage's artefact files, so its source is part of every
# stage's code version (a change of artefact layout here must not reuse old artefacts).
RECORDING_MODULE = Path(__file__).resolve()
STAGES: tuple[str, ...] = ("load", "denoise", "diarize", "segment", "emotion", "screen", "export")
# The modules whose source is each stage's code version.
STAGE_MODULES: dict[str, tuple[str, ...]] = {
    "load": ("audio.py",),
    "denoise": ("denoise.py", "vad.py"),
    "diarize": ("diarize.py", "speaker_embedding.py"),
    "segment": ("segment.py",),
    "emotion": ("emotion.py", "emotion_fast.py"),
    "screen": ("screen.py",),
    "export": ("export.py",),
}
# The config sections each stage reads.
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "load": ("audio",),
    "denoise": ("denoise",),
    "diarize": ("diarization",),
    "segment": ("segmentation",),
    "emotion": ("emotion",),
    "screen": ("screen", "drilldown"),
    "export": ("export",),
}


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
        """What ``recordings/<id>/.export-key`` must say for the folder to be reused: the export
        key and the names export writes (a renamed or moved input is exported anew)."""
        return stage_key(self.keys["export"], self.recording_id, self.source_path)

    @property
    def recording_dir(self) -> Path:
        return Path(self.out_dir) / "recordings" / self.recording_id


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


def reuses_diarization_for_denoise(config: Config) -> bool:
    """Whether the denoiser takes its speech regions from the diarization of the original audio
    (instead of running the segmentation model a second time for voice activity)."""
    return config.denoise.enabled and config.diarization.audio == "original"


def stage_dependencies(config: Config) -> dict[str, tuple[str, ...]]:
    """The stages whose artefacts each stage reads (its key includes theirs), in an order where
    every stage comes after what it reads."""
    diarized = "denoise" if config.diarization.audio == "denoised" else "load"
    heard = "denoise" if config.emotion.audio == "denoised" else "load"
    if reuses_diarization_for_denoise(config):
        first = {"load": (), "diarize": ("load",), "denoise": ("load", "diarize")}
    else:
        first = {"load": (), "denoise": ("load",), "diarize": (diarized,)}
    return {
        **first,
        "segment": ("diarize",),
        "emotion": ("segment", heard),
        "screen": ("emotion",),
        "export": ("screen", "denoise"),  # SNR facts and denoised.wav come from denoise
    }


def compute_keys(*, sha256: str, config: Config, models: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The artefact key of every stage: the keys of what it reads (the input's content hash for
    ``load``), its config sections, model checksums and code version.

    So a change reruns exactly the stages downstream of it: ``screen.threshold`` reruns screen
    and export; ``denoise.*`` reruns denoise, emotion (when it hears denoised audio), screen and
    export, but not diarization of the original audio.
    """
    keys: dict[str, str] = {}
    model_of = {"denoise": ("segmentation",), "diarize": ("segmentation", "embedding"), "emotion": ("emotion",)}
    for stage, deps in stage_dependencies(config).items():
        sections = {s: config.section_hash(s) for s in STAGE_SECTIONS[stage]}
        model_shas = [models.get(m, {}).get("sha256", "") for m in model_of.get(stage, ())]
        code = source_hash(*(TASKS_DIR / m for m in STAGE_MODULES[stage]), RECORDING_MODULE)
        upstream = [keys[d] for d in deps] or [sha256]
        keys[stage] = stage_key(stage, upstream, sections, model_shas, code)
    return keys


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


def _json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1, ensure_ascii=False))


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------------
# load


def run_load(job: RecordingJob) -> StageReport:
    """Decode the input to 16 kHz mono float32 (``audio.npy`` + ``info.json``)."""
    from tasks.audio import load_audio

    def compute(tmp: Path) -> dict[str, Any]:
        audio, info = load_audio(job.source_path, config=job.cfg.audio)
        np.save(tmp / "audio.npy", audio)
        _json(tmp / "info.json", {k: v for k, v in info.to_dict().items() if k != "path"})
        return {"duration": info.duration, "silent": info.silent, "warnings": info.warnings,
                "format": {k: getattr(info, k) for k in ("container", "codec", "sample_rate", "channels",
                                                          "sample_format", "bits_per_sample", "header_duration")}}

    return _run(job, "load", compute)


def load_original(job: RecordingJob, *, mmap: bool = True) -> np.ndarray:
    return np.load(job.artefact("load") / "audio.npy", mmap_mode="r" if mmap else None)


def load_denoised(job: RecordingJob, *, mmap: bool = True) -> np.ndarray:
    path = job.artefact("denoise") / "denoised.npy"
    if not path.is_file():  # denoise disabled: the original passes through
        return load_original(job, mmap=mmap)
    return np.load(path, mmap_mode="r" if mmap else None)


def diarized_audio(job: RecordingJob) -> np.ndarray:
    """The audio diarization (and segment splitting) works on: ``diarization.audio``."""
    return load_denoised(job) if job.cfg.diarization.audio == "denoised" else load_original(job)


# ---------------------------------------------------------------------------------------------
# denoise


def run_denoise(job: RecordingJob) -> StageReport:
    """Denoise (``denoised.npy``) and estimate SNR before and after."""

    def compute(tmp: Path) -> dict[str, Any]:
        cfg = job.cfg
        if not cfg.denoise.enabled:
            return {"method": "none", "snr_before_db": None, "snr_after_db": None}
        from tasks.denoise import denoise

        audio = load_original(job, mmap=False)
        speech = None
        if reuses_diarization_for_denoise(cfg):  # the diarization already knows where speech is
            data = _read_json(job.artefact("diarize") / "turns.json")
            speech = sorted((t["start"], t["end"]) for t in data["turns"])
            speech += [tuple(o) for o in data["overlaps"]]
            speech.sort()
        clean, stats = denoise(audio, config=cfg.denoise, speech=speech)
        np.save(tmp / "denoised.npy", clean.astype(np.float32, copy=False))
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(stats).items()}

    return _run(job, "denoise", compute)


# ---------------------------------------------------------------------------------------------
# diarize


def run_diarize(job: RecordingJob) -> StageReport:
    """Who spoke when: ``diarization.rttm`` (overlap-aware) and ``turns.json``."""

    def compute(tmp: Path) -> dict[str, Any]:
        from tasks.diarize import ANONYMOUS_URI, diarize, write_rttm
        from tasks.progress import ProgressReporter

        audio = np.asarray(diarized_audio(job))
        progress = ProgressReporter(out_dir=job.out_dir, recording_id=job.recording_id, stage="diarize", unit="‰")
        result = diarize(audio, recording_id=ANONYMOUS_URI, config=job.cfg.diarization, progress=progress)
        write_rttm(result.annotation, tmp / "diarization.rttm", uri=ANONYMOUS_URI)
        turns = [t.to_dict() for t in result.turns()]
        overlaps = [list(o) for o in result.overlaps()]
        _json(tmp / "turns.json", {"turns": turns, "overlaps": overlaps})
        speakers = sorted({t["speaker"] for t in turns})
        speech = sum(t["end"] - t["start"] for t in turns)
        return {"speakers": speakers, "turns": len(turns), "speech_s": round(speech, 3),
                "overlap_s": round(sum(e - s for s, e in overlaps), 3)}

    return _run(job, "diarize", compute)


# ---------------------------------------------------------------------------------------------
# segment


def run_segment(job: RecordingJob) -> StageReport:
    """Single-speaker segments of ``min_s``–``max_s`` (``segments.json``)."""

    def compute(tmp: Path) -> dict[str, Any]:
        from tasks.segment import build_segments

        data = _read_json(job.artefact("diarize") / "turns.json")
        turns = [Turn.from_dict(t) for t in data["turns"]]
        overlaps = [tuple(o) for o in data["overlaps"]]
        audio = np.asarray(diarized_audio(job))
        segments = build_segments(turns, recording_id=job.recording_id, config=job.cfg.segmentation,
                                  overlaps=overlaps, audio=audio)
        # stored without ids: read_segments names them after the recording that reads them
        _json(tmp / "segments.json", [{k: s.to_dict()[k] for k in SEGMENT_FIELDS} for s in segments])
        counts = {st: sum(1 for s in segments if s.status == st) for st in ("ok", "too_short", "overlap")}
        facts: dict[str, Any] = {"segments": len(segments), **counts}
        if not segments:
            facts["note"] = "no speech found: zero segments"
        return facts

    return _run(job, "segment", compute)


def read_segments(job: RecordingJob) -> list[Segment]:
    """The recording's segments, with ids of the recording as it is named in this run."""
    rid = job.recording_id
    return [Segment(segment_id=segment_id(rid, i), recording_id=rid, **s)
            for i, s in enumerate(_read_json(job.artefact("segment") / "segments.json"))]


# ---------------------------------------------------------------------------------------------
# emotion


def run_emotion(job: RecordingJob) -> StageReport:
    """One batched pass of the emotion model over the ``ok`` segments."""

    def compute(tmp: Path) -> dict[str, Any]:
        from tasks.audio import compute_num_samples
        from tasks.emotion import get_emotion_model
        from tasks.progress import ProgressReporter

        cfg = job.cfg
        indexed = [(i, s) for i, s in enumerate(read_segments(job)) if s.status == "ok"]
        segments = [s for _, s in indexed]
        audio = load_denoised(job) if cfg.emotion.audio == "denoised" else load_original(job)
        sr = cfg.audio.sample_rate
        clips = [np.asarray(audio[compute_num_samples(s.start, sample_rate=sr) :
                                  compute_num_samples(s.end, sample_rate=sr)], dtype=np.float32)
                 for s in segments]
        # Batching policy (GPU: batch_seconds buckets; CPU: one clip per forward, faster there)
        # is the engine's, from cfg.emotion.
        model = get_emotion_model(cfg.emotion, max_s=cfg.segmentation.max_s)
        progress = ProgressReporter(out_dir=job.out_dir, recording_id=job.recording_id, stage="emotion", unit="s")
        results = model.analyse(clips, progress=progress) if clips else []
        n = len(results)
        scores = np.stack([r.scores for r in results]).astype(np.float32) if n else np.zeros((0, 9), np.float32)
        emb = (np.stack([r.embedding for r in results]).astype(np.float32) if n
               else np.zeros((0, model.embed_dim), np.float32))
        lengths = [r.frame_logits.shape[0] for r in results]
        logits = (np.concatenate([r.frame_logits for r in results]).astype(np.float32) if n
                  else np.zeros((0, 9), np.float32))
        np.save(tmp / "scores.npy", scores)
        np.save(tmp / "embeddings.npy", emb)
        np.save(tmp / "frame_logits.npy", logits)
        np.save(tmp / "frame_offsets.npy", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
        _json(tmp / "segment_index.json", [i for i, _ in indexed])  # positions in segments.json
        return {"segments": n, "seconds_of_audio": round(sum(c.size for c in clips) / sr, 3),
                "model_sha256": model.sha256}

    return _run(job, "emotion", compute)


# ---------------------------------------------------------------------------------------------
# screen + drill-down


def run_screen(job: RecordingJob) -> StageReport:
    """Labels and confidences; frame curves and their summary for drilled segments."""

    def compute(tmp: Path) -> dict[str, Any]:
        from tasks.emotion import frame_scores_from_logits
        from tasks.screen import is_drilled, summarise_curve

        cfg = job.cfg
        art = job.artefact("emotion")
        scores = np.load(art / "scores.npy")
        logits = np.load(art / "frame_logits.npy")
        offsets = np.load(art / "frame_offsets.npy")
        index = _read_json(art / "segment_index.json")
        segments = read_segments(job)
        rows, frames = [], {}
        for i, pos in enumerate(index):
            seg = segments[pos]
            result = EmotionResult(seg.segment_id, tuple(float(v) for v in scores[i]))
            drilled = cfg.drilldown.enabled and is_drilled(result.confidence, threshold=cfg.screen.threshold)
            row: dict[str, Any] = {**result.to_dict(), "index": pos, "drilled": bool(drilled)}
            del row["segment_id"]  # rows are keyed by position: the artefact holds no names
            if drilled:
                curve = frame_scores_from_logits(logits[offsets[i] : offsets[i + 1]],
                                                 smooth_s=cfg.drilldown.smooth_s, hop_s=cfg.drilldown.frame_hop_s)
                frames[str(pos)] = curve.astype(np.float32)
                row["drilldown"] = summarise_curve(curve, hop_s=cfg.drilldown.frame_hop_s, offset_s=seg.start,
                                                   min_run_s=cfg.drilldown.min_run_s)
            rows.append(row)
        _json(tmp / "screen.json", rows)
        if frames:
            np.savez(tmp / "frames.npz", **frames)
        return {"screened": len(rows), "drilled": len(frames)}

    return _run(job, "screen", compute)


# ---------------------------------------------------------------------------------------------
# export


def run_export(job: RecordingJob) -> StageReport:
    """Write the recording's contract files into ``recordings/<id>/``."""
    from tasks.export import export_recording

    t0 = time.perf_counter()
    marker = job.recording_dir / ".export-key"
    if marker.is_file() and marker.read_text().strip() == job.export_marker:
        return StageReport(job.recording_id, "export", "reused", time.perf_counter() - t0, {})
    facts = export_recording(job)
    return StageReport(job.recording_id, "export", "computed", time.perf_counter() - t0, facts)


STAGE_FUNCTIONS: dict[str, Callable[[RecordingJob], StageReport]] = {
    "load": run_load, "denoise": run_denoise, "diarize": run_diarize, "segment": run_segment,
    "emotion": run_emotion, "screen": run_screen, "export": run_export,
}
