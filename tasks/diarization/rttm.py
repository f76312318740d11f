"""RTTM text: the diarization's file format, written, read and renamed.

pyannote.core is imported only when an annotation is built: renaming and exporting stored RTTM
text (:func:`rename_rttm`) never imports it.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from tasks.core.storage import atomic_write_text

if TYPE_CHECKING:
    from pyannote.core import Annotation

ANONYMOUS_URI = "recording"
"""The RTTM file id inside content-keyed diarization artefacts (they hold no recording name);
:func:`rename_rttm` gives an exported RTTM the recording's id."""


def _needs_escape(ch: str) -> bool:
    import unicodedata

    return ch == "%" or ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Zs", "Cs")


def rttm_label(label: str) -> str:
    """A speaker label as an RTTM field (which cannot hold whitespace): ``%``, whitespace,
    control and format characters percent-encoded as UTF-8 (``call agent`` → ``call%20agent``);
    any other label unchanged. :func:`label_from_rttm` is its inverse."""
    label = str(label)
    if not any(_needs_escape(ch) for ch in label):
        return label
    return "".join("".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass")) if _needs_escape(ch) else ch
                   for ch in label)


def label_from_rttm(field: str) -> str:
    """The speaker label of an RTTM field (:func:`rttm_label` undone). Only escapes that
    :func:`rttm_label` makes are decoded: a reference RTTM's ``spk%41`` stays ``spk%41``."""
    if "%" not in field:
        return field

    def decode(match: "re.Match[str]") -> str:
        try:
            text = bytes.fromhex(match.group(0).replace("%", "")).decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return match.group(0)
        return text if all(_needs_escape(ch) for ch in text) else match.group(0)

    return re.sub(r"(?:%[0-9A-F]{2})+", decode, field)


def rename_rttm(text: str, *, uri: str, speakers: dict[str, str] | None = None) -> str:
    """RTTM ``text`` of one recording (its first file id) with its file id set to ``uri`` and
    its speakers renamed by ``speakers`` (label → name). Text in, text out: no pyannote.core."""
    tracks = list(speaker_tracks(text))
    first = tracks[0][0] if tracks else None
    names = speakers or {}
    return format_rttm([(start, start + dur, names.get(label, label)) for file_id, start, dur, label in tracks
                        if file_id == first], uri=uri)


def to_rttm(annotation: Annotation, *, uri: str) -> str:
    """RTTM text of ``annotation`` with ``uri`` as file id (one SPEAKER line per track)."""
    return format_rttm([(seg.start, seg.end, label) for seg, _, label in annotation.itertracks(yield_label=True)],
                       uri=uri)


SEGMENT_PRECISION = 1e-6
"""A turn this short or shorter holds no speech (pyannote.core drops such segments too)."""


def format_rttm(tracks: "Iterable[tuple[float, float, Any]]", *, uri: str) -> str:
    """RTTM text of ``(start, end, label)`` turns with ``uri`` as file id, sorted by time then
    label; turns of no duration are left out."""
    if any(c.isspace() for c in uri):
        raise ValueError(f"RTTM uri must not contain whitespace: {uri!r}")
    lines = []
    for start, end, label in sorted(tracks, key=lambda t: (t[0], t[1], str(t[2]))):
        if end - start <= SEGMENT_PRECISION:
            continue
        lines.append(f"SPEAKER {uri} 1 {start:.3f} {end - start:.3f} <NA> <NA> {rttm_label(label)} <NA> <NA>")
    return "".join(line + "\n" for line in lines)


def write_rttm(annotation: Annotation, path: str | os.PathLike[str], *, uri: str) -> Path:
    """Write ``annotation`` as RTTM (uri = recording id), atomically. Empty → empty file."""
    return atomic_write_text(Path(path), to_rttm(annotation, uri=uri))


def read_rttm(path: str | os.PathLike[str]) -> dict[str, Annotation]:
    """Parse an RTTM file into one Annotation per uri (SPEAKER lines only)."""
    return parse_rttm(Path(path).read_text(encoding="utf-8"), source=str(path))


def parse_rttm(text: str, *, source: str = "<rttm>") -> dict[str, Annotation]:
    """Parse RTTM text into one Annotation per uri (SPEAKER lines only); ids stay strings."""
    from pyannote.core import Annotation, Segment

    out: dict[str, Annotation] = {}
    for uri, start, dur, label in speaker_tracks(text, source=source):
        ann = out.setdefault(uri, Annotation(uri=uri))
        if dur == 0:
            continue  # an empty turn holds no speech
        seg = Segment(start, start + dur)
        ann[seg, ann.new_track(seg)] = label
    return out


def speaker_tracks(text: str, *, source: str = "<rttm>") -> "Iterator[tuple[str, float, float, str]]":
    """``(file id, onset, duration, label)`` of each SPEAKER line of RTTM ``text``, checked.

    Raises
    ------
    ValueError
        A malformed line, or an onset or duration that is not a finite, non-negative number
        (the message names ``source`` and the line).
    """
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#") or parts[0] != "SPEAKER":
            continue
        if len(parts) < 8:
            raise ValueError(f"{source}:{n}: malformed RTTM line")
        try:
            start, dur = float(parts[3]), float(parts[4])
        except ValueError:
            raise ValueError(f"{source}:{n}: onset {parts[3]!r} or duration {parts[4]!r} is not a number") from None
        if not (math.isfinite(start) and math.isfinite(dur)) or start < 0 or dur < 0:
            raise ValueError(f"{source}:{n}: onset {parts[3]} and duration {parts[4]} must be finite and not "
                             "negative")
        yield parts[1], start, dur, label_from_rttm(parts[7])
