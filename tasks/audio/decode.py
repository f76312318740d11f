"""Load any audio file as 16 kHz mono float32 (:func:`load_audio`), or as 16 kHz float32 with
its channels kept apart (:func:`load_channels`, for recordings with one speaker per channel).

Decoding goes through ffmpeg (``ffprobe`` for the source's facts, ``ffmpeg`` streaming raw
float32 at the source's own rate and channel count). Channels are averaged, then resampled
with soxr's high-quality filter in a stream, so memory stays at the size of the output.

Every way a file can be bad has its own exception (all :class:`AudioError`) with a one-line
message that names the file and the cause.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from tasks.core.config import AudioConfig
from tasks.core.records import one_line, printable
from tasks.core.timebase import SAMPLE_RATE

class AudioError(Exception):
    """Base class for bad input; ``str(err)`` is one line naming the file and the cause."""

    cause = "bad audio"

    def __init__(self, path: str | os.PathLike[str], detail: str = "") -> None:
        self.path = os.fsdecode(path)
        self.detail = detail
        msg = f"{one_line(self.path)}: {self.cause}"  # one line whatever the name holds (\n, \xNN ...)
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)


class UnreadableInputError(AudioError):
    cause = "cannot read file"


class EmptyAudioError(AudioError):
    cause = "empty: no audio samples"


class NotAudioError(AudioError):
    cause = "not an audio file"


class CorruptAudioError(AudioError):
    cause = "truncated or corrupt audio"


class TooShortError(AudioError):
    cause = "too short to analyse"


class TooLongError(AudioError):
    cause = "too long"


class ChangedInputError(AudioError):
    cause = "changed while it was read; run again"


class DecoderMissingError(AudioError):
    cause = "ffmpeg is not installed (apt-get install -y ffmpeg)"


@dataclass(frozen=True)
class AudioInfo:
    """Facts about a decoded source file."""

    path: str
    container: str
    codec: str
    sample_rate: int
    channels: int
    sample_format: str
    bits_per_sample: int | None
    header_duration: float | None
    duration: float
    num_samples: int
    peak_dbfs: float
    rms_dbfs: float
    silent: bool
    truncated: bool
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Magic numbers of audio containers; used to tell "corrupt audio" from "not audio at all".
_MAGIC: tuple[tuple[int, bytes], ...] = (
    (0, b"RIFF"), (0, b"RF64"), (0, b"fLaC"), (0, b"OggS"), (0, b"ID3"), (4, b"ftyp"),
    (0, b"\x1a\x45\xdf\xa3"), (0, b"FORM"), (0, b".snd"), (0, b"caff"), (0, b"\xff\xf1"),
    (0, b"\xff\xf9"), (0, b"\x30\x26\xb2\x75"),
)


def _looks_like_audio_container(head: bytes) -> bool:
    if any(head[off : off + len(sig)] == sig for off, sig in _MAGIC):
        return True
    # MPEG audio frame sync (11 set bits), as in headerless MP3 files.
    return len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0


def _ffmpeg_url(path: Path) -> str:
    """``path`` as an ffmpeg ``file:`` URL: a name like ``-rf.flac`` is never read as an option,
    nor ``http:x.wav`` or ``concat:a|b`` as another protocol."""
    return "file:" + os.path.abspath(path)


def _require_ffmpeg(path: str) -> None:
    if shutil.which("ffprobe") is None or shutil.which("ffmpeg") is None:
        raise DecoderMissingError(path)


_RAN_OUT = re.compile(r"ended prematurely|Invalid PCM packet|invalid residual|Input buffer exhausted|"
                      r"End of file|[Tt]runcated|incomplete frame", re.IGNORECASE)
"""ffmpeg's words for a stream whose data stops in the middle of a frame, packet or sample: what a
cut streamed FLAC (no sample count), WebM, fragmented MP4 or headerless PCM leaves, and with no
declared duration to compare with, the only sign of it."""


def _first_error_line(stderr: str, url: str = "") -> str:
    """ffmpeg's first message line without its ``[component]`` tag and without the file's
    own URL (the error already names the file), printable whatever bytes the name holds."""
    if url:  # a name holding a line break must not split the message
        stderr = stderr.replace(url, one_line(url))
        url = one_line(url)
    for line in stderr.splitlines():
        line = line.strip()
        if line:
            line = line.split("] ", 1)[-1]
            if url and line.startswith(url + ": "):
                line = line[len(url) + 2:]
            return one_line(line)[:200]
    return ""


def _os_reason(exc: OSError, path: Path) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno == errno.ENOENT:
        return "broken symbolic link" if path.is_symlink() else "no such file"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return exc.strerror or str(exc)


def probe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Run ffprobe on ``path`` and return its first audio stream and format facts.

    Raises the matching :class:`AudioError` for missing, empty or non-audio files.
    """
    p = Path(path)
    try:
        st = os.stat(p)
        if stat.S_ISDIR(st.st_mode):
            raise UnreadableInputError(p, "is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise UnreadableInputError(p, "not a regular file")
        size = st.st_size
        with open(p, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise UnreadableInputError(p, _os_reason(exc, p)) from None
    if size == 0:
        raise EmptyAudioError(p, "0 bytes")
    _require_ffmpeg(str(p))
    proc = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", _ffmpeg_url(p)],
        capture_output=True, timeout=60,
    )
    stdout = proc.stdout.decode("utf-8", "replace")  # tags in any encoding
    stderr = proc.stderr.decode("utf-8", "surrogateescape")  # names the file, whatever its bytes
    container_ok = _looks_like_audio_container(head)
    if proc.returncode != 0:
        reason = _first_error_line(stderr, _ffmpeg_url(p)) or "ffprobe failed"
        if container_ok:
            raise CorruptAudioError(p, reason)
        raise NotAudioError(p, reason)
    info = json.loads(stdout or "{}")
    streams = [s for s in info.get("streams", []) if s.get("codec_type") == "audio"]
    if not streams:
        fmt = info.get("format", {}).get("format_name", "unknown")
        if container_ok and fmt not in ("image2", "tty"):
            raise EmptyAudioError(p, f"{fmt} file has no audio stream")
        raise NotAudioError(p, f"no audio stream (detected {fmt})")
    fmt = info.get("format", {})
    if fmt.get("format_name") in ("tty", "image2", "png_pipe", "jpeg_pipe", "txt"):
        raise NotAudioError(p, f"detected {fmt.get('format_name')}")
    return {"stream": streams[0], "format": fmt, "container_ok": container_ok}


_W64_RIFF_TAIL = bytes.fromhex("2e91cf11a5d628db04c10000")  # the Wave64 "riff" GUID after its 4 letters
_HEADER_SCAN = 64
"""Most chunks read before the data chunk when parsing a container's header."""


def declared_duration(path: str | os.PathLike[str]) -> float | None:
    """The duration a file's header declares for its audio data, from the container's own
    chunks: WAV (RIFF, RF64/BW64 with its ``ds64`` size), Wave64 and CAF (linear PCM). None when
    the container is another one or declares no size (a streamed header: 0 or all ones).

    ffprobe clamps these containers' durations to the bytes present (a WAV cut at 3 s of a
    declared 6 s reports 3 s), so a truncated file cannot be told from ffprobe's figure alone;
    the declared size of the data chunk tells it.
    """
    import struct

    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12:
                return None
            if head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
                return _riff_duration(fh, rf64=head[:4] != b"RIFF")
            if head[:4] == b"riff" and fh.seek(0) == 0 and fh.read(16)[4:16] == _W64_RIFF_TAIL:
                return _w64_duration(fh)
            if head[:4] == b"caff":
                fh.seek(8)
                return _caf_duration(fh)
    except (OSError, struct.error, ValueError, ZeroDivisionError):
        return None
    return None


def _per_second(byte_rate: float, size: int, *, unknown: tuple[int, ...]) -> float | None:
    if size in unknown or byte_rate <= 0:
        return None
    return size / byte_rate


def _riff_duration(fh: Any, *, rf64: bool) -> float | None:
    import struct

    fh.seek(12)
    byte_rate, data_size = 0, None
    for _ in range(_HEADER_SCAN):
        header = fh.read(8)
        if len(header) < 8:
            break
        cid, size = header[:4], struct.unpack("<I", header[4:])[0]
        if cid == b"ds64":
            body = fh.read(size)
            data_size = struct.unpack("<Q", body[8:16])[0]
            size = 0
        elif cid == b"fmt ":
            body = fh.read(size)
            byte_rate = struct.unpack("<I", body[8:12])[0]
            size = 0
        elif cid == b"data":
            if not (rf64 and size == 0xFFFFFFFF and data_size is not None):
                data_size = size
            return _per_second(byte_rate, data_size, unknown=(0, 0xFFFFFFFF))
        fh.seek(size + (size & 1), os.SEEK_CUR)
    return None


def _w64_duration(fh: Any) -> float | None:
    import struct

    fh.seek(40)  # riff GUID (16) + size (8) + wave GUID (16)
    byte_rate = 0
    for _ in range(_HEADER_SCAN):
        header = fh.read(24)
        if len(header) < 24:
            break
        cid, size = header[:4], struct.unpack("<Q", header[16:24])[0]
        body_size = size - 24
        if body_size < 0:
            break
        if cid == b"fmt ":
            body = fh.read(body_size)
            byte_rate = struct.unpack("<I", body[8:12])[0]
            body_size = 0
        elif cid == b"data":
            return _per_second(byte_rate, body_size, unknown=(0,))
        fh.seek(body_size + (-size % 8), os.SEEK_CUR)
    return None


def _caf_duration(fh: Any) -> float | None:
    import struct

    byte_rate = 0.0
    for _ in range(_HEADER_SCAN):
        header = fh.read(12)
        if len(header) < 12:
            break
        cid, size = header[:4], struct.unpack(">q", header[4:])[0]
        if cid == b"desc":
            body = fh.read(size)
            rate, fmt_id, _flags, bytes_per_packet, frames_per_packet = struct.unpack(">d4sIII", body[:24])
            if fmt_id == b"lpcm" and bytes_per_packet and frames_per_packet:
                byte_rate = rate * bytes_per_packet / frames_per_packet
            size = 0
        elif cid == b"data":
            return _per_second(byte_rate, size - 4, unknown=(-5,)) if size >= 4 else None  # -1: unknown size
        if size < 0:
            break
        fh.seek(size, os.SEEK_CUR)
    return None


def _to_float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) and out >= 0 else None


def _dbfs(value: float) -> float:
    return float(20.0 * np.log10(max(value, 1e-10)))


LEVEL_BLOCK = 1 << 20
"""Samples per block when measuring levels (no full-size temporary copies of a long file)."""


def _peak_and_rms(audio: np.ndarray) -> tuple[float, float]:
    """Peak and RMS of all samples, block by block."""
    flat = audio.reshape(-1)
    if not flat.size:
        return 0.0, 0.0
    peak, energy = 0.0, 0.0
    for i in range(0, flat.size, LEVEL_BLOCK):
        x = flat[i : i + LEVEL_BLOCK]
        peak = max(peak, float(np.max(np.abs(x))))
        energy += float(np.dot(x.astype(np.float64), x.astype(np.float64)))
    return peak, float(np.sqrt(energy / flat.size))


def load_audio(
    path: str | os.PathLike[str], *, config: AudioConfig | None = None
) -> tuple[np.ndarray, AudioInfo]:
    """Decode ``path`` to 16 kHz mono float32 in [-1, 1].

    Parameters
    ----------
    path : path-like
        Any audio file ffmpeg can decode.
    config : AudioConfig, optional
        Duration limits, silence threshold and the truncation policy.

    Returns
    -------
    audio : np.ndarray, shape (n,), float32
    info : AudioInfo
        Format facts of the source and the true decoded duration.

    Raises
    ------
    AudioError
        One subclass per cause; the message names the file.
    """
    return _decode(path, config=config, keep_channels=False)


def load_channels(
    path: str | os.PathLike[str], *, config: AudioConfig | None = None
) -> tuple[np.ndarray, AudioInfo]:
    """Decode ``path`` to 16 kHz float32 in [-1, 1], one row per channel of the source.

    The same decoding as :func:`load_audio` (any format and rate, odd file names, the same
    checks and errors), without averaging the channels: a mono file gives one row, a stereo
    (or dual-mono) file two. The mean of the rows equals :func:`load_audio`'s output (up to
    float rounding). Memory is the output's size: ``channels * n * 4`` bytes.

    Parameters
    ----------
    path : path-like
        Any audio file ffmpeg can decode.
    config : AudioConfig, optional
        Duration limits, silence threshold and the truncation policy.

    Returns
    -------
    channels : np.ndarray, shape (channels, n), float32
    info : AudioInfo
        Format facts of the source (``info.channels`` is the source's channel count) and the
        true decoded duration; level figures are over all channels.

    Raises
    ------
    AudioError
        One subclass per cause; the message names the file.
    """
    return _decode(path, config=config, keep_channels=True)


def _decode(
    path: str | os.PathLike[str], *, config: AudioConfig | None, keep_channels: bool
) -> tuple[np.ndarray, AudioInfo]:
    """:func:`load_audio` (``keep_channels=False``: (n,) mono) or :func:`load_channels`
    (``True``: (channels, n))."""
    cfg = config or AudioConfig()
    p = Path(path)
    facts = probe(p)
    stream, fmt = facts["stream"], facts["format"]
    sr_in = int(stream.get("sample_rate") or 0)
    channels = int(stream.get("channels") or 0)
    if sr_in <= 0 or channels <= 0:
        raise CorruptAudioError(p, "no sample rate or channel count in the audio stream")
    header_duration = _to_float(stream.get("duration")) or _to_float(fmt.get("duration"))
    declared = declared_duration(p)  # ffprobe clamps WAV/W64/CAF durations to the bytes present
    if declared is not None and (header_duration is None or declared > header_duration):
        header_duration = declared
    if header_duration is not None and header_duration > cfg.max_duration_s * 1.01:
        raise TooLongError(p, f"{header_duration:.1f} s > audio.max_duration_s={cfg.max_duration_s:g}")

    max_in_samples = int(cfg.max_duration_s * sr_in) + sr_in
    cmd = [
        "ffmpeg", "-nostdin", "-v", "error", "-i", _ffmpeg_url(p), "-map", "0:a:0", "-vn", "-sn",
        "-f", "f32le", "-acodec", "pcm_f32le", "-ar", str(sr_in), "-ac", str(channels), "pipe:1",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out_channels = channels if keep_channels else 1
    resampler = (soxr.ResampleStream(sr_in, SAMPLE_RATE, out_channels, dtype="float32", quality="HQ")
                 if sr_in != SAMPLE_RATE else None)
    frame_bytes = 4 * channels
    block = frame_bytes * max(sr_in, 1)  # one second of input per read
    pieces: list[np.ndarray] = []
    n_in = 0
    leftover = b""
    too_long = False
    non_finite = 0
    over, over_peak = 0, 0.0  # float samples beyond full scale (integer PCM never is)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        while True:
            chunk = proc.stdout.read(block)
            if not chunk:
                break
            chunk = leftover + chunk
            usable = len(chunk) - len(chunk) % frame_bytes
            leftover = chunk[usable:]
            frames = np.frombuffer(chunk[:usable], dtype="<f4").reshape(-1, channels)
            bad = ~np.isfinite(frames)
            if bad.any():  # NaN/inf (float WAVs can hold them) would spread through the resampler
                non_finite += int(bad.sum())
                frames = np.where(bad, np.float32(0), frames)
            magnitude = np.abs(frames)
            beyond = magnitude > 1.0
            if beyond.any():  # clipped below: say so (a float file at the wrong scale is not speech)
                over += int(beyond.sum())
                over_peak = max(over_peak, float(magnitude.max()))
            n_in += frames.shape[0]
            if n_in > max_in_samples:
                too_long = True
                break
            if keep_channels:
                block_out = frames.copy()  # (frames, channels)
            else:
                block_out = frames.mean(axis=1, dtype=np.float32) if channels > 1 else frames[:, 0].copy()
            pieces.append(resampler.resample_chunk(block_out, last=False) if resampler else block_out)
        if resampler is not None and not too_long:
            tail_shape = (0, out_channels) if keep_channels else (0,)
            pieces.append(resampler.resample_chunk(np.zeros(tail_shape, dtype=np.float32), last=True))
    finally:
        if too_long:
            proc.kill()
        proc.stdout.close()
        stderr = proc.stderr.read().decode("utf-8", "surrogateescape")
        proc.stderr.close()
        proc.wait()
    if too_long:
        raise TooLongError(p, f"more than audio.max_duration_s={cfg.max_duration_s:g} s of audio")

    # The output is filled piece by piece, each piece freed once copied: resident memory stays
    # about one copy of the audio (np.empty's pages are committed only as they are written).
    total = sum(len(piece) for piece in pieces)
    audio = np.empty((out_channels, total) if keep_channels else (total,), np.float32)
    at = 0
    pieces.reverse()
    while pieces:
        piece = pieces.pop()
        if keep_channels:
            audio[:, at : at + len(piece)] = piece.T
        else:
            audio[at : at + len(piece)] = piece
        at += len(piece)
        del piece
    duration = n_in / sr_in
    decode_error = _first_error_line(stderr, _ffmpeg_url(p)) if proc.returncode != 0 or stderr.strip() else ""
    if n_in == 0:
        if proc.returncode != 0:
            raise CorruptAudioError(p, decode_error or "decoder failed")
        raise EmptyAudioError(p, "the audio stream has no samples")

    warnings: list[str] = []
    if non_finite:
        warnings.append(f"{non_finite} non-finite sample(s) (NaN or infinity) replaced by silence")
    if over:
        warnings.append(f"{over} sample(s) beyond full scale (peak {over_peak:.4g}, {_dbfs(over_peak):+.1f} dBFS) "
                        "clipped to -1..1")
    truncated = False
    if header_duration is not None and header_duration - duration > max(0.1, 0.02 * header_duration):
        truncated = True
        detail = f"header says {header_duration:.2f} s, decoded {duration:.2f} s"
        if cfg.on_truncated == "error":
            raise CorruptAudioError(p, f"truncated: {detail}")
        warnings.append(f"truncated: {detail}")
    if not truncated and proc.returncode == 0:
        from tasks.audio.framing import stream_cut

        cut = stream_cut(p)  # MP3, ADTS and Ogg declare no duration: their framing tells a cut end
        if cut is None and decode_error and _RAN_OUT.search(decode_error):
            cut = f"the decoder ran out of data ({decode_error})"  # a streamed FLAC, WebM, PCM cut mid-sample
            decode_error = ""
        if cut is not None:
            truncated = True
            if cfg.on_truncated == "error":
                raise CorruptAudioError(p, f"truncated: {cut}")
            warnings.append(f"truncated: {cut}")
    if proc.returncode != 0:
        if cfg.on_truncated == "error":
            raise CorruptAudioError(p, decode_error or f"decoder exited with {proc.returncode}")
        truncated = True
        warnings.append(f"decoder error after {duration:.2f} s: {decode_error}")
    elif decode_error:
        warnings.append(f"decoder: {decode_error}")

    if duration < cfg.min_duration_s:
        raise TooShortError(p, f"{duration * 1000:.0f} ms < audio.min_duration_s={cfg.min_duration_s:g} s")

    np.clip(audio, -1.0, 1.0, out=audio)
    peak, rms = _peak_and_rms(audio)
    silent = _dbfs(rms) < cfg.silence_dbfs
    if silent:
        warnings.append(f"silent: RMS {_dbfs(rms):.1f} dBFS < audio.silence_dbfs={cfg.silence_dbfs:g}")
    bits = stream.get("bits_per_raw_sample") or stream.get("bits_per_sample")
    info = AudioInfo(
        path=str(p),
        container=str(fmt.get("format_name", "")),
        codec=str(stream.get("codec_name", "")),
        sample_rate=sr_in,
        channels=channels,
        sample_format=str(stream.get("sample_fmt", "")),
        bits_per_sample=int(bits) if bits not in (None, "", "0", 0) else None,
        header_duration=header_duration,
        duration=round(duration, 6),
        num_samples=int(audio.shape[-1]),
        peak_dbfs=round(_dbfs(peak), 2),
        rms_dbfs=round(_dbfs(rms), 2),
        silent=bool(silent),
        truncated=truncated,
        warnings=warnings,
    )
    return audio, info


def write_wav(path: str | os.PathLike[str], audio: np.ndarray, *, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write mono float audio as a 16-bit PCM WAV, atomically."""
    import soundfile as sf

    from tasks.core.storage import atomic_write_with

    return atomic_write_with(path, lambda tmp: sf.write(tmp, audio, sample_rate, subtype="PCM_16", format="WAV"))
