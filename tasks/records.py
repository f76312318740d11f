"""The data model: recording → turn → segment → result.

Small, plain records that tasks pass between each other (big arrays stay on disk).
All are frozen dataclasses with ``to_dict``/``from_dict`` so they serialise to JSON
without pickling.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

EMOTIONS: tuple[str, ...] = (
    "angry", "disgusted", "fearful", "happy", "neutral", "other", "sad", "surprised", "unknown",
)
"""Label order everywhere in emoflow (tables, arrays, JSON)."""

SegmentStatus = Literal["ok", "too_short", "overlap"]


class _Record:
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]):  # type: ignore[no-untyped-def]
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Recording(_Record):
    """One input file: its run-unique id, where it was read from and its content hash (which
    keys every artefact made from it). Decoded facts (duration, format) are the load stage's."""

    recording_id: str
    source_path: str
    sha256: str


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


@dataclass(frozen=True)
class EmotionResult(_Record):
    """The utterance-level emotion of one segment."""

    segment_id: str
    scores: tuple[float, ...]
    label: str = field(init=False)
    confidence: float = field(init=False)

    def __post_init__(self) -> None:
        if len(self.scores) != len(EMOTIONS):
            raise ValueError(f"expected {len(EMOTIONS)} scores, got {len(self.scores)}")
        best = max(range(len(EMOTIONS)), key=lambda i: self.scores[i])
        object.__setattr__(self, "label", EMOTIONS[best])
        object.__setattr__(self, "confidence", float(self.scores[best]))

    def to_dict(self) -> dict[str, Any]:
        return {"segment_id": self.segment_id, "scores": list(self.scores), "label": self.label,
                "confidence": self.confidence}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EmotionResult":
        return cls(segment_id=data["segment_id"], scores=tuple(float(s) for s in data["scores"]))


_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def make_recording_id(stem: str) -> str:
    """A filesystem- and RTTM-safe recording id from a file stem (no spaces)."""
    rid = _ID_UNSAFE.sub("-", stem).strip("-.") or "recording"
    return rid[:80]


def assign_recording_ids(items: list[tuple[str, str]]) -> list[str]:
    """Unique recording ids for ``(path_stem, sha256)`` pairs, stable for the same inputs.

    A stem shared by different contents gets ``-<first 8 hex of sha256>`` appended.
    """
    base = [make_recording_id(stem) for stem, _ in items]
    counts: dict[str, set[str]] = {}
    for b, (_, sha) in zip(base, items):
        counts.setdefault(b, set()).add(sha)
    out = []
    for b, (_, sha) in zip(base, items):
        out.append(b if len(counts[b]) == 1 else f"{b}-{sha[:8]}")
    return out


def segment_id(recording_id: str, index: int) -> str:
    """``<recording_id>_<nnnn>`` in time order."""
    return f"{recording_id}_{index:04d}"
