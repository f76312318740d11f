"""What a run shows while it waits: a rich bar on a terminal, plain progress lines otherwise."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from prefect.futures import PrefectFuture

from tasks.pipeline.job import RecordingJob

POLL_S = 0.5  # how often the flow looks at its futures and the stages' progress files
PROGRESS_INTERVAL_S = 30.0  # plain progress lines when stderr is not a terminal (EMOFLOW_PROGRESS_INTERVAL_S)
MAX_ACTIVITIES = 4  # recordings named in one plain progress line


def future_done(fut: PrefectFuture) -> bool:
    """Whether a task run finished (without waiting and without asking the API)."""
    wrapped = getattr(fut, "wrapped_future", None)
    return bool(wrapped.done()) if wrapped is not None else fut.state.is_final()


def future_started(fut: PrefectFuture) -> bool:
    """Whether a task run left the queue (thread pools know; Dask futures count as started)."""
    running = getattr(getattr(fut, "wrapped_future", None), "running", None)
    return bool(running()) if callable(running) else True


class RunProgress:
    """What the flow shows while it waits: finished recordings, segments, and the stage each
    running recording is in with its fraction done and ETA (read from the stages' progress
    files, :mod:`tasks.core.progress`).

    On a terminal (or with ``EMOFLOW_PROGRESS=1``) a rich bar with one line per running
    recording; otherwise a plain line every ``interval_s`` to stderr and the Prefect run log.
    """

    def __init__(self, jobs: list[RecordingJob], *, out_dir: str, logger: Any) -> None:
        self.jobs, self.out_dir, self.logger = jobs, out_dir, logger
        self.console = sys.stderr.isatty() or os.environ.get("EMOFLOW_PROGRESS") == "1"
        try:
            self.interval_s = float(os.environ.get("EMOFLOW_PROGRESS_INTERVAL_S", PROGRESS_INTERVAL_S))
        except ValueError:  # a display setting must not stop a run
            self.interval_s = PROGRESS_INTERVAL_S
        self.t0 = self.last_line = time.monotonic()
        self.bar: Any = None
        self.lines: dict[str, tuple[Any, str]] = {}  # recording id -> (rich task, stage)

    def __enter__(self) -> "RunProgress":
        from tasks.core.progress import clear_progress

        clear_progress(out_dir=self.out_dir, recording_ids=[j.recording_id for j in self.jobs])
        if self.console:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
                                TimeElapsedColumn(), transient=False, console=Console(stderr=True))
            self.bar.__enter__()
            self.main = self.bar.add_task("[bold]emoflow[/bold]", total=len(self.jobs),
                                          status=f"0/{len(self.jobs)} recordings · 0 segments")
        return self

    def __exit__(self, *exc: Any) -> None:
        from tasks.core.progress import clear_progress

        if self.bar is not None:
            for line, _ in self.lines.values():
                self.bar.remove_task(line)
            self.bar.__exit__(*exc)
        clear_progress(out_dir=self.out_dir, recording_ids=[j.recording_id for j in self.jobs])

    def update(self, chains: list[list[tuple[str, PrefectFuture]]], *, settled: int, segments: int) -> None:
        """Refresh the display; ``settled`` recordings have their outcome recorded (in order)."""
        from tasks.core.progress import describe_stage, progress_line, read_progress, stage_fraction

        now = time.time()
        finished = settled + sum(all(future_done(f) for _, f in chain) for chain in chains[settled:])
        active: dict[str, tuple[str, str, float | None]] = {}
        for job, chain in zip(self.jobs[settled:], chains[settled:]):
            current = next(((s, f) for s, f in chain if not future_done(f)), None)
            if current is None or not future_started(current[1]):
                continue
            record = read_progress(out_dir=self.out_dir, recording_id=job.recording_id)
            active[job.recording_id] = (current[0], describe_stage(record, stage=current[0], now=now),
                                        stage_fraction(record, stage=current[0]))
        counts = f"{finished}/{len(self.jobs)} recordings"
        if self.bar is not None:
            self.bar.update(self.main, completed=finished, status=f"{counts} · {segments} segments")
            for rid in [r for r in self.lines if r not in active or self.lines[r][1] != active[r][0]]:
                self.bar.remove_task(self.lines.pop(rid)[0])  # finished, or on to its next stage
            for rid, (stage, text, fraction) in active.items():
                if rid not in self.lines:  # one line per recording and stage: its clock is the stage's
                    self.lines[rid] = (self.bar.add_task(f"  {rid}", total=None, status=""), stage)
                if fraction is None:
                    self.bar.update(self.lines[rid][0], status=text)
                else:
                    self.bar.update(self.lines[rid][0], total=1.0, completed=fraction, status=text)
            return
        if time.monotonic() - self.last_line < self.interval_s:
            return
        self.last_line = time.monotonic()
        named = [f"{rid} {text}" for rid, (_, text, _) in list(active.items())[:MAX_ACTIVITIES]]
        if len(active) > MAX_ACTIVITIES:
            named.append(f"+{len(active) - MAX_ACTIVITIES} more running")
        line = progress_line(finished=finished, total=len(self.jobs), segments=segments, activities=named,
                             elapsed=time.monotonic() - self.t0)
        print(line, file=sys.stderr, flush=True)
        self.logger.info("%s", line)
