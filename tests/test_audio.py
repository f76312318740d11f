"""Audio loading: every format, rate and channel layout; every kind of bad input."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tasks.core.timebase import SAMPLE_RATE, compute_num_samples
from tasks.audio.decode import CorruptAudioError, EmptyAudioError, NotAudioError, TooLongError, TooShortError, UnreadableInputError, load_audio
from tasks.core.config import AudioConfig


def _tone(sr: int, seconds: float, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    if channels == 1:
        return x.astype(np.float32)
    # Channel k carries the tone scaled by (k+1)/channels: the mono mix has a known amplitude.
    return np.stack([x * (k + 1) / channels for k in range(channels)], axis=1).astype(np.float32)


def _ffmpeg(src: Path, dst: Path, *args: str) -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), *args, str(dst)], check=True)
    return dst


@pytest.fixture(scope="module")
def source_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("src") / "tone_44k_stereo.wav"
    sf.write(path, _tone(44100, 2.0, channels=2), 44100, subtype="PCM_16")
    return path


@pytest.mark.parametrize(
    "name,args",
    [
        ("pcm8.wav", ["-c:a", "pcm_u8"]),
        ("pcm16.wav", ["-c:a", "pcm_s16le"]),
        ("pcm24.wav", ["-c:a", "pcm_s24le"]),
        ("pcm32.wav", ["-c:a", "pcm_s32le"]),
        ("float.wav", ["-c:a", "pcm_f32le"]),
        ("mulaw.wav", ["-c:a", "pcm_mulaw", "-ar", "8000"]),
        ("alaw.wav", ["-c:a", "pcm_alaw", "-ar", "8000"]),
        ("x.flac", []),
        ("x.mp3", ["-c:a", "libmp3lame", "-b:a", "64k"]),
        ("x.m4a", ["-c:a", "aac", "-b:a", "64k"]),
        ("x.ogg", ["-c:a", "libvorbis"]),
        ("x.opus", ["-c:a", "libopus", "-ar", "48000"]),
        ("x.webm", ["-c:a", "libopus", "-ar", "48000"]),
        ("r96k.wav", ["-ar", "96000"]),
        ("r22k_6ch.flac", ["-ar", "22050", "-ac", "6"]),
    ],
)
def test_formats_load_as_16k_mono(source_wav: Path, tmp_path: Path, name: str, args: list[str]) -> None:
    path = _ffmpeg(source_wav, tmp_path / name, *args)
    audio, info = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert np.abs(audio).max() <= 1.0
    assert abs(info.duration - 2.0) < 0.06  # encoders pad by a frame at most
    assert abs(audio.size / 16000 - info.duration) < 0.01
    assert info.channels >= 1 and info.sample_rate >= 8000 and info.codec
    assert not info.silent and not info.truncated
    # A 440 Hz tone keeps its pitch through decode + resample (dominant FFT bin).
    mid = audio[4000:28000]
    spectrum = np.abs(np.fft.rfft(mid * np.hanning(mid.size)))
    peak_hz = np.argmax(spectrum) * 16000 / mid.size
    assert abs(peak_hz - 440) < 5


def test_stereo_is_averaged(tmp_path: Path) -> None:
    left = _tone(16000, 1.0)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    path = tmp_path / "lr.wav"
    sf.write(path, stereo, 16000, subtype="FLOAT")
    audio, info = load_audio(path)
    assert info.channels == 2
    np.testing.assert_allclose(audio, left / 2, atol=1e-6)


def test_resampling_is_band_limited(tmp_path: Path) -> None:
    # A 12 kHz tone at 48 kHz is above the 8 kHz Nyquist of the output: a proper filter removes it.
    path = tmp_path / "hi.wav"
    sf.write(path, _tone(48000, 1.0, freq=12000), 48000, subtype="FLOAT")
    audio, _ = load_audio(path)
    assert np.sqrt(np.mean(audio[1000:-1000] ** 2)) < 1e-3


def test_mp3_that_is_really_wav_loads(source_wav: Path, tmp_path: Path) -> None:
    fake = tmp_path / "really_wav.mp3"
    fake.write_bytes(source_wav.read_bytes())
    audio, info = load_audio(fake)
    assert info.container == "wav" and abs(info.duration - 2.0) < 0.01


def test_silence_loads_flagged(tmp_path: Path) -> None:
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(16000 * 2, np.float32), 16000, subtype="PCM_16")
    audio, info = load_audio(path)
    assert info.silent and audio.size == 32000 and any("silent" in w for w in info.warnings)


def test_zero_bytes(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(EmptyAudioError, match="empty.wav: empty"):
        load_audio(path)


def test_random_bytes_named_wav(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "noise.wav"
    path.write_bytes(rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(NotAudioError, match="noise.wav: not an audio file"):
        load_audio(path)


def test_text_file_is_not_audio(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp3"
    path.write_text("meeting notes\n" * 100)
    with pytest.raises(NotAudioError):
        load_audio(path)


def test_wav_header_without_data(tmp_path: Path) -> None:
    path = tmp_path / "header_only.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
    with pytest.raises(EmptyAudioError, match="header_only.wav"):
        load_audio(path)


@pytest.mark.parametrize("ext,args", [("mp3", ["-c:a", "libmp3lame"]), ("flac", []), ("m4a", ["-c:a", "aac"])])
def test_truncated_files(source_wav: Path, tmp_path: Path, ext: str, args: list[str]) -> None:
    long_wav = tmp_path / "long.wav"
    sf.write(long_wav, _tone(16000, 6.0), 16000)
    full = _ffmpeg(long_wav, tmp_path / f"full.{ext}", *args)
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(CorruptAudioError, match=f"cut.{ext}: truncated or corrupt"):
        load_audio(cut)


def test_truncated_can_be_tolerated(tmp_path: Path) -> None:
    long_wav = tmp_path / "long.wav"
    sf.write(long_wav, _tone(16000, 6.0), 16000)
    full = _ffmpeg(long_wav, tmp_path / "full.flac")
    cut = tmp_path / "cut.flac"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    audio, info = load_audio(cut, config=AudioConfig(on_truncated="warn"))
    assert info.truncated and info.duration < 5.0
    assert abs(audio.size / 16000 - info.duration) < 0.01  # the true decoded duration


def test_too_short(tmp_path: Path) -> None:
    path = tmp_path / "blip.wav"
    sf.write(path, _tone(16000, 0.05), 16000)
    with pytest.raises(TooShortError, match=r"blip.wav: too short to analyse \(50 ms"):
        load_audio(path)


def test_too_long(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    sf.write(path, _tone(16000, 3.0), 16000)
    with pytest.raises(TooLongError, match="long.wav: too long"):
        load_audio(path, config=AudioConfig(max_duration_s=2.0))


def test_unreadable_paths(tmp_path: Path) -> None:
    with pytest.raises(UnreadableInputError, match="no such file"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(UnreadableInputError, match="is a directory"):
        load_audio(tmp_path)


def test_messages_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "junk.flac"
    path.write_bytes(b"fLaC" + b"\x00" * 100)
    with pytest.raises(CorruptAudioError) as err:
        load_audio(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_real_recording_duration(shared_data: Path) -> None:
    path = shared_data / "ami" / "dev00.flac"
    audio, info = load_audio(path)
    assert info.sample_rate == 16000 and info.channels == 1
    assert abs(info.duration - sf.info(path).duration) < 0.02
    assert audio.size == round(info.duration * 16000)


def test_compute_num_samples_rounds_to_nearest() -> None:
    assert SAMPLE_RATE == 16000
    assert compute_num_samples(0.3) == 4800  # 0.3 * 16000 is 4799.999... in floats
    assert compute_num_samples(1.2345) == 19752
    assert compute_num_samples(0.00003) == 0 and compute_num_samples(0.00004) == 1  # 0.48 and 0.64 samples
    assert compute_num_samples(0.5 / 16000) == 1  # halves round up
    assert compute_num_samples(2.5, sample_rate=8000) == 20000
    assert type(compute_num_samples(1.0)) is int
