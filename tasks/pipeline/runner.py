"""The one runner of every stage: reuse what is on disk under the stage's key, or compute it
into a fresh folder and commit that folder atomically.

A content-keyed stage commits into the artefact store (:mod:`tasks.pipeline.artefacts`); a
publishing stage (export) swaps in the recording's visible folder, recording the key it was
made under and the names it carries (a renamed or moved input is published anew).

Reuse is checked, never assumed: an artefact (or published folder) whose files differ from what
was committed is discarded with one warning line naming it (stderr, or the Prefect log inside a
run) and computed again under the same key; the stage's report says so (``discarded``), and so
does the manifest.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from tasks.core.storage import NoSpaceError, atomic_write_json, no_space
from tasks.pipeline import artefacts
from tasks.pipeline.job import RecordingJob, StageReport
from tasks.pipeline.registry import load_registry
from tasks.pipeline.stage import Stage, StageContext


def published_key(job: RecordingJob, stage: str) -> str:
    """What a published folder must be made from to be reused: the stage's key and the names
    it writes (the recording's id and source path)."""
    return artefacts.stage_key(job.keys[stage], job.recording_id, job.source_path)


DISCARDED_DIR = Path(".emoflow") / "discarded"
"""``<out>/.emoflow/discarded/<stage>-<key or recording id>.json``: why an artefact was discarded,
kept until the stage that computes it again reports it (in whichever process runs it)."""


def _discard_note(job: RecordingJob, stage: str, tag: str) -> Path:
    return Path(job.out_dir) / DISCARDED_DIR / f"{stage}-{tag}.json"


def _pop_discarded(job: RecordingJob, stage: str, tag: str) -> str | None:
    note = _discard_note(job, stage, tag)
    try:
        reason = json.loads(note.read_text(encoding="utf-8")).get("reason")
    except (OSError, ValueError, AttributeError):
        return None
    note.unlink(missing_ok=True)
    return str(reason) if reason else None


def warn(message: str) -> None:
    """One warning line: to the Prefect run log inside a flow or task run (whose console handler
    shows it on stderr too), else to stderr."""
    try:
        from prefect.context import FlowRunContext, TaskRunContext

        if TaskRunContext.get() is not None or FlowRunContext.get() is not None:
            from prefect import get_run_logger

            get_run_logger().warning("%s", message)
            return
    except Exception:  # noqa: BLE001 - no Prefect here: stderr is enough
        pass
    print(f"emoflow: warning: {message}", file=sys.stderr, flush=True)


def _bad_reporter(job: RecordingJob, stage: str, tag: str):
    def on_bad(path: Path, reason: str) -> None:
        try:
            atomic_write_json(_discard_note(job, stage, tag), {"path": str(path), "reason": reason})
        except OSError:
            pass  # the warning line still says it
        warn(f"{job.recording_id}: discarded the {stage} artefact {path} ({reason}); computing it again")
    return on_bad


def kept_facts(job: RecordingJob, stage: Stage) -> dict[str, Any] | None:
    """The facts of ``stage``'s output when it is on disk under its key and intact, else None
    (a damaged one is discarded, :meth:`~tasks.pipeline.artefacts.ArtefactStore.get`)."""
    if stage.publishes:
        return artefacts.published_facts(job.recording_dir, key=published_key(job, stage.name),
                                         on_bad=_bad_reporter(job, stage.name, job.recording_id))
    key = job.keys[stage.name]
    folder = job.store.get(stage.name, key, on_bad=_bad_reporter(job, stage.name, key))
    if folder is None:
        return None
    try:
        return artefacts.read_meta(folder).get("facts", {})
    except (OSError, ValueError):  # removed between the check and now: compute it
        return None


def ensure_artefact(job: RecordingJob, dep: str) -> Path:
    """The verified artefact of ``dep``; computed again first when it was discarded (or lost)
    since the stage that made it ran: same key, so everything downstream still matches."""
    folder = job.store.get(dep, job.keys[dep], on_bad=_bad_reporter(job, dep, job.keys[dep]))
    if folder is None:
        run_stage(job, dep)
    return job.artefact(dep)


def kept_report(job: RecordingJob, name: str) -> StageReport | None:
    """The report of stage ``name`` reused from disk (checked, :func:`kept_facts`), or None
    when it must be computed."""
    t0 = time.perf_counter()
    facts = kept_facts(job, load_registry(job.registry)[name])
    return None if facts is None else StageReport(job.recording_id, name, "reused", time.perf_counter() - t0, facts)


def run_stage(job: RecordingJob, name: str) -> StageReport:
    """Reuse or compute stage ``name`` of ``job``'s recording.

    Raises whatever the stage's ``compute`` raises; nothing it half-wrote is kept.
    """
    stage = load_registry(job.registry)[name]
    t0 = time.perf_counter()
    kept = kept_report(job, name)
    if kept is not None:
        return kept
    inputs = {role: ensure_artefact(job, dep) for role, dep in stage.inputs(job.cfg).items()}
    key = job.keys[name]
    tmp = artefacts.begin_published(job.recording_dir) if stage.publishes else job.store.begin(name, key)
    try:
        facts = stage.compute(StageContext(job=job, stage=stage, out=tmp, inputs=inputs))
        seconds = time.perf_counter() - t0
        if stage.publishes:
            artefacts.commit_published(tmp, job.recording_dir, key=published_key(job, name), facts=facts)
        else:
            # content-keyed: the artefact holds no recording name (the same audio under another
            # name reuses it; names are applied by the publishing stage)
            job.store.commit(name, key, tmp, {"stage": name, "key": key, "seconds": seconds, "facts": facts})
    except Exception as exc:
        if no_space(exc):  # one line, whatever layer noticed (numpy's short write, ENOSPC, EDQUOT)
            raise NoSpaceError(job.out_dir) from None
        raise
    finally:
        if Path(tmp).exists():
            shutil.rmtree(tmp, ignore_errors=True)
    tag = job.recording_id if stage.publishes else key
    return StageReport(job.recording_id, name, "computed", seconds, facts,
                       discarded=_pop_discarded(job, name, tag))


def run_stages(job: RecordingJob) -> dict[str, StageReport]:
    """Every stage of ``job`` in order, in this process (the web UI, tests, benchmarks)."""
    return {name: run_stage(job, name) for name in load_registry(job.registry).order(job.cfg)}
