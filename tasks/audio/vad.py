"""Voice activity detection: one API, two detectors.

``detector="segmentation"`` (default)
    pyannote segmentation-3.0, a powerset speaker-segmentation model; the probability that
    *anyone* speaks in a frame is ``1 - P(no speaker)``. Chunks of 10 s slide over the
    recording and their per-frame probabilities are averaged where chunks overlap (pyannote's
    overlap-add). ~17 ms frames, but smooth: its speech starts and ends a few frames late or
    early and it bridges short pauses. The denoise stage (noise profile, SNR) uses it.

``detector="silero"``
    Silero VAD v6 (MIT; TorchScript file bundled in the ``silero-vad`` wheel, resolved and
    sha256-checked by :mod:`tasks.models.hub`, loaded with ``torch.jit.load``: weights and graph,
    no Python code from the file). A recurrent model over 32 ms chunks: sharper onsets and
    offsets, pauses of 0.1-0.2 s show. The diarization stage uses it to move turn boundaries to
    where the voice starts and stops and to find speech segmentation-3.0 left without a speaker
    (:mod:`tasks.diarization.pipeline`).

:func:`speech_probability` gives frame probabilities, :func:`regions_from_probability` joins
frames above a threshold (optionally with a lower offset threshold: hysteresis) into regions,
and :func:`speech_regions` does both. Models are loaded once per process and reused.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Callable

import numpy as np

from tasks.core.timebase import SAMPLE_RATE, compute_num_samples

SEGMENTATION_MODEL = "pyannote/segmentation-3.0"
SILERO_MODEL = "snakers4/silero-vad"
SILERO_CHUNK = 512
"""Samples per Silero VAD frame at 16 kHz (32 ms); the model only accepts this size."""
DETECTORS = ("segmentation", "silero")
DEFAULT_STEP_S = 2.5
"""Hop between 10 s chunks. 2.5 s (4 estimates per frame) is ~4x cheaper than pyannote's default
1 s and gives the same regions to within a frame or two on AMI."""

VAD_THREADS = 1
"""Intra-op threads while the VAD runs (restored afterwards). The model is tiny (1.5 M
parameters): on a shared 2-core machine one thread took 1.4 s for 30 s of audio where two took
10-30 s (OpenMP spinning against other processes)."""

_LOCK = threading.Lock()


def _speech_probability(logp: np.ndarray) -> np.ndarray:
    """(chunks, frames, powerset classes) log-probabilities → (chunks, frames, 1) P(speech)."""
    return (1.0 - np.exp(logp[..., :1])).astype(np.float32)


@lru_cache(maxsize=4)
def _inference(model_ref: str, step_s: float):  # type: ignore[no-untyped-def]
    """The cached pyannote Inference for ``model_ref`` (resolved through tasks.models.hub)."""
    import torch
    from pyannote.audio import Inference

    from tasks.models.checkpoints import load_pyannote_model
    from tasks.models.hub import resolve

    model = load_pyannote_model(resolve(model_ref, kind="segmentation").path)  # checked: runs no code
    return Inference(
        model,
        window="sliding",
        step=step_s,
        skip_conversion=True,
        pre_aggregation_hook=_speech_probability,
        device=torch.device("cpu"),
        batch_size=16,
    )


@lru_cache(maxsize=2)
def _silero(model_ref: str):  # type: ignore[no-untyped-def]
    """The cached Silero VAD TorchScript module (resolved and checked by tasks.models.hub)."""
    from pathlib import Path

    import torch

    from tasks.models.hub import BUNDLED_WHEELS, ModelUnavailableError, resolve

    try:
        path = Path(resolve(model_ref, kind="vad", allow_download=False).path)
    except ModelUnavailableError as exc:
        raise ModelUnavailableError(
            f"Silero VAD ({model_ref}) is not available: {exc}; install the wheel that bundles it "
            f"(pip install --no-deps {BUNDLED_WHEELS['silero-vad']}) or set diarization.speech_detector=none"
        ) from None
    model = torch.jit.load(str(path / "silero_vad.jit" if path.is_dir() else path), map_location="cpu")
    model.eval()
    return model


SILERO_REPORT_EVERY = 250
"""Silero chunks (8 s of audio) between two progress reports."""


def _silero_probability(audio: np.ndarray, model_ref: str,
                        progress: Callable[[float, float], None] | None = None) -> np.ndarray:
    """Silero VAD probability of each full or zero-padded last 512-sample chunk of ``audio``;
    ``progress(done, total)`` counts chunks."""
    import torch

    model = _silero(model_ref)
    n = -(-audio.shape[0] // SILERO_CHUNK)
    probs = np.zeros(n, dtype=np.float32)
    with _LOCK, torch.inference_mode():
        threads = torch.get_num_threads()
        torch.set_num_threads(min(threads, VAD_THREADS))
        try:
            model.reset_states()
            for i in range(n):
                if progress is not None and i % SILERO_REPORT_EVERY == 0:
                    progress(i, n)
                chunk = audio[i * SILERO_CHUNK : (i + 1) * SILERO_CHUNK]
                if chunk.shape[0] < SILERO_CHUNK:
                    chunk = np.pad(chunk, (0, SILERO_CHUNK - chunk.shape[0]))
                probs[i] = float(model(torch.from_numpy(chunk)[None], SAMPLE_RATE))
            model.reset_states()
            if progress is not None:
                progress(n, n)
        finally:
            torch.set_num_threads(threads)
    return probs


def speech_probability(
    audio: np.ndarray,
    *,
    sample_rate: int = SAMPLE_RATE,
    model_ref: str | None = None,
    step_s: float = DEFAULT_STEP_S,
    detector: str = "segmentation",
    progress: Callable[[float, float], None] | None = None,
) -> tuple[np.ndarray, float, float]:
    """Frame-level speech probability of a mono recording.

    Parameters
    ----------
    audio : np.ndarray
        Mono float samples, 16 kHz.
    sample_rate : int
        Must be 16000 (the models' rate).
    model_ref : str, optional
        Model reference, resolved by :func:`tasks.models.hub.resolve`; default: the detector's
        (``SEGMENTATION_MODEL`` or ``SILERO_MODEL``).
    step_s : float
        Hop between 10 s chunks (segmentation only).
    detector : {"segmentation", "silero"}
        Which model (see module doc).
    progress : callable, optional
        ``progress(done, total)``, monotonic, ending with ``done == total`` (Silero 32 ms chunks
        or segmentation 10 s chunks).

    Returns
    -------
    probs : np.ndarray
        (n_frames,) float32 in [0, 1].
    frame_start : float
        Time (s) of the centre of frame 0.
    frame_step : float
        Seconds between frames.
    """
    import torch

    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"speech_probability needs 16 kHz audio, got {sample_rate} Hz")
    if detector not in DETECTORS:
        raise ValueError(f"unknown speech detector {detector!r}; expected one of {', '.join(DETECTORS)}")
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if detector == "silero":
        step = SILERO_CHUNK / SAMPLE_RATE
        return _silero_probability(audio, model_ref or SILERO_MODEL, progress), step / 2, step
    inference = _inference(model_ref or SEGMENTATION_MODEL, float(step_s))
    n = audio.shape[0]
    window = compute_num_samples(inference.duration, sample_rate=sample_rate)
    # pyannote's sliding window needs at least one full chunk: pad short inputs with silence.
    padded = np.pad(audio, (0, max(0, window - n)))
    waveform = torch.from_numpy(padded)[None]
    with _LOCK, torch.inference_mode():
        threads = torch.get_num_threads()
        torch.set_num_threads(min(threads, VAD_THREADS))
        try:
            hook = None if progress is None else (lambda completed, total, **_: progress(min(completed, total), total))
            feature = inference({"waveform": waveform, "sample_rate": sample_rate}, hook=hook)
        finally:
            torch.set_num_threads(threads)
    probs = np.nan_to_num(np.asarray(feature.data, dtype=np.float32)[:, 0], nan=0.0)
    frames = feature.sliding_window
    return probs, float(frames.start + frames.duration / 2), float(frames.step)


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[(start, end)]`` frame index runs where ``mask`` is true (end exclusive)."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], np.asarray(mask, dtype=np.int8), [0]))))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def hysteresis(probs: np.ndarray, *, onset: float, offset: float | None = None) -> np.ndarray:
    """Boolean activity of ``probs``: on above ``onset``, staying on while above ``offset``
    (``None``: ``offset = onset``, a plain threshold). Runs above ``offset`` that never reach
    ``onset`` stay off."""
    probs = np.asarray(probs)
    on = probs > onset
    if offset is None or offset >= onset:
        return on
    weak = probs > offset
    # a run of weak frames is active when any of its frames is on
    out = np.zeros_like(on)
    for a, b in runs(weak):
        if on[a:b].any():
            out[a:b] = True
    return out


def regions_from_probability(
    probs: np.ndarray,
    *,
    frame_start: float,
    frame_step: float,
    threshold: float = 0.5,
    offset_threshold: float | None = None,
    duration: float | None = None,
    min_gap_s: float = 0.0,
) -> list[tuple[float, float]]:
    """Join frames with ``probs > threshold`` into ``(start, end)`` regions in seconds.

    With ``offset_threshold`` (below ``threshold``), a region that has started goes on while
    ``probs > offset_threshold`` (hysteresis). Each frame covers ``[centre - step/2, centre +
    step/2]``; regions separated by less than ``min_gap_s`` are joined; ends are clipped to
    ``duration``.
    """
    active = hysteresis(np.asarray(probs), onset=threshold, offset=offset_threshold)
    if not active.any():
        return []
    half = frame_step / 2
    out: list[tuple[float, float]] = []
    for s, e in runs(active):
        t0 = max(0.0, frame_start + s * frame_step - half)
        t1 = frame_start + (e - 1) * frame_step + half
        if duration is not None:
            t1 = min(t1, duration)
        if t1 <= t0:
            continue
        if out and t0 - out[-1][1] < min_gap_s:
            out[-1] = (out[-1][0], t1)
        else:
            out.append((t0, t1))
    return [(round(float(a), 3), round(float(b), 3)) for a, b in out]


def speech_regions(
    audio: np.ndarray,
    *,
    sample_rate: int = SAMPLE_RATE,
    threshold: float = 0.5,
    offset_threshold: float | None = None,
    model_ref: str | None = None,
    step_s: float = DEFAULT_STEP_S,
    detector: str = "segmentation",
) -> list[tuple[float, float]]:
    """Regions (seconds) where anyone speaks, by segmentation-3.0 or Silero VAD.

    Parameters
    ----------
    audio : np.ndarray
        Mono float samples at ``sample_rate`` (16 kHz).
    sample_rate : int
        Sample rate of ``audio``; must be 16000.
    threshold : float
        Speech probability above which a frame counts as speech.
    offset_threshold : float, optional
        Lower threshold that keeps a started region going (hysteresis); None: ``threshold``.
    model_ref : str, optional
        Model reference (local dir or known id); default: the detector's.
    step_s : float
        Hop between the segmentation model's 10 s chunks.
    detector : {"segmentation", "silero"}
        Which model (see module doc).
    progress : callable, optional
        ``progress(done, total)``, monotonic, ending with ``done == total`` (Silero 32 ms chunks
        or segmentation 10 s chunks).

    Returns
    -------
    list of (start, end)
        Sorted, non-overlapping, in seconds, within the recording.
    """
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if audio.size == 0:
        return []
    probs, start, step = speech_probability(
        audio, sample_rate=sample_rate, model_ref=model_ref, step_s=step_s, detector=detector
    )
    return regions_from_probability(
        probs, frame_start=start, frame_step=step, threshold=threshold, offset_threshold=offset_threshold,
        duration=audio.size / sample_rate,
    )
