"""The data model: recording → turn → segment → result.

Small, plain records that tasks pass between each other (big arrays stay on disk).
All are frozen dataclasses with ``to_dict``/``from_dict`` so they serialise to JSON
without pickling.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from dataclasses import asdict, dataclass, field, fields
from pathlib import PurePosixPath
from typing import Any, Literal, Sequence

import numpy as np

from tasks.core.timebase import SAMPLE_RATE, compute_num_samples

EMOTIONS: tuple[str, ...] = (
    "angry", "disgusted", "fearful", "happy", "neutral", "other", "sad", "surprised", "unknown",
)
"""Label order everywhere in emoflow (tables, arrays, JSON)."""

SegmentStatus = Literal["ok", "too_short", "overlap"]


def top_emotion(scores: Sequence[float]) -> tuple[str, float]:
    """The top label of 9 emotion scores and its score (the confidence).

    The one argmax → label of emoflow: :class:`EmotionResult`, the emotion model's results and
    the UI all take a label this way.

    Parameters
    ----------
    scores : sequence of float
        One score per label, in :data:`EMOTIONS` order.

    Returns
    -------
    (label, confidence)
        The label of the highest score (the first in :data:`EMOTIONS` order on a tie) and that score.
    """
    if len(scores) != len(EMOTIONS):
        raise ValueError(f"expected {len(EMOTIONS)} scores, got {len(scores)}")
    best = max(range(len(EMOTIONS)), key=lambda i: scores[i])
    return EMOTIONS[best], float(scores[best])


class _Record:
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]):  # type: ignore[no-untyped-def]
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


def printable(text: str) -> str:
    """``text`` with lone surrogates (the undecodable bytes of a file name, as Python decodes
    them with ``surrogateescape``) written as ``\\xNN``: always encodable as UTF-8 (JSON, CSV,
    Parquet, logs, the Prefect API), and unchanged for any valid text."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def one_line(text: str) -> str:
    """``text`` as it may appear inside one line of a message, a log line or the terminal:
    :func:`printable`, and every character that is not printable (controls such as a tab, a
    line feed, a carriage return or ESC, line and paragraph separators, invisible format and
    bidi characters such as U+200B or U+202E) written as its Python escape (``\\n``,
    ``\\x1b``, ``\\u2028``). A file name then cannot split, restyle or reorder a line.
    Idempotent; plain text comes back unchanged."""
    text = printable(str(text))
    if all(ch.isprintable() or ch == " " for ch in text):
        return text
    return "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)


@dataclass(frozen=True)
class Recording(_Record):
    """One input file: its run-unique id, where it was read from and its content hash (which
    keys every artefact made from it). Decoded facts (duration, format) are the load stage's.

    ``source_path`` is the path as every table, manifest and log shows it: the raw path, except
    that a name which is not valid UTF-8 shows its undecodable bytes as ``\\xNN``
    (:func:`printable`); ``source_bytes`` then holds the raw path's bytes in hex, and
    :attr:`open_path` is the path to open."""

    recording_id: str
    source_path: str
    sha256: str
    source_bytes: str = ""

    @classmethod
    def from_path(cls, recording_id: str, path: str | os.PathLike[str], sha256: str) -> "Recording":
        """The record of the file at ``path`` (any name the file system holds)."""
        raw = os.fspath(path)
        if isinstance(raw, bytes):
            raw = os.fsdecode(raw)
        shown = printable(raw)
        return cls(recording_id, shown, sha256, "" if shown == raw else os.fsencode(raw).hex())

    @property
    def open_path(self) -> str:
        """The path to open (the raw name, which ``source_path`` may show escaped)."""
        return os.fsdecode(bytes.fromhex(self.source_bytes)) if self.source_bytes else self.source_path


@dataclass(frozen=True)
class Turn(_Record):
    """A stretch of one speaker's speech from diarization (seconds in the recording)."""

    speaker: str
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Segment(_Record):
    """A single-speaker piece of a turn; ``status`` says whether it goes to the emotion model."""

    segment_id: str
    recording_id: str
    speaker: str
    start: float
    end: float
    status: SegmentStatus = "ok"

    @property
    def duration(self) -> float:
        return self.end - self.start

    def sample_range(self, *, sample_rate: int = SAMPLE_RATE) -> tuple[int, int]:
        """The segment's ``[first, end)`` samples at ``sample_rate`` (the one seconds → samples
        rounding of emoflow, :func:`tasks.audio.decode.compute_num_samples`)."""
        return (compute_num_samples(self.start, sample_rate=sample_rate),
                compute_num_samples(self.end, sample_rate=sample_rate))

    def cut(self, audio: np.ndarray, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """This segment's clip of ``audio`` (the recording's samples) as float32."""
        first, end = self.sample_range(sample_rate=sample_rate)
        return np.asarray(audio[first:end], dtype=np.float32)


@dataclass(frozen=True)
class EmotionResult(_Record):
    """The utterance-level emotion of one segment; after the screen, whether it was drilled
    down and the summary of its frame curve (:func:`tasks.emotion.screen.summarise_curve`)."""

    segment_id: str
    scores: tuple[float, ...]
    drilled: bool = False
    drilldown: dict[str, Any] | None = None
    label: str = field(init=False)
    confidence: float = field(init=False)

    def __post_init__(self) -> None:
        label, confidence = top_emotion(self.scores)
        object.__setattr__(self, "label", label)
        object.__setattr__(self, "confidence", confidence)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"segment_id": self.segment_id, "scores": list(self.scores), "label": self.label,
                               "confidence": self.confidence, "drilled": self.drilled}
        if self.drilldown is not None:
            out["drilldown"] = self.drilldown
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EmotionResult":
        return cls(segment_id=data["segment_id"], scores=tuple(float(s) for s in data["scores"]),
                   drilled=bool(data.get("drilled", False)), drilldown=data.get("drilldown"))


_ID_UNSAFE = re.compile(r"[^\w.-]+")  # \w is Unicode-aware: letters of any script stay
_ID_MAX = 80
_NEVER_IN_IDS = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs")
"""Unicode categories no id ever holds: controls (NUL, CR, LF, tab...), formats (bidi marks,
zero-width joiners), surrogates (undecodable bytes of a file name), private and unassigned code
points, and separators. They are replaced before the Unicode-aware substitution, so this holds
whatever ``\w`` matches."""


def make_recording_id(stem: str) -> str:
    """A folder-, URL-, CSV- and RTTM-safe id from a file stem or path: Unicode letters, digits,
    ``_``, ``.`` and ``-`` are kept (NFC-normalised), anything else becomes ``-`` (control and
    format characters, separators, undecodable bytes of a file name: :data:`_NEVER_IN_IDS`); no
    leading or trailing ``-``/``.`` (so never an option-like or hidden name, nor a formula in a
    spreadsheet); never empty."""
    text = "".join(" " if unicodedata.category(ch) in _NEVER_IN_IDS else ch for ch in str(stem))
    rid = _ID_UNSAFE.sub("-", unicodedata.normalize("NFC", text)).strip("-.")[:_ID_MAX].strip("-.")
    return rid or "recording"


def _id_at_level(rel_path: str, level: int) -> str:
    """The id from the last ``level`` components of ``rel_path`` (extension dropped), or,
    past the number of components, the whole relative path with its extension."""
    parts = PurePosixPath(rel_path).parts
    if level <= len(parts):
        tail = [*parts[-level:-1], PurePosixPath(parts[-1]).stem] if parts else [rel_path]
        return make_recording_id("-".join(tail))
    return make_recording_id(rel_path.replace("/", "-"))


def assign_recording_ids(rel_paths: list[str]) -> list[str]:
    """Unique, deterministic recording ids for the inputs of one run.

    Each input starts with its file stem (``calls/c/y.flac`` → ``y``); inputs whose ids
    collide (compared case-insensitively, for case-insensitive file systems) take one more
    parent folder at a time (``c-y``, ``d-y``), then the whole relative path with its
    extension, and as a last resort a hash of the relative path. The same set of relative
    paths always gives the same ids; ids are strings, never numbers (``0001`` stays ``0001``).

    Parameters
    ----------
    rel_paths : list of str
        Each input's path relative to the folder it was found in (POSIX separators), or its
        file name when it was given as a file.
    """
    levels = [1] * len(rel_paths)
    max_level = [len(PurePosixPath(r).parts) + 1 for r in rel_paths]
    ids = [_id_at_level(r, 1) for r in rel_paths]
    while True:
        groups: dict[str, list[int]] = {}
        for i, rid in enumerate(ids):
            groups.setdefault(rid.casefold(), []).append(i)
        clashing = [i for members in groups.values() if len(members) > 1 for i in members]
        if not clashing:
            return ids
        progressed = False
        for i in clashing:
            if levels[i] < max_level[i]:
                levels[i] += 1
                ids[i] = _id_at_level(rel_paths[i], levels[i])
                progressed = True
        if not progressed:
            for i in clashing:
                digest = hashlib.sha256(rel_paths[i].encode("utf-8", "surrogateescape")).hexdigest()[:8]
                ids[i] = f"{_id_at_level(rel_paths[i], max_level[i])[: _ID_MAX - 9]}-{digest}"
            if len({rid.casefold() for rid in ids}) == len(ids):
                return ids
            # identical relative paths (the same name given from two roots): number them
            seen: dict[str, int] = {}
            for i, rid in enumerate(ids):
                n = seen.get(rid.casefold(), 0)
                seen[rid.casefold()] = n + 1
                if n:
                    ids[i] = f"{rid}-{n + 1}"
            return ids


def segment_id(recording_id: str, index: int) -> str:
    """``<recording_id>_<nnnn>`` in time order."""
    return f"{recording_id}_{index:04d}"
