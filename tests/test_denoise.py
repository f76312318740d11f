"""Denoise stage on real speech (LibriSpeech) mixed with real noise at a known SNR."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.core.config import DenoiseConfig
from tasks.audio.denoise import RNNOISE_DELAY_48K, DenoiseStats, denoise, estimate_snr_db, rnnoise_48k

SR = 16000


def si_sdr(est: np.ndarray, ref: np.ndarray) -> float:
    est = est.astype(np.float64) - est.mean()
    ref = ref.astype(np.float64) - ref.mean()
    target = np.dot(est, ref) / np.dot(ref, ref) * ref
    return float(10 * np.log10(np.dot(target, target) / np.dot(est - target, est - target)))


def lag_of_peak(a: np.ndarray, b: np.ndarray, max_lag: int = 2000) -> int:
    """Lag (samples) at which ``b`` best matches ``a`` (positive: ``b`` is late)."""
    n = len(a) + len(b)
    c = np.fft.irfft(np.fft.rfft(b, n) * np.conj(np.fft.rfft(a, n)), n)
    c = np.concatenate([c[-max_lag:], c[: max_lag + 1]])
    return int(np.argmax(c)) - max_lag


@pytest.fixture(scope="module")
def mixture(shared_data):
    """(clean, noisy, speech regions): 2 utterances with pauses, running tap noise at 5 dB."""
    from tasks.audio.decode import load_audio

    root = shared_data / "librispeech" / "test-other"
    u1, _ = load_audio(root / "1688" / "1688-142285-0000.flac")
    u2, _ = load_audio(sorted((root).glob("*/*.flac"))[-1])
    u1, u2 = u1[: 6 * SR], u2[: 6 * SR]
    pause = np.zeros(int(1.2 * SR), np.float32)
    clean = np.concatenate([pause, u1, pause, u2, pause])
    active = np.concatenate([np.zeros_like(pause, bool), np.ones(len(u1), bool), np.zeros_like(pause, bool),
                             np.ones(len(u2), bool), np.zeros_like(pause, bool)])
    noise, _ = load_audio(shared_data / "noise" / "speech-commands" / "running_tap.wav")
    noise = noise[SR : SR + len(clean)].astype(np.float64)
    noise *= np.sqrt(np.mean(clean[active] ** 2.0) / np.mean(noise**2) / 10 ** (5 / 10))
    noisy = (clean + noise).astype(np.float32)
    t0 = len(pause) / SR
    speech = [(t0, t0 + len(u1) / SR), (2 * t0 + len(u1) / SR, 2 * t0 + (len(u1) + len(u2)) / SR)]
    return clean, noisy, speech


def _speech_rms(x, speech):
    idx = np.concatenate([np.arange(int(a * SR), int(b * SR)) for a, b in speech])
    return float(np.sqrt(np.mean(x[idx].astype(np.float64) ** 2)))


def test_disabled_passes_audio_through(rng):
    x = (0.1 * rng.standard_normal(SR)).astype(np.float32)
    out, stats = denoise(x, config=DenoiseConfig(enabled=False))
    assert out is x
    assert stats == DenoiseStats("none", None, None, "none", 0.0, stats.seconds)


def test_estimate_snr_db_known_signal(rng):
    n = 10 * SR
    t = np.arange(n) / SR
    speech = [(2.0, 5.0), (6.0, 9.0)]
    tone = np.zeros(n)
    for a, b in speech:
        tone[int(a * SR) : int(b * SR)] = np.sqrt(2) * 0.1 * np.sin(2 * np.pi * 440 * t[int(a * SR) : int(b * SR)])
    noise = 0.01 * rng.standard_normal(n)  # speech power 0.01, noise 1e-4: 20 dB
    snr = estimate_snr_db((tone + noise).astype(np.float32), speech=speech)
    assert snr == pytest.approx(20.0, abs=0.3)
    assert estimate_snr_db(noise, speech=[]) is None
    assert estimate_snr_db(noise, speech=[(0.0, 10.0)]) is None


def test_stationary_with_speech_activity_profile(mixture):
    clean, noisy, speech = mixture
    out, stats = denoise(noisy, config=DenoiseConfig(method="stationary"), speech=speech)
    assert out.dtype == np.float32 and out.shape == noisy.shape
    assert stats.method == "stationary" and stats.noise_profile == "speech_activity"
    assert stats.noise_s == pytest.approx(3 * 1.2 - 6 * 0.1, abs=0.01)
    gain = si_sdr(out, clean) - si_sdr(noisy, clean)
    assert gain > 2.5, gain
    assert stats.snr_before_db == pytest.approx(5.0, abs=1.5)
    assert stats.snr_after_db > stats.snr_before_db + 5
    # level kept: speech within 2 dB of the clean speech level, no clipping
    level = 20 * np.log10(_speech_rms(out, speech) / _speech_rms(clean, speech))
    assert abs(level) < 2.0, level
    assert np.max(np.abs(out)) <= 0.99


def test_speech_activity_profile_beats_whole_file(mixture):
    clean, noisy, speech = mixture
    a, _ = denoise(noisy, config=DenoiseConfig(method="stationary"), speech=speech)
    b, stats = denoise(noisy, config=DenoiseConfig(method="stationary", noise_profile="whole_file"), speech=speech)
    assert stats.noise_profile == "whole_file"
    assert si_sdr(a, clean) > si_sdr(b, clean)


def test_too_little_non_speech_falls_back_to_whole_file(mixture):
    _, noisy, speech = mixture
    _, stats = denoise(noisy, config=DenoiseConfig(method="stationary", min_noise_s=60.0), speech=speech)
    assert stats.noise_profile == "whole_file"
    _, stats = denoise(noisy, config=DenoiseConfig(method="stationary"), speech=[(0.0, len(noisy) / SR)])
    assert stats.noise_profile == "whole_file" and stats.snr_before_db is None


def test_non_stationary_runs(mixture):
    clean, noisy, speech = mixture
    out, stats = denoise(noisy, config=DenoiseConfig(method="non_stationary"), speech=speech)
    assert stats.noise_profile == "none" and out.shape == noisy.shape
    assert si_sdr(out, clean) > si_sdr(noisy, clean)


def test_rnnoise_improves_and_is_aligned(mixture):
    clean, noisy, speech = mixture
    out, stats = denoise(noisy, config=DenoiseConfig(method="rnnoise"), speech=speech)
    assert stats.method == "rnnoise" and stats.noise_profile == "none"
    assert out.shape == noisy.shape and out.dtype == np.float32
    gain = si_sdr(out, clean) - si_sdr(noisy, clean)
    assert gain > 3.0, gain  # 3.9 dB measured on this (hard, running-tap) mixture
    assert np.max(np.abs(out)) <= 0.99
    # aligned to the sample (pure RNNoise, no dry mix): cross-correlation peaks at lag 0
    wet, _ = denoise(noisy, config=DenoiseConfig(method="rnnoise", prop_decrease=1.0), speech=speech)
    assert lag_of_peak(clean, wet) == 0
    assert lag_of_peak(noisy, wet) == 0
    # prop_decrease mixes in the aligned input, which helps SI-SDR a little
    assert si_sdr(out, clean) >= si_sdr(wet, clean) - 0.1


def test_rnnoise_raw_delay_is_what_we_compensate(mixture):
    import soxr

    clean, _, _ = mixture
    x48 = soxr.resample(clean[: 4 * SR + SR], SR, 48000, quality="HQ")
    y48 = rnnoise_48k(x48)
    assert lag_of_peak(x48, y48, max_lag=3000) == RNNOISE_DELAY_48K


def test_loud_input_does_not_clip(mixture):
    _, noisy, speech = mixture
    loud = (noisy / np.max(np.abs(noisy)) * 0.999).astype(np.float32)
    for method in ("stationary", "rnnoise"):
        out, _ = denoise(loud, config=DenoiseConfig(method=method), speech=speech)
        assert np.max(np.abs(out)) <= 0.99


def test_empty_audio():
    out, stats = denoise(np.zeros(0, np.float32), config=DenoiseConfig())
    assert out.shape == (0,) and stats.snr_before_db is None


def test_default_runs_vad_itself(shared_data):
    """End to end on a real AMI excerpt: VAD finds the noise profile."""
    from tasks.audio.decode import load_audio

    audio, _ = load_audio(shared_data / "ami" / "dev01.flac")
    out, stats = denoise(audio, config=DenoiseConfig())
    assert out.shape == audio.shape
    assert stats.method == DenoiseConfig().method
    assert stats.snr_before_db is not None and stats.snr_after_db is not None
    assert stats.seconds > 0


def test_zero_smoothing_means_none(mixture):
    clean, noisy, speech = mixture
    cfg = DenoiseConfig(method="stationary", freq_mask_smooth_hz=0, time_mask_smooth_ms=0)
    out, stats = denoise(noisy, config=cfg, speech=speech)
    assert stats.noise_profile == "speech_activity"
    assert si_sdr(out, clean) > si_sdr(noisy, clean)
