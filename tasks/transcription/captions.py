"""Captions (SubRip ``.srt``, WebVTT ``.vtt``) of a recording's transcript. Pure functions, no I/O.

A cue is ``(start, end, speaker, text, emotion)`` (seconds from the recording's start) or an
object with those attributes. Words need no assigning to rows: every segment row is
transcribed on its own (:mod:`tasks.stages.transcribe`), so each word belongs to the row it was
heard in.
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
"""C0 and C1 control characters except tab and newline (those become spaces)."""


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
