"""Progress inside a recording, reported through the run directory.

Stages run as Prefect tasks in threads or in Dask worker processes, so a long stage reports how
far it is by writing a small JSON file, ``<out>/.emoflow/progress/<recording_id>.json``
(atomically, at most every ``min_interval_s``), and the flow's main loop reads it while it waits:

``{"recording_id", "stage", "done", "total", "unit", "started", "updated"}``

``started`` and ``updated`` are wall-clock times (``time.time()``, shared by every process on the
machine). The stage functions in ``tasks/`` only take a plain ``progress(done, total)`` callable;
:class:`ProgressReporter` is that callable for one recording and stage.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from tasks.core.storage import atomic_write_json

PROGRESS_DIR = Path(".emoflow") / "progress"
MIN_INTERVAL_S = 0.5
ETA_MIN_FRACTION = 0.05  # no ETA before 5 % of a stage is done: early rates mislead

ProgressCallback = Callable[[float, float], None]


def progress_path(*, out_dir: str | os.PathLike[str], recording_id: str) -> Path:
    """Where the progress of ``recording_id`` is written in the run directory ``out_dir``."""
    return Path(out_dir) / PROGRESS_DIR / f"{recording_id}.json"


def report_progress(*, out_dir: str | os.PathLike[str], recording_id: str, stage: str, done: float,
                    total: float, unit: str = "", started: float | None = None) -> Path:
    """Write one progress record atomically (no rate limit; see :class:`ProgressReporter`).

    Parameters
    ----------
    out_dir : path
        The run directory.
    recording_id, stage : str
        Who is reporting.
    done, total : float
        Work done so far and in all, in ``unit``.
    unit : str
        What ``done`` counts (``"s"`` of audio, ``"‰"`` of the stage's work...).
    started : float, optional
        When the stage started (``time.time()``); now if omitted.
    """
    now = time.time()
    record = {"recording_id": recording_id, "stage": stage, "done": float(done), "total": float(total),
              "unit": unit, "started": float(now if started is None else started), "updated": now}
    return atomic_write_json(progress_path(out_dir=out_dir, recording_id=recording_id), record)


class ProgressReporter:
    """A ``progress(done, total)`` callable that records one stage of one recording on disk.

    Writes the first call, every call that completes the stage (``done >= total``) and otherwise
    at most one call every ``min_interval_s``. The stage's clock (``started``, for the ETA) starts
    at the first call, so model loading before it does not skew the rate. A failed write never
    fails the stage.
    """

    def __init__(self, *, out_dir: str | os.PathLike[str], recording_id: str, stage: str, unit: str = "",
                 min_interval_s: float = MIN_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.out_dir = Path(out_dir)
        self.recording_id = recording_id
        self.stage = stage
        self.unit = unit
        self.min_interval_s = float(min_interval_s)
        self.started: float | None = None
        self.writes = 0
        self._clock = clock
        self._last: float | None = None

    def __call__(self, done: float, total: float) -> None:
        now = self._clock()
        if self.started is None:
            self.started = time.time()
        final = total > 0 and done >= total
        if not final and self._last is not None and now - self._last < self.min_interval_s:
            return
        self._last = now
        try:
            report_progress(out_dir=self.out_dir, recording_id=self.recording_id, stage=self.stage, done=done,
                            total=total, unit=self.unit, started=self.started)
            self.writes += 1
        except OSError:
            pass  # progress is a display aid: a full disk must not fail the analysis


def read_progress(*, out_dir: str | os.PathLike[str], recording_id: str) -> dict[str, Any] | None:
    """The last progress record of ``recording_id``, or ``None`` (none yet, or unreadable)."""
    try:
        record = json.loads(progress_path(out_dir=out_dir, recording_id=recording_id).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and {"stage", "done", "total", "started"} <= set(record) else None


def clear_progress(*, out_dir: str | os.PathLike[str], recording_ids: list[str]) -> None:
    """Remove the progress records of ``recording_ids`` (stale ones from an earlier run)."""
    for rid in recording_ids:
        progress_path(out_dir=out_dir, recording_id=rid).unlink(missing_ok=True)


def format_duration(seconds: float) -> str:
    """``45s``, ``1m10s``, ``2h05m`` (rounded to whole seconds)."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def eta_seconds(*, done: float, total: float, elapsed: float) -> float | None:
    """Seconds left at the rate so far: ``elapsed / fraction × (1 − fraction)``.

    ``None`` until at least ``ETA_MIN_FRACTION`` of the work is done (or without a total).
    """
    if total <= 0:
        return None
    fraction = min(1.0, max(0.0, done / total))
    if fraction < ETA_MIN_FRACTION:
        return None
    return max(0.0, elapsed) / fraction * (1.0 - fraction)


def describe_stage(record: dict[str, Any] | None, *, stage: str, now: float | None = None) -> str:
    """``diarize 42% (ETA 1m10s)`` from a progress record of ``stage``; just ``stage`` when the
    record is missing or about another stage."""
    if record is None or record.get("stage") != stage or float(record.get("total", 0)) <= 0:
        return stage
    done, total = float(record["done"]), float(record["total"])
    fraction = min(1.0, max(0.0, done / total))
    text = f"{stage} {int(fraction * 100)}%"
    eta = eta_seconds(done=done, total=total, elapsed=(time.time() if now is None else now) - float(record["started"]))
    if eta is not None and fraction < 1.0:
        text += f" (ETA {format_duration(eta)})"
    return text


def stage_fraction(record: dict[str, Any] | None, *, stage: str) -> float | None:
    """The fraction done of ``stage`` in ``record`` (``None`` when it is about something else)."""
    if record is None or record.get("stage") != stage or float(record.get("total", 0)) <= 0:
        return None
    return min(1.0, max(0.0, float(record["done"]) / float(record["total"])))


def progress_line(*, finished: int, total: int, segments: int, activities: list[str], elapsed: float) -> str:
    """The plain progress line for logs:
    ``emoflow: progress 0/1 recordings · rec1 diarize 42% (ETA 1m10s) · 0 segments · 2m05s elapsed``."""
    parts = [f"emoflow: progress {finished}/{total} recordings", *activities, f"{segments} segments",
             f"{format_duration(elapsed)} elapsed"]
    return " · ".join(parts)
