"""Speaker diarization: who speaks when, as a ``pyannote.core.Annotation`` and an RTTM file.

Two back ends, chosen by ``diarization.pipeline``:

``offline`` (default)
    pyannote.audio's ``SpeakerDiarization`` pipeline with local weights only:
    segmentation-3.0 (powerset, 10 s windows), CAM++ embeddings (:mod:`tasks.speakers.campplus`,
    masks honoured so overlapped frames are excluded) and pyannote's agglomerative clustering
    (centroid linkage, cosine) with a threshold tuned for CAM++ on the AMI debug train set
    (``benchmarks/diarization_der.py``), then an embedding resegmentation of the single-speaker
    speech with 1 s CAM++ windows (:mod:`tasks.diarization.resegment`), then a refinement by Silero VAD
    (:mod:`tasks.diarization.refine`: turn edges moved to where the voice starts and stops, pauses cut,
    speech no speaker holds given the nearest speaker), and last the exclusive diarization is
    settled to one speaker at a time and both are cropped to the audio. pyannote 4 insists on a
    PLDA in ``SpeakerDiarization.__init__`` even for agglomerative clustering, so
    :class:`OfflineSpeakerDiarization` subclasses it with its own ``__init__`` (no PLDA, no
    hub look-ups); its ``apply`` is pyannote's followed by the steps above, so the pipeline's
    output (what the benchmarks score) is exactly what :func:`diarize` returns.

any other value
    A pretrained pyannote pipeline: a hub id (e.g. ``pyannote/speaker-diarization-community-1``,
    token from ``HF_TOKEN``) or a local pipeline directory / ``config.yaml``. When it cannot be
    had, :class:`DiarizationPipelineError` says so in one line and how to switch back.

Audio is passed in memory (``{"waveform": (1, n) tensor, "sample_rate": 16000}``), never decoded
a second time. Loaded models and pipelines are cached per process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

# pyannote 4 sends usage metrics by default; an offline analysis pipeline must not phone home.
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")

import numpy as np
import torch
from pyannote.core import Annotation, Segment

from tasks.core.timebase import SAMPLE_RATE
from tasks.core.config import DiarizationConfig
from tasks.models.hub import ModelUnavailableError, hub_unreachable_reason, resolve
from tasks.models.cache import cached_model
from tasks.speakers.campplus import canonical_embedding_id, load_embedding_model
from tasks.models.devices import resolve_device, torch_threads
from tasks.core.records import Turn

OFFLINE = "offline"
# Agglomerative clustering builds a full distance matrix (n^2/2 float64): cap the number of
# embeddings it clusters (the rest are assigned to the nearest centroid, as pyannote already
# does for the ones it filters out). 6000 -> ~150 MB, reached after ~35 min of 3-speaker talk.
MAX_CLUSTERING_EMBEDDINGS = 6000
# pyannote rounds the per-frame speaker count averaged over the overlapping windows (rint), so a
# second speaker needs to be detected in at least half of them. segmentation-3.0 under-detects
# overlap on AMI (train: 13.2 s of reference overlap in trn09, 7.2 s counted) and missed overlapped
# speech is most of the missed speech there, so a frame already counted as speech gets one more
# speaker when the average exceeds (its floor + this onset). Speech/non-speech keeps rint
# (lowering that threshold too raised false alarms on debug.development: DER 34.5 -> 38.8 %).
# AMI debug, threshold 0.875 (onset 0.5 = pyannote's rounding): train 27.5 -> 27.0 % (0.4: 27.3,
# 0.3: 27.2, 0.1: 26.8), development 34.5 -> 33.9 %, LibriSpeech mixtures unchanged (13.7 %).
OVERLAP_COUNT_ONSET = 0.2
# Where each step that reports progress starts and ends, as a share of the diarization's time
# (CPU, one thread, the 12 AMI debug files: segmentation 0-20 %, speaker embeddings 20-77 %,
# resegmentation 77-93 %, Silero refinement 93-100 %; counting, clustering and reconstruction
# take well under 1 %). Steps a configuration skips are left out and the others stretched.
PROGRESS_STEPS = {"segmentation": (0.0, 0.20), "embeddings": (0.20, 0.77), "resegmentation": (0.77, 0.93),
                  "refinement": (0.93, 1.0)}
PROGRESS_TOTAL = 1000  # progress(done, total) counts thousandths of the diarization



class DiarizationPipelineError(ModelUnavailableError):
    """A pretrained diarization pipeline cannot be loaded; the message is one line."""


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class DiarizationResult:
    """Diarization of one recording.

    ``annotation`` is the full, overlap-aware diarization (what ``diarization.rttm`` holds);
    ``exclusive`` is pyannote's exclusive diarization (at most one speaker at a time), which the
    emotion stage uses when ``exclude_overlap`` is true.
    """

    annotation: Annotation
    exclusive: Annotation
    exclude_overlap: bool = True

    def turns(self) -> list[Turn]:
        """Speaker turns, from ``exclusive`` if ``exclude_overlap`` else ``annotation``, by start."""
        source = self.exclusive if self.exclude_overlap else self.annotation
        turns = [
            Turn(speaker=str(label), start=float(seg.start), end=float(seg.end))
            for seg, _, label in source.itertracks(yield_label=True)
            if seg.duration > 0
        ]
        return sorted(turns, key=lambda t: (t.start, t.end, t.speaker))

    def overlaps(self) -> list[tuple[float, float]]:
        """Regions where two or more speakers talk at once in ``annotation``."""
        overlap = self.annotation.get_overlap().support()
        return [(float(s.start), float(s.end)) for s in overlap if s.duration > 0]

    @property
    def speakers(self) -> list[str]:
        return [str(label) for label in self.annotation.labels()]


# --------------------------------------------------------------------------- devices & models
def _device(device: str) -> torch.device:
    """The torch device ``diarization.device`` names (:func:`tasks.models.devices.resolve_device`)."""
    return torch.device(resolve_device(device, setting="diarization.device"))


def load_segmentation_model(ref: str = "pyannote/segmentation-3.0", device: str = "auto"):
    """pyannote segmentation-3.0 from local files (cached per process and device), its
    checkpoint checked first so that loading it runs no code from the file
    (:func:`tasks.models.checkpoints.load_pyannote_model`)."""
    from tasks.models.checkpoints import load_pyannote_model

    dev = _device(device)
    path = resolve(ref, kind="segmentation").path

    def build():
        return load_pyannote_model(path).to(dev)

    return cached_model(("segmentation", path, str(dev)), build)


def _clustering_class():
    from pyannote.audio.pipelines.clustering import AgglomerativeClustering

    class CappedAgglomerativeClustering(AgglomerativeClustering):
        """pyannote's agglomerative clustering on at most ``max_embeddings`` embeddings.

        Beyond the cap an evenly spaced subset is clustered and every embedding is then
        assigned to the nearest centroid (pyannote's ``assign_embeddings``), which keeps the
        distance matrix, and so the memory, bounded for multi-hour recordings.
        """

        max_embeddings = MAX_CLUSTERING_EMBEDDINGS

        def filter_embeddings(self, embeddings, segmentations=None, min_active_ratio: float = 0.2):
            train, chunk_idx, speaker_idx = super().filter_embeddings(
                embeddings, segmentations=segmentations, min_active_ratio=min_active_ratio
            )
            n = len(train)
            if n > self.max_embeddings:
                keep = np.unique(np.linspace(0, n - 1, self.max_embeddings).round().astype(int))
                train, chunk_idx, speaker_idx = train[keep], chunk_idx[keep], speaker_idx[keep]
            return train, chunk_idx, speaker_idx

    return CappedAgglomerativeClustering


def _offline_pipeline_class():
    from pyannote.audio import Audio
    from pyannote.audio.core.inference import Inference
    from pyannote.audio.core.pipeline import Pipeline
    from pyannote.audio.pipelines.speaker_diarization import SpeakerDiarization
    from pyannote.pipeline.parameter import ParamDict, Uniform

    class OfflineSpeakerDiarization(SpeakerDiarization):
        """pyannote's ``SpeakerDiarization`` with given local models and agglomerative clustering.

        Only ``__init__`` differs from pyannote's: it takes loaded models instead of hub
        references and does not load a PLDA (agglomerative clustering does not use one).
        """

        def __init__(
            self,
            segmentation,
            embedding,
            *,
            segmentation_step: float = 0.1,
            segmentation_batch_size: int = 32,
            embedding_batch_size: int = 32,
            embedding_exclude_overlap: bool = True,
            resegment_window_s: float = 1.0,
            refine: dict[str, Any] | None = None,
        ) -> None:
            Pipeline.__init__(self)
            self.legacy = False
            self.segmentation_model = "local"
            self.segmentation_step = segmentation_step
            self.embedding = "local"
            self.embedding_batch_size = embedding_batch_size
            self.embedding_exclude_overlap = embedding_exclude_overlap
            self.plda = None
            self._plda = None
            self.klustering = "AgglomerativeClustering"
            self.der_variant = {"collar": 0.0, "skip_overlap": False}
            duration = segmentation.specifications.duration
            self._segmentation = Inference(
                segmentation,
                duration=duration,
                step=segmentation_step * duration,
                skip_aggregation=True,
                batch_size=segmentation_batch_size,
            )
            if segmentation.specifications.powerset:
                self.segmentation = ParamDict(min_duration_off=Uniform(0.0, 1.0))
            else:
                self.segmentation = ParamDict(threshold=Uniform(0.1, 0.9), min_duration_off=Uniform(0.0, 1.0))
            self._embedding = embedding
            self._audio = Audio(sample_rate=embedding.sample_rate, mono="downmix")
            self.clustering = _clustering_class()(metric=embedding.metric)
            self._expects_num_speakers = False
            self.overlap_count_onset = OVERLAP_COUNT_ONSET
            self.resegment_window_s = float(resegment_window_s)
            self.refine = dict(refine or {})

        def apply(self, file, num_speakers=None, min_speakers=None, max_speakers=None, hook=None, **kwargs):
            """pyannote's ``apply``, then (each when configured) embedding resegmentation of the
            single-speaker speech (:mod:`tasks.diarization.resegment`) and refinement by a sharper speech
            detector (:mod:`tasks.diarization.refine`); finally the exclusive diarization is settled to one
            speaker at a time and both are cropped to the audio. This is exactly what
            :func:`diarize` returns (and what ``benchmarks/`` score)."""
            output = super().apply(
                file, num_speakers=num_speakers, min_speakers=min_speakers, max_speakers=max_speakers, hook=hook, **kwargs
            )
            if isinstance(output, Annotation):
                return output
            waveform, _ = self._audio(file)
            audio = waveform.reshape(-1).cpu().numpy()
            full, exclusive = output.speaker_diarization, output.exclusive_speaker_diarization
            if self.resegment_window_s > 0:
                from tasks.diarization.resegment import resegment

                def progress(done: float, total: float) -> None:  # reported like pyannote's own steps
                    hook("resegmentation", None, file=file, completed=done, total=total)

                full, exclusive = resegment(
                    audio, full, exclusive,
                    embedding=self._embedding,
                    window_s=self.resegment_window_s,
                    hop_s=self.resegment_window_s / 4,
                    progress=progress if hook is not None else None,
                )
            detector = self.refine.get("detector", "none")
            if detector != "none" and full.labels():
                from tasks.diarization.refine import refine
                from tasks.audio.vad import speech_probability

                def heard(done: float, total: float) -> None:  # the Silero pass is the refinement's time
                    hook("refinement", None, file=file, completed=done, total=total)

                probs, _, step = speech_probability(audio, detector=detector,
                                                    progress=heard if hook is not None else None)
                full, exclusive = refine(
                    audio, full, exclusive,
                    speech_probs=probs, frame_step=step, embedding=self._embedding,
                    **{k: v for k, v in self.refine.items() if k != "detector"},
                )
            if exclusive.get_overlap():
                # min_duration_off fills each speaker's short gaps separately, so pyannote's
                # exclusive output can overlap by a few frames where two speakers' fills meet
                exclusive = _exclusive_of(exclusive)
            # pyannote's last sliding window is padded: its turns can run past the end of the audio
            extent = Segment(0.0, audio.shape[0] / self._audio.sample_rate)
            output.speaker_diarization = full.crop(extent, mode="intersection")
            output.exclusive_speaker_diarization = exclusive.crop(extent, mode="intersection")
            output.speaker_diarization.uri = output.exclusive_speaker_diarization.uri = file.get("uri")
            return output

        def speaker_count(self, binarized_segmentations, frames, warm_up=(0.1, 0.1)):
            """pyannote's speaker count, with a lower onset for the 2nd, 3rd... speaker.

            pyannote rounds the average count (``rint``); here a frame whose average count ``c``
            is at least 1 gets ``floor(c + 1 - overlap_count_onset)`` speakers when that is more
            (see ``OVERLAP_COUNT_ONSET``). 0.5 gives pyannote's count up to ties.
            """
            from pyannote.audio.core.inference import Inference

            trimmed = Inference.trim(binarized_segmentations, warm_up=warm_up)
            count = Inference.aggregate(
                np.sum(trimmed, axis=-1, keepdims=True), frames, hamming=False, missing=0.0, skip_average=False
            )
            average = count.data
            rounded = np.rint(average)
            raised = np.floor(average + 1.0 - float(self.overlap_count_onset) + 1e-9)
            count.data = np.where((average >= 1.0) & (raised > rounded), raised, rounded).astype(np.uint8)
            return count

        def to(self, device: torch.device):
            super().to(device)
            self._embedding.to(device)
            return self

    return OfflineSpeakerDiarization


def _build_offline(config: DiarizationConfig):
    dev = _device(config.device)
    seg = load_segmentation_model(config.segmentation_model, config.device)
    emb = load_embedding_model(config.embedding_model, config.device, batch_size=config.embedding_batch_size)
    pipeline = _offline_pipeline_class()(
        seg,
        emb,
        segmentation_step=config.segmentation_step,
        segmentation_batch_size=config.segmentation_batch_size,
        embedding_batch_size=config.embedding_batch_size,
        resegment_window_s=config.resegment_window_s,
        refine=refine_settings(config),
    )
    params: dict[str, Any] = {
        "clustering": {
            "method": "centroid",
            "threshold": float(config.clustering_threshold),
            "min_cluster_size": int(config.min_cluster_size),
        },
        "segmentation": {"min_duration_off": float(config.min_duration_off)},
    }
    if not seg.specifications.powerset:
        params["segmentation"]["threshold"] = 0.5
    pipeline.instantiate(params)
    return pipeline.to(dev)


def refine_settings(config: DiarizationConfig) -> dict[str, Any]:
    """Keyword arguments of :func:`tasks.diarization.refine.refine` (plus ``detector``) from ``config``."""
    return {
        "detector": config.speech_detector,
        "onset": float(config.vad_onset),
        "offset": float(config.vad_offset),
        "shift_s": float(config.boundary_shift_s),
        "pause_s": float(config.cut_pause_s),
        "min_heard": float(config.cut_min_heard),
        "max_distance": float(config.recover_max_distance),
        "pad_onset_s": float(config.pad_onset_s),
        "pad_offset_s": float(config.pad_offset_s),
    }


def _hub_hint(ref: str) -> str:
    return "switch back to the bundled pipeline with --set diarization.pipeline=offline"


def _build_pretrained(config: DiarizationConfig):
    """A pretrained pyannote pipeline (hub id or local dir); one-line error when unavailable."""
    from pyannote.audio import Pipeline

    ref = config.pipeline
    local = Path(ref).expanduser()
    token = os.environ.get("HF_TOKEN") or None
    if not local.exists():
        if "/" not in ref or ref.startswith((".", "/", "~")):
            raise DiarizationPipelineError(
                f"diarization pipeline {ref!r}: no such directory and not a hub id; {_hub_hint(ref)}"
            )
        unreachable = hub_unreachable_reason("huggingface")
        if unreachable:
            why = "HF_TOKEN is not set and " if token is None else ""
            raise DiarizationPipelineError(
                f"diarization pipeline {ref!r} cannot be downloaded: {why}{unreachable}; {_hub_hint(ref)}"
            )
    try:
        pipeline = Pipeline.from_pretrained(str(local) if local.exists() else ref, token=token)
    except Exception as exc:  # hub and loader errors come in many types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        need = " (set HF_TOKEN and accept the model's conditions on huggingface.co)" if token is None else ""
        raise DiarizationPipelineError(
            f"diarization pipeline {ref!r} cannot be loaded{need}: {type(exc).__name__}: {first}; {_hub_hint(ref)}"
        ) from None
    if pipeline is None:
        need = "set HF_TOKEN and accept its conditions on huggingface.co" if token is None else "check HF_TOKEN's access"
        raise DiarizationPipelineError(f"diarization pipeline {ref!r} cannot be downloaded ({need}); {_hub_hint(ref)}")
    return pipeline.to(_device(config.device))


def load_diarization_pipeline(config: DiarizationConfig):
    """The pipeline ``config`` asks for, built once per process and reused.

    Raises
    ------
    DiarizationPipelineError
        A pretrained pipeline cannot be had (one line, says how to switch back).
    ModelUnavailableError
        A local model is missing.
    """
    if config.pipeline == OFFLINE:
        key = (
            "pipeline", OFFLINE, config.segmentation_model, canonical_embedding_id(config.embedding_model),
            float(config.clustering_threshold), int(config.min_cluster_size), config.segmentation_step,
            float(config.min_duration_off), float(config.resegment_window_s),
            tuple(sorted(refine_settings(config).items())),
            config.segmentation_batch_size,
            config.embedding_batch_size, str(_device(config.device)),
        )
        return cached_model(key, lambda: _build_offline(config))
    key = ("pipeline", config.pipeline, str(_device(config.device)))
    return cached_model(key, lambda: _build_pretrained(config))


# --------------------------------------------------------------------------- diarization
def _as_waveform(audio: np.ndarray | torch.Tensor, sample_rate: int) -> torch.Tensor:
    wave = torch.as_tensor(np.asarray(audio, dtype=np.float32) if not isinstance(audio, torch.Tensor) else audio)
    wave = wave.float()
    if wave.ndim == 2:  # (channels, n) or (n, channels): downmix
        wave = wave.mean(dim=0 if wave.shape[0] < wave.shape[1] else 1)
    wave = wave.reshape(1, -1)
    if sample_rate != SAMPLE_RATE:
        import torchaudio.functional as AF

        wave = AF.resample(wave, sample_rate, SAMPLE_RATE)
    return wave.contiguous()


def _exclusive_of(annotation: Annotation) -> Annotation:
    """One speaker at a time (for pipelines that do not return it): in overlaps, the speaker
    with the most speech overall keeps the region."""
    totals = annotation.chart()
    rank = {label: i for i, (label, _) in enumerate(totals)}
    out = Annotation(uri=annotation.uri)
    pieces = annotation.get_timeline().segmentation()
    for piece in pieces:
        labels = annotation.crop(piece, mode="intersection").labels()
        if labels:
            out[piece] = min(labels, key=lambda lab: rank.get(lab, len(rank)))
    return out.support()


class _ProgressHook:
    """A pyannote pipeline ``hook`` that turns its steps' ``completed``/``total`` into one
    monotonic ``progress(done, PROGRESS_TOTAL)`` over the whole diarization.

    ``skip`` names the steps of ``PROGRESS_STEPS`` this configuration does not run; the others'
    spans are stretched to cover the whole."""

    def __init__(self, progress: Callable[[float, float], None], *, skip: tuple[str, ...] = ()) -> None:
        self.progress = progress
        kept = {k: b - a for k, (a, b) in PROGRESS_STEPS.items() if k not in skip}
        whole, start, self.steps = sum(kept.values()), 0.0, {}
        for k, width in kept.items():
            self.steps[k] = (start / whole, min(1.0, (start + width) / whole))
            start += width
        self.done = -1

    def report(self, fraction: float) -> None:
        """Report ``fraction`` of the whole diarization, unless no more than already reported."""
        done = int(round(min(1.0, max(0.0, fraction)) * PROGRESS_TOTAL))
        if done > self.done:
            self.done = done
            self.progress(done, PROGRESS_TOTAL)

    def __call__(self, step_name: str, step_artefact: Any = None, file: Any = None, total: float | None = None,
                 completed: float | None = None) -> None:
        span = self.steps.get(step_name)
        if span is not None:
            fraction = 1.0 if completed is None or not total else min(1.0, max(0.0, completed / total))
            self.report(span[0] + (span[1] - span[0]) * fraction)


def progress_steps_skipped(config: DiarizationConfig) -> tuple[str, ...]:
    """The steps of ``PROGRESS_STEPS`` that ``config`` does not run."""
    if config.pipeline != OFFLINE:
        return ("resegmentation", "refinement")
    return tuple(step for step, runs in (("resegmentation", config.resegment_window_s > 0),
                                         ("refinement", config.speech_detector != "none")) if not runs)


def diarize(
    audio: np.ndarray,
    *,
    recording_id: str,
    config: DiarizationConfig,
    sample_rate: int = SAMPLE_RATE,
    progress: Callable[[float, float], None] | None = None,
) -> DiarizationResult:
    """Diarize one recording given as a mono float waveform.

    No speech gives empty annotations (not an error). Speaker labels are ``SPEAKER_00``...
    ``progress(done, total)``, when given, is called with thousandths of the work done
    (monotonic, from 0 to ``total``; see ``PROGRESS_STEPS``).
    """
    wave = _as_waveform(audio, sample_rate)
    hook = None if progress is None else _ProgressHook(progress, skip=progress_steps_skipped(config))
    # reductions only: no temporary as large as the audio (hours of silence cost one copy, not three)
    silent = float(wave.max()) == 0.0 and float(wave.min()) == 0.0
    if wave.shape[1] < SAMPLE_RATE // 10 or not bool(torch.isfinite(wave.sum())) or silent:
        empty = Annotation(uri=recording_id)
        if hook is not None:
            hook.report(1.0)
        return DiarizationResult(empty, Annotation(uri=recording_id), config.exclude_overlap)
    pipeline = load_diarization_pipeline(config)
    if hook is not None:  # from here on (models loaded) the work is in proportion to the audio
        hook.report(0.0)
    file = {"waveform": wave, "sample_rate": SAMPLE_RATE, "uri": recording_id}
    kwargs = {
        "num_speakers": config.num_speakers,
        "min_speakers": config.min_speakers,
        "max_speakers": config.max_speakers,
    }
    if hook is not None:
        kwargs["hook"] = hook
    with torch_threads(config.threads), torch.inference_mode():
        output = pipeline(file, **{k: v for k, v in kwargs.items() if v is not None})
    if isinstance(output, Annotation):
        annotation, exclusive = output, _exclusive_of(output)
    else:  # the offline pipeline's apply has settled and cropped both already
        annotation = output.speaker_diarization
        exclusive = getattr(output, "exclusive_speaker_diarization", None) or _exclusive_of(annotation)
    if config.pipeline != OFFLINE:  # pretrained pipelines: one speaker at a time, within the audio
        if exclusive.get_overlap():
            exclusive = _exclusive_of(exclusive)
        extent = Segment(0.0, wave.shape[1] / SAMPLE_RATE)
        annotation = annotation.crop(extent, mode="intersection")
        exclusive = exclusive.crop(extent, mode="intersection")
    annotation.uri = recording_id
    exclusive.uri = recording_id
    if hook is not None:
        hook.report(1.0)
    return DiarizationResult(annotation, exclusive, config.exclude_overlap)
