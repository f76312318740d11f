"""The one runner of every stage: reuse what is on disk under the stage's key, or compute it
into a fresh folder and commit that folder atomically.

A content-keyed stage commits into the artefact store (:mod:`tasks.pipeline.artefacts`); a
publishing stage (export) swaps in the recording's visible folder, recording the key it was
made under and the names it carries (a renamed or moved input is published anew).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from tasks.pipeline import artefacts
from tasks.pipeline.job import RecordingJob, StageReport
from tasks.pipeline.registry import load_registry
from tasks.pipeline.stage import Stage, StageContext


def published_key(job: RecordingJob, stage: str) -> str:
    """What a published folder must be made from to be reused: the stage's key and the names
    it writes (the recording's id and source path)."""
    return artefacts.stage_key(job.keys[stage], job.recording_id, job.source_path)


def kept_facts(job: RecordingJob, stage: Stage) -> dict[str, Any] | None:
    """The facts of ``stage``'s output when it is already on disk under its key, else None."""
    if stage.publishes:
        return artefacts.published_facts(job.recording_dir, key=published_key(job, stage.name))
    if job.store.get(stage.name, job.keys[stage.name]) is None:
        return None
    return job.store.meta(stage.name, job.keys[stage.name]).get("facts", {})


def reusable(job: RecordingJob, stage: str) -> bool:
    """Whether ``stage``'s output is already on disk under its key."""
    return kept_facts(job, load_registry(job.registry)[stage]) is not None


def run_stage(job: RecordingJob, name: str) -> StageReport:
    """Reuse or compute stage ``name`` of ``job``'s recording.

    Raises whatever the stage's ``compute`` raises; nothing it half-wrote is kept.
    """
    stage = load_registry(job.registry)[name]
    t0 = time.perf_counter()
    facts = kept_facts(job, stage)
    if facts is not None:
        return StageReport(job.recording_id, name, "reused", time.perf_counter() - t0, facts)
    inputs = {role: job.artefact(dep) for role, dep in stage.inputs(job.cfg).items()}
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
    finally:
        if Path(tmp).exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return StageReport(job.recording_id, name, "computed", seconds, facts)


def run_stages(job: RecordingJob) -> dict[str, StageReport]:
    """Every stage of ``job`` in order, in this process (the web UI, tests, benchmarks)."""
    return {name: run_stage(job, name) for name in load_registry(job.registry).order(job.cfg)}
