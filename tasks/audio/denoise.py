"""Denoising: spectral gating (noisereduce) or RNNoise, with an SNR estimate before and after.

Methods (``denoise.method``)
----------------------------
``stationary``
    noisereduce's stationary spectral gate. Its per-frequency threshold comes from a *noise
    profile*: the recording's non-speech regions found by pyannote segmentation-3.0
    (:mod:`tasks.audio.vad`), or the whole file when there is less than ``min_noise_s`` of non-speech
    (or ``noise_profile: whole_file``).
``non_stationary``
    noisereduce's non-stationary gate (a running noise floor over time); uses no profile.
``rnnoise``
    RNNoise (pyrnnoise's bundled ``librnnoise``, weights built in): 48 kHz, 480-sample frames of
    int16-scaled floats. Audio is resampled in and out with soxr (high quality) and RNNoise's
    fixed delay (960 samples at 48 kHz = 320 at 16 kHz) is removed, so the output lines up with
    the input to the sample. ``prop_decrease`` mixes the result with the (aligned) input:
    ``prop * rnnoise + (1 - prop) * input``. The noise profile does not apply.

Level: the output is scaled so that its level over the speech regions equals the estimated
clean-speech level of the input (speech power minus noise power), with the gain bounded to
[0.5, 4], then scaled down if needed so its peak stays below 0.99 (never clips).

SNR: :func:`estimate_snr_db` compares the power in speech regions (speech + noise) with the
power in non-speech regions (noise): ``10 log10((P_speech - P_noise) / P_noise)``. The same
regions (found once, on the input) are used before and after, so the two figures compare.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from tasks.core.timebase import SAMPLE_RATE, compute_num_samples
from tasks.core.config import DenoiseConfig

NoiseProfile = Literal["speech_activity", "whole_file", "none"]

RNNOISE_RATE = 48000
RNNOISE_FRAME = 480
RNNOISE_DELAY_48K = 960
"""RNNoise's fixed delay in samples at 48 kHz (one 480-sample frame of look-ahead plus the
480-sample analysis overlap); 320 samples at 16 kHz. Checked by ``tests/test_denoise.py``."""

EDGE_GUARD_S = 0.1
"""Seconds trimmed off each side of a non-speech region before it counts as noise (VAD edges
leak speech onsets and tails)."""

SNR_FLOOR_DB, SNR_CEIL_DB = -50.0, 100.0
GAIN_MIN, GAIN_MAX = 0.5, 4.0
PEAK_MAX = 0.99


@dataclass(frozen=True)
class DenoiseStats:
    """What the denoise stage did to one recording.

    Attributes
    ----------
    method : str
        ``stationary``, ``non_stationary``, ``rnnoise``, or ``none`` when disabled.
    snr_before_db, snr_after_db : float or None
        Estimated SNR of the input and the output (None when it cannot be estimated: no speech,
        no non-speech, or denoising disabled).
    noise_profile : str
        ``speech_activity`` (non-speech regions), ``whole_file``, or ``none`` (method uses none).
    noise_s : float
        Seconds of non-speech found (the noise profile's length when one was used).
    seconds : float
        Wall-clock seconds the stage took, VAD included.
    """

    method: str
    snr_before_db: float | None
    snr_after_db: float | None
    noise_profile: str
    noise_s: float
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


# ---------------------------------------------------------------------------- regions


def _complement(regions: list[tuple[float, float]], duration: float) -> list[tuple[float, float]]:
    """The parts of ``[0, duration]`` not covered by the sorted ``regions``."""
    out, t = [], 0.0
    for s, e in sorted(regions):
        if s > t:
            out.append((t, min(s, duration)))
        t = max(t, e)
    if t < duration:
        out.append((t, duration))
    return [(s, e) for s, e in out if e > s]


def _mask(regions: list[tuple[float, float]], n: int, sample_rate: int, *, shrink_s: float = 0.0) -> np.ndarray:
    """Boolean sample mask of ``regions`` (each shrunk by ``shrink_s`` on both sides)."""
    m = np.zeros(n, dtype=bool)
    for s, e in regions:
        a = compute_num_samples(s + shrink_s, sample_rate=sample_rate)
        b = compute_num_samples(e - shrink_s, sample_rate=sample_rate)
        a, b = max(a, 0), min(b, n)
        if b > a:
            m[a:b] = True
    return m


def _noise_mask(speech: list[tuple[float, float]], n: int, sample_rate: int) -> np.ndarray:
    return _mask(_complement(speech, n / sample_rate), n, sample_rate, shrink_s=EDGE_GUARD_S)


# ---------------------------------------------------------------------------- SNR


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0


def _snr_from_masks(audio: np.ndarray, speech_mask: np.ndarray, noise_mask: np.ndarray) -> float | None:
    if not speech_mask.any() or not noise_mask.any():
        return None
    p_speech = _power(audio[speech_mask])
    p_noise = _power(audio[noise_mask])
    if p_speech <= 0.0:
        return None
    clean = max(p_speech - p_noise, 1e-3 * p_speech)
    if p_noise <= 0.0:
        return SNR_CEIL_DB
    snr = 10.0 * np.log10(clean / p_noise)
    return float(np.clip(round(snr, 2), SNR_FLOOR_DB, SNR_CEIL_DB))


def estimate_snr_db(
    audio: np.ndarray, *, speech: list[tuple[float, float]], sample_rate: int = SAMPLE_RATE
) -> float | None:
    """Estimate a recording's SNR in dB from its speech regions.

    Parameters
    ----------
    audio : np.ndarray
        Mono float samples.
    speech : list of (start, end)
        Speech regions in seconds (e.g. :func:`tasks.audio.vad.speech_regions`). Everything else,
        less 0.1 s at each edge, is taken as noise.
    sample_rate : int
        Sample rate of ``audio``.

    Returns
    -------
    float or None
        ``10 log10((P_speech - P_noise) / P_noise)``, clipped to [-50, 100] dB; None when there is
        no speech or no non-speech to measure.
    """
    audio = np.asarray(audio).reshape(-1)
    n = audio.shape[0]
    return _snr_from_masks(audio, _mask(speech, n, sample_rate), _noise_mask(speech, n, sample_rate))


# ---------------------------------------------------------------------------- methods


def _noisereduce(audio: np.ndarray, *, config: DenoiseConfig, sample_rate: int, noise: np.ndarray | None) -> np.ndarray:
    import noisereduce as nr

    stationary = config.method == "stationary"
    bin_hz = sample_rate / (config.n_fft / 2)
    hop_ms = (config.n_fft // 4) / sample_rate * 1000
    kwargs = dict(
        y=audio,
        sr=sample_rate,
        stationary=stationary,
        prop_decrease=config.prop_decrease,
        n_fft=config.n_fft,
        n_std_thresh_stationary=config.n_std_thresh_stationary,
        # smoothing narrower than one STFT bin / hop means none (noisereduce wants None then)
        freq_mask_smooth_hz=config.freq_mask_smooth_hz if config.freq_mask_smooth_hz >= bin_hz else None,
        time_mask_smooth_ms=config.time_mask_smooth_ms if config.time_mask_smooth_ms >= hop_ms else None,
        n_jobs=1,
    )
    if stationary and noise is not None:
        kwargs["y_noise"] = noise
    out = nr.reduce_noise(**kwargs)
    return np.asarray(out, dtype=np.float32).reshape(-1)[: audio.shape[0]]


@lru_cache(maxsize=1)
def _rnnoise_lib() -> ctypes.CDLL:
    """``librnnoise`` from the pyrnnoise wheel, loaded directly with ctypes.

    Only the wheel's shared library is used: importing the ``pyrnnoise`` package would also pull
    in its file-I/O dependencies (audiolab, tqdm), which the stage does not need.
    """
    spec = importlib.util.find_spec("pyrnnoise")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("denoise.method=rnnoise needs the pyrnnoise wheel (pip install pyrnnoise)")
    folder = list(spec.submodule_search_locations)[0]
    names = {"darwin": "librnnoise.dylib", "win32": "rnnoise.dll"}
    path = os.path.join(folder, names.get(sys.platform, "librnnoise.so"))
    lib = ctypes.CDLL(path)
    lib.rnnoise_create.argtypes = [ctypes.c_void_p]
    lib.rnnoise_create.restype = ctypes.c_void_p
    lib.rnnoise_destroy.argtypes = [ctypes.c_void_p]
    lib.rnnoise_process_frame.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_float)]
    lib.rnnoise_process_frame.restype = ctypes.c_float
    lib.rnnoise_get_frame_size.restype = ctypes.c_int
    if lib.rnnoise_get_frame_size() != RNNOISE_FRAME:
        raise RuntimeError(f"{path}: unexpected RNNoise frame size {lib.rnnoise_get_frame_size()}")
    return lib


def rnnoise_48k(x48: np.ndarray) -> np.ndarray:
    """Run RNNoise on 48 kHz float audio in [-1, 1]; the output still carries its delay."""
    lib = _rnnoise_lib()
    n = x48.shape[0]
    n_frames = -(-n // RNNOISE_FRAME)
    buf = np.zeros(n_frames * RNNOISE_FRAME, dtype=np.float32)
    buf[:n] = np.clip(x48 * 32768.0, -32768.0, 32767.0)
    state = lib.rnnoise_create(None)
    try:
        base = buf.ctypes.data
        step = RNNOISE_FRAME * buf.itemsize
        fptr = ctypes.POINTER(ctypes.c_float)
        for i in range(n_frames):
            p = ctypes.cast(base + i * step, fptr)
            lib.rnnoise_process_frame(state, p, p)  # in place
    finally:
        lib.rnnoise_destroy(state)
    return buf[:n] / 32768.0


def _rnnoise(audio: np.ndarray, *, sample_rate: int) -> np.ndarray:
    import soxr

    n = audio.shape[0]
    x48 = soxr.resample(audio.astype(np.float32), sample_rate, RNNOISE_RATE, quality="HQ")
    # Feed the delay's worth of silence at the end, then drop the delay at the start.
    x48 = np.concatenate([x48, np.zeros(RNNOISE_DELAY_48K, dtype=np.float32)])
    y48 = rnnoise_48k(x48)[RNNOISE_DELAY_48K:]
    y = soxr.resample(y48, RNNOISE_RATE, sample_rate, quality="HQ").astype(np.float32)
    if y.shape[0] < n:
        y = np.pad(y, (0, n - y.shape[0]))
    return y[:n]


def _keep_level(
    original: np.ndarray, denoised: np.ndarray, speech_mask: np.ndarray, noise_mask: np.ndarray
) -> np.ndarray:
    """Scale ``denoised`` so its speech level matches the input's estimated clean-speech level."""
    gain = 1.0
    if speech_mask.any():
        p_in = _power(original[speech_mask])
        p_noise = _power(original[noise_mask]) if noise_mask.any() else 0.0
        p_out = _power(denoised[speech_mask])
        if p_out > 0.0 and p_in > 0.0:
            target = max(p_in - p_noise, 0.1 * p_in)
            gain = float(np.clip(np.sqrt(target / p_out), GAIN_MIN, GAIN_MAX))
    peak = float(np.max(np.abs(denoised))) * gain if denoised.size else 0.0
    if peak > PEAK_MAX:
        gain *= PEAK_MAX / peak
    return (denoised * gain).astype(np.float32)


# ---------------------------------------------------------------------------- entry point


def denoise(
    audio: np.ndarray,
    *,
    config: DenoiseConfig,
    sample_rate: int = SAMPLE_RATE,
    speech: list[tuple[float, float]] | None = None,
) -> tuple[np.ndarray, DenoiseStats]:
    """Denoise one recording.

    Parameters
    ----------
    audio : np.ndarray
        Mono float32 samples (16 kHz).
    config : DenoiseConfig
        The ``denoise`` config section.
    sample_rate : int
        Sample rate of ``audio``.
    speech : list of (start, end), optional
        Speech regions in seconds; found with :func:`tasks.audio.vad.speech_regions` at
        ``config.vad_threshold`` when not given.

    Returns
    -------
    denoised : np.ndarray
        float32, same length as ``audio``; ``audio`` itself (untouched) when disabled.
    stats : DenoiseStats
        Method, SNR before/after, the noise profile used, and timing.
    """
    t0 = time.perf_counter()
    if not config.enabled:
        return audio, DenoiseStats("none", None, None, "none", 0.0, round(time.perf_counter() - t0, 4))

    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    n = x.shape[0]
    if n == 0:
        return x.copy(), DenoiseStats(config.method, None, None, "none", 0.0, 0.0)
    if not x.any():  # digital silence: nothing to take out (and no STFT of hours of zeros)
        return x, DenoiseStats(config.method, None, None, "none", 0.0, round(time.perf_counter() - t0, 4))
    if speech is None:
        from tasks.audio.vad import speech_regions

        speech = speech_regions(x, sample_rate=sample_rate, threshold=config.vad_threshold)
    speech_mask = _mask(speech, n, sample_rate)
    noise_mask = _noise_mask(speech, n, sample_rate)
    noise_s = float(noise_mask.sum()) / sample_rate

    if config.method == "rnnoise":
        # prop_decrease as a wet/dry mix (noisereduce's meaning: 1 - prop of the noise stays).
        # A little of the aligned input masks RNNoise's speech distortion: +0.3-0.4 dB SI-SDR.
        y = config.prop_decrease * _rnnoise(x, sample_rate=sample_rate) + (1.0 - config.prop_decrease) * x
        profile: NoiseProfile = "none"
    else:
        noise = None
        profile = "none"
        if config.method == "stationary":
            if config.noise_profile == "speech_activity" and noise_s >= config.min_noise_s:
                noise, profile = x[noise_mask], "speech_activity"
            else:
                profile, noise_s = "whole_file", n / sample_rate
        y = _noisereduce(x, config=config, sample_rate=sample_rate, noise=noise)

    y = _keep_level(x, y, speech_mask, noise_mask)
    stats = DenoiseStats(
        method=config.method,
        snr_before_db=_snr_from_masks(x, speech_mask, noise_mask),
        snr_after_db=_snr_from_masks(y, speech_mask, noise_mask),
        noise_profile=profile,
        noise_s=round(noise_s, 3),
        seconds=round(time.perf_counter() - t0, 4),
    )
    return y, stats
