"""What each stage's artefact directory holds: file names, and one reader and writer per file.

An artefact is content-keyed (see :mod:`tasks.pipeline.artefacts`): it holds no recording name, so the
same audio under another name reuses it. Segments are stored without ids and everything after
them is addressed by the segment's *position* in ``segments.json``; ids are given by
:func:`read_segments` for the recording that reads them.

Every stage reads its inputs and writes its output through this module, so it is part of every
stage's code version (:mod:`tasks.pipeline.registry`): a change of layout never reuses old artefacts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tasks.core.records import EMOTIONS, EmotionResult, Segment, Turn, segment_id

# load
AUDIO = "audio.npy"
AUDIO_INFO = "info.json"
CHANNELS = "channels.npy"
"""(channels, n) float32, only for sources with 2+ channels (``audio.npy`` is their mix)."""
# channels
CHANNEL_DECISION = "channels.json"
# denoise
DENOISED = "denoised.npy"
DENOISED_CHANNELS = "denoised_channels.npy"
# diarize
RTTM = "diarization.rttm"
TURNS = "turns.json"
# voices
VOICES = "voices.npz"
SPEAKER_NAMES = "speakers.json"
# segment
SEGMENTS = "segments.json"
SEGMENT_FIELDS = ("speaker", "start", "end", "status")
"""What a segment artefact stores per segment (ids are derived when it is read)."""
# emotion
SCORES = "scores.npy"
EMBEDDINGS = "embeddings.npy"
FRAME_LOGITS = "frame_logits.npy"
FRAME_OFFSETS = "frame_offsets.npy"
SCORED_POSITIONS = "segment_index.json"
# transcribe
TRANSCRIPTS = "transcripts.json"
"""One record per segment position: text, language, emotion, events, words (recording seconds)."""
# screen
SCREEN = "screen.json"
FRAME_CURVES = "frames.npz"


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1, ensure_ascii=False), encoding="utf-8")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------ audio


def write_audio(folder: Path, audio: np.ndarray, *, name: str = AUDIO) -> None:
    np.save(folder / name, np.asarray(audio, dtype=np.float32))


def read_audio(folder: Path, *, mmap: bool = True) -> np.ndarray:
    """The audio of a load artefact (``audio.npy``) or a denoise artefact (``denoised.npy``)."""
    name = DENOISED if (folder / DENOISED).is_file() else AUDIO
    return np.load(folder / name, mmap_mode="r" if mmap else None)


def read_channels(folder: Path, *, mmap: bool = True) -> np.ndarray | None:
    """The per-channel audio of a load or denoise artefact ``(channels, n)``, or None (mono, or a
    denoise artefact that denoised the mix only)."""
    for name in (DENOISED_CHANNELS, CHANNELS):
        if (folder / name).is_file():
            return np.load(folder / name, mmap_mode="r" if mmap else None)
    return None


def write_channel_decision(folder: Path, *, mode: str, reason: str, figures: dict[str, Any],
                           labels: Sequence[str]) -> None:
    write_json(folder / CHANNEL_DECISION, {"mode": mode, "reason": reason, "figures": figures, "labels": list(labels)})


def channel_of(folder: Path) -> dict[str, int] | None:
    """Speaker label → channel row when the channels artefact split the recording, else None."""
    data = read_json(folder / CHANNEL_DECISION)
    return {label: i for i, label in enumerate(data["labels"])} if data["mode"] == "split" else None


def has_denoised(folder: Path) -> bool:
    """Whether the artefact holds denoised audio."""
    return (folder / DENOISED).is_file() or (folder / DENOISED_CHANNELS).is_file()


def has_audio(folder: Path) -> bool:
    """Whether the artefact holds audio (a denoise artefact with denoising off holds none)."""
    return (folder / DENOISED).is_file() or (folder / AUDIO).is_file()


# ------------------------------------------------------------------------------ diarization


def write_turns(folder: Path, turns: Sequence[Turn], overlaps: Sequence[tuple[float, float]]) -> None:
    write_json(folder / TURNS, {"turns": [t.to_dict() for t in turns], "overlaps": [list(o) for o in overlaps]})


def read_turns(folder: Path) -> tuple[list[Turn], list[tuple[float, float]]]:
    """The diarization's turns (by start) and its overlapped-speech regions."""
    data = read_json(folder / TURNS)
    return [Turn.from_dict(t) for t in data["turns"]], [(float(s), float(e)) for s, e in data["overlaps"]]


def read_rttm_text(folder: Path) -> str:
    return (folder / RTTM).read_text(encoding="utf-8")


# ----------------------------------------------------------------------------------- voices


def write_voices(folder: Path, *, centroids: dict[str, np.ndarray], names: dict[str, str]) -> None:
    """Speaker vectors (keyed by position in ``speakers.json``, which holds label → name)."""
    labels = sorted(names, key=str)
    write_json(folder / SPEAKER_NAMES, [{"label": lab, "name": names[lab]} for lab in labels])
    np.savez(folder / VOICES, **{str(i): np.asarray(centroids[lab], np.float32)
                                 for i, lab in enumerate(labels) if lab in centroids})


def read_voices(folder: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(label → vector for the speakers with enough speech, label → name for all)."""
    rows = read_json(folder / SPEAKER_NAMES)
    with np.load(folder / VOICES) as npz:
        vectors = {rows[int(k)]["label"]: np.asarray(npz[k], np.float32) for k in npz.files}
    return vectors, {r["label"]: r["name"] for r in rows}


# --------------------------------------------------------------------------------- segments


def write_segments(folder: Path, segments: Sequence[Segment]) -> None:
    write_json(folder / SEGMENTS, [{k: getattr(s, k) for k in SEGMENT_FIELDS} for s in segments])


def read_segments(folder: Path, *, recording_id: str) -> list[Segment]:
    """The segments, with ids of the recording as it is named in this run."""
    return [Segment(segment_id=segment_id(recording_id, i), recording_id=recording_id, **s)
            for i, s in enumerate(read_json(folder / SEGMENTS))]


# ---------------------------------------------------------------------------------- emotion


def write_emotion(folder: Path, *, positions: Sequence[int], results: Sequence[Any], embed_dim: int) -> None:
    """The emotion model's results for the segments at ``positions`` (each result has
    ``scores`` (9,), ``embedding`` (D,) and ``frame_logits`` (T, 9))."""
    n = len(results)
    np.save(folder / SCORES, np.stack([r.scores for r in results]).astype(np.float32) if n
            else np.zeros((0, len(EMOTIONS)), np.float32))
    np.save(folder / EMBEDDINGS, np.stack([r.embedding for r in results]).astype(np.float32) if n
            else np.zeros((0, embed_dim), np.float32))
    np.save(folder / FRAME_LOGITS, np.concatenate([r.frame_logits for r in results]).astype(np.float32) if n
            else np.zeros((0, len(EMOTIONS)), np.float32))
    lengths = [r.frame_logits.shape[0] for r in results]
    np.save(folder / FRAME_OFFSETS, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
    write_json(folder / SCORED_POSITIONS, [int(p) for p in positions])


class EmotionArtefact:
    """Read access to an emotion artefact: the scored segments' positions, their
    :class:`~tasks.core.records.EmotionResult` records, frame logits and embeddings (memory-mapped)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.positions: list[int] = [int(p) for p in read_json(folder / SCORED_POSITIONS)]
        self._row = {p: i for i, p in enumerate(self.positions)}

    def row(self, position: int) -> int | None:
        """Row of the segment at ``position`` in the arrays (None: it was not scored)."""
        return self._row.get(position)

    def results(self, segments: Sequence[Segment]) -> list[EmotionResult]:
        """One record per scored segment, in row order."""
        scores = np.load(self.folder / SCORES)
        return [EmotionResult(segments[p].segment_id, tuple(float(v) for v in scores[i]))
                for i, p in enumerate(self.positions)]

    def frame_logits(self, row: int) -> np.ndarray:
        """Row ``row``'s ``(T, 9)`` frame logits."""
        if not hasattr(self, "_offsets"):
            self._offsets = np.load(self.folder / FRAME_OFFSETS)
            self._logits = np.load(self.folder / FRAME_LOGITS, mmap_mode="r")
        a, b = self._offsets[row], self._offsets[row + 1]
        return np.asarray(self._logits[a:b], dtype=np.float32)

    def embeddings(self) -> np.ndarray:
        return np.load(self.folder / EMBEDDINGS, mmap_mode="r")


# ------------------------------------------------------------------------------- transcribe


def write_transcripts(folder: Path, records: Sequence[dict[str, Any] | None]) -> None:
    """Per segment position: ``{"text", "language", "emotion", "events", "words"}`` or None
    (not transcribed); ``words`` are ``[text, start, end]`` in recording seconds."""
    write_json(folder / TRANSCRIPTS, list(records))


def read_transcripts(folder: Path) -> dict[int, dict[str, Any]]:
    """The transcribed segments' records by segment position (empty when transcription is off)."""
    return {i: r for i, r in enumerate(read_json(folder / TRANSCRIPTS)) if r is not None}


# ----------------------------------------------------------------------------------- screen


def write_screen(folder: Path, *, positions: Sequence[int], results: Sequence[EmotionResult],
                 curves: dict[int, np.ndarray]) -> None:
    """Screened results (no ids: rows keyed by segment position) and drilled frame curves."""
    rows = []
    for pos, r in zip(positions, results):
        row = {k: v for k, v in r.to_dict().items() if k != "segment_id"}
        rows.append({"index": int(pos), **row})
    write_json(folder / SCREEN, rows)
    if curves:
        np.savez(folder / FRAME_CURVES, **{str(p): np.asarray(c, np.float32) for p, c in curves.items()})


def read_screen(folder: Path, *, segments: Sequence[Segment]) -> dict[int, EmotionResult]:
    """The screened results by segment position, named after ``segments``."""
    out = {}
    for row in read_json(folder / SCREEN):
        pos = int(row["index"])
        out[pos] = EmotionResult.from_dict({**row, "segment_id": segments[pos].segment_id})
    return out


def read_frame_curves(folder: Path) -> dict[int, np.ndarray]:
    """Frame curves ``(T, 9)`` of the drilled segments, by segment position."""
    path = folder / FRAME_CURVES
    if not path.is_file():
        return {}
    with np.load(path) as npz:
        return {int(k): np.asarray(npz[k], np.float32) for k in npz.files}


# ------------------------------------------------------------------------------ heard audio


class HeardAudio:
    """The audio each speaker is heard in: the recording's mix, or, when the channels stage split
    it, the speaker's own channel. The one answer to "which samples are this speaker's" for
    every stage that hears speakers (diarize, voices, emotion, transcribe, denoise).

    Parameters
    ----------
    audio : Path
        A load or denoise artefact (its mix and, for a split recording, its channels).
    channels : Path
        The channels artefact (the split decision and the channel labels).
    """

    def __init__(self, *, audio: Path, channels: Path) -> None:
        self.folder = audio
        self.channel_of = channel_of(channels)

    @property
    def split(self) -> bool:
        """Whether each speaker has a channel of their own."""
        return self.channel_of is not None

    def mix(self) -> np.ndarray:
        return read_audio(self.folder)

    def channels(self) -> np.ndarray:
        """``(channels, n)`` rows of a split recording."""
        rows = read_channels(self.folder)
        if rows is None:
            raise ValueError(f"{self.folder}: a split recording's artefact holds no channels")
        return rows

    def labels(self) -> list[str]:
        """The channel labels of a split recording, in channel order."""
        return [label for label, _ in sorted((self.channel_of or {}).items(), key=lambda kv: kv[1])]

    def of(self, speaker: str) -> np.ndarray:
        """The samples ``speaker`` is heard in: their channel of a split call, else the mix (an
        overlap row of several speakers is heard in the mix)."""
        if self.channel_of is not None and speaker in self.channel_of:
            return self.channels()[self.channel_of[speaker]]
        return self.mix()

    def by_speaker(self) -> np.ndarray | dict[str, np.ndarray]:
        """The mix, or speaker label → their channel's samples (split)."""
        if self.channel_of is None:
            return self.mix()
        rows = self.channels()
        return {label: rows[row] for label, row in self.channel_of.items()}
