"""Timed words → speaker rows, and captions (SubRip ``.srt``, WebVTT ``.vtt``).

Pure functions, no I/O.

Words are ``(text, start, end)`` or ``(text, start, end, speaker)`` tuples, or objects with
``text``, ``start``, ``end`` (and optionally ``speaker``) attributes; times in seconds from the
recording's start. Segment rows are ``(start, end)`` / ``(start, end, speaker)`` tuples or
objects with ``start``, ``end`` and ``speaker`` attributes (e.g. :class:`tasks.records.Segment`).
A cue is ``(start, end, speaker, text, emotion)`` or an object with those attributes.
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
"""C0 and C1 control characters except tab and newline (those become spaces)."""


# ---------------------------------------------------------------------------------------
# Words → rows
# ---------------------------------------------------------------------------------------


def _word_span(word: Any) -> tuple[float, float, str | None]:
    """``(start, end, speaker or None)`` of a word tuple or object."""
    if isinstance(word, (tuple, list)):
        if len(word) not in (3, 4):
            raise ValueError(f"a word tuple is (text, start, end[, speaker]), got {word!r}")
        start, end = float(word[1]), float(word[2])
        speaker = word[3] if len(word) == 4 else None
    else:
        start, end, speaker = float(word.start), float(word.end), getattr(word, "speaker", None)
    if not (math.isfinite(start) and math.isfinite(end)) or end < start:
        raise ValueError(f"word {word!r}: times must be finite with end >= start")
    return start, end, speaker


def _row_span(row: Any) -> tuple[float, float, str | None]:
    """``(start, end, speaker or None)`` of a segment row tuple or object."""
    if isinstance(row, (tuple, list)):
        if len(row) not in (2, 3):
            raise ValueError(f"a segment row is (start, end[, speaker]), got {row!r}")
        start, end = float(row[0]), float(row[1])
        speaker = row[2] if len(row) == 3 else None
    else:
        start, end, speaker = float(row.start), float(row.end), getattr(row, "speaker", None)
    if not (math.isfinite(start) and math.isfinite(end)) or end < start:
        raise ValueError(f"segment {row!r}: times must be finite with end >= start")
    return start, end, speaker


def _distance(t: float, start: float, end: float) -> float:
    """Seconds from ``t`` to the interval ``[start, end]`` (0 inside)."""
    return max(start - t, t - end, 0.0)


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def _choose_row(start: float, end: float, speaker: str | None, rows: list[tuple[float, float, str | None]]) -> int:
    """The index of the row a word ``[start, end]`` (of ``speaker``) belongs to; see :func:`assign_words`."""
    mid = (start + end) / 2.0
    inside = [i for i, (s, e, _) in enumerate(rows) if s <= mid <= e]
    pool = inside or list(range(len(rows)))
    if speaker is not None and (len(inside) != 1):
        same = [i for i in pool if rows[i][2] == speaker]
        pool = same or pool
    return min(pool, key=lambda i: (_distance(mid, rows[i][0], rows[i][1]),
                                    -_overlap(start, end, rows[i][0], rows[i][1]),
                                    abs(mid - (rows[i][0] + rows[i][1]) / 2.0), i))


def assign_words(words_with_abs_times: Sequence[Any], segments: Sequence[Any]) -> list[list[Any]]:
    """Give every word to exactly one segment row.

    Parameters
    ----------
    words_with_abs_times : sequence
        Words with times in seconds from the recording's start (see the module docstring).
    segments : sequence
        Segment rows (see the module docstring); they may be short, overlap or leave gaps.

    Returns
    -------
    list of list
        One list per segment row, in row order, holding that row's words (the objects given)
        in input order. Every word is in exactly one list.

    Notes
    -----
    The rule, with ``m`` the word's midpoint ``(start + end) / 2``:

    1. If exactly one row contains ``m`` (``start <= m <= end``), the word is that row's.
    2. Otherwise (a tie: ``m`` lies in several overlapping rows or on the boundary of two
       adjoining ones; or a gap: in none) the candidates are the rows containing ``m``, or
       all rows when none does; if the word has a speaker and some candidates are that
       speaker's, only those stay. The word goes to the candidate nearest to ``m`` (distance
       from ``m`` to the row, 0 inside); remaining ties go to the row overlapping the word
       most, then to the row whose centre is nearest to ``m``, then to the earlier row.

    Raises
    ------
    ValueError
        Words but no rows; a word or row with non-finite times or ``end < start``.
    """
    rows = [_row_span(r) for r in segments]
    out: list[list[Any]] = [[] for _ in rows]
    if not words_with_abs_times:
        return out
    if not rows:
        raise ValueError("cannot assign words: there are no segment rows")
    for word in words_with_abs_times:
        start, end, speaker = _word_span(word)
        out[_choose_row(start, end, speaker, rows)].append(word)
    return out


# ---------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------


def clean_caption_text(text: str) -> str:
    """``text`` on one line: control characters removed, newlines and tabs made spaces, runs of
    whitespace collapsed, stripped."""
    return " ".join(CONTROL_RE.sub("", str(text)).split())


def _cue_fields(cue: Any) -> tuple[float, float, str, str, str]:
    if isinstance(cue, (tuple, list)):
        if len(cue) != 5:
            raise ValueError(f"a cue is (start, end, speaker, text, emotion), got {cue!r}")
        start, end, speaker, text, emotion = cue
    else:
        start, end, speaker, text, emotion = cue.start, cue.end, cue.speaker, cue.text, cue.emotion
    start, end = float(start), float(end)
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
        raise ValueError(f"cue {cue!r}: times must be finite with 0 <= start < end")
    return start, end, str(speaker or ""), str(text or ""), str(emotion or "")


def cue_line(speaker: str, text: str, emotion: str) -> str:
    """``SPEAKER: [emotion] text`` (each part only when non-empty), cleaned; ``""`` when the
    text is empty."""
    body = clean_caption_text(text)
    if not body:
        return ""
    emo = clean_caption_text(emotion)
    who = clean_caption_text(speaker)
    line = f"[{emo}] {body}" if emo else body
    return f"{who}: {line}" if who else line


def _milliseconds(seconds: float) -> int:
    return int(round(seconds * 1000.0))


def format_timestamp(seconds: float, *, decimal: str) -> str:
    """``HH:MM:SS<decimal>mmm`` (hours grow past two digits when needed)."""
    ms = _milliseconds(seconds)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{decimal}{ms:03d}"


def _timed_lines(cues: Sequence[Any]) -> list[tuple[int, int, str]]:
    """Cues as ``(start_ms, end_ms, line)`` sorted by time, empty ones dropped; a cue that
    rounds to zero length ends 1 ms after it starts."""
    out = []
    for cue in cues:
        start, end, speaker, text, emotion = _cue_fields(cue)
        line = cue_line(speaker, text, emotion)
        if line:
            s_ms = _milliseconds(start)
            out.append((s_ms, max(_milliseconds(end), s_ms + 1), line))
    return sorted(out, key=lambda c: (c[0], c[1]))


def _ms_stamp(ms: int, *, decimal: str) -> str:
    return format_timestamp(ms / 1000.0, decimal=decimal)


def to_srt(cues: Sequence[Any]) -> str:
    """SubRip captions.

    Parameters
    ----------
    cues : sequence
        ``(start, end, speaker, text, emotion)`` (seconds) tuples or objects.

    Returns
    -------
    str
        Numbered cues ``1``, ``2`` ... in time order, ``00:00:01,500 --> 00:00:03,000``, one text
        line ``SPEAKER: [emotion] text``, separated by blank lines (``""`` for no cues). Cues
        whose text is empty after cleaning are left out. SubRip has no escapes: ``-->`` in the
        text is written ``->`` so that no text line reads as a timing line.

    Raises
    ------
    ValueError
        A cue with non-finite times, a negative start or ``end <= start``.
    """
    blocks = []
    for n, (s, e, line) in enumerate(_timed_lines(cues), start=1):
        blocks.append(f"{n}\n{_ms_stamp(s, decimal=',')} --> {_ms_stamp(e, decimal=',')}\n"
                      f"{line.replace('-->', '->')}\n")
    return "\n".join(blocks)


def escape_vtt(text: str) -> str:
    """WebVTT cue text escaping: ``&``, ``<`` and ``>`` as character references (so ``-->``
    becomes ``--&gt;``)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(cues: Sequence[Any]) -> str:
    """WebVTT captions.

    Parameters
    ----------
    cues : sequence
        ``(start, end, speaker, text, emotion)`` (seconds) tuples or objects.

    Returns
    -------
    str
        ``WEBVTT`` then the cues in time order, ``00:00:01.500 --> 00:00:03.000`` and one
        escaped (:func:`escape_vtt`) text line ``SPEAKER: [emotion] text``, separated by blank
        lines. Cues whose text is empty after cleaning are left out.

    Raises
    ------
    ValueError
        A cue with non-finite times, a negative start or ``end <= start``.
    """
    blocks = ["WEBVTT\n"]
    for s, e, line in _timed_lines(cues):
        blocks.append(f"{_ms_stamp(s, decimal='.')} --> {_ms_stamp(e, decimal='.')}\n{escape_vtt(line)}\n")
    return "\n".join(blocks)
