"""Planning a run: find the inputs, resolve and vet the models, hash the inputs and key every stage."""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from pathlib import Path
from typing import Any

from tasks.core.config import Config
from tasks.core.errors import RunError
from tasks.core.records import Recording, assign_recording_ids, one_line, printable
from tasks.core.storage import sha256_file
from tasks.models.vetting import resolve_models
from tasks.pipeline.job import DEFAULT_REGISTRY, RecordingJob
from tasks.pipeline.registry import load_registry
from tasks.run.inputs import discover_inputs, input_failure


def plan_run(inputs: list[str], *, config: Config, out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Find the inputs and resolve the models (fail fast); writes nothing."""
    files, failures = discover_inputs(inputs, extensions=config.audio.extensions, exclude=[Path(out_dir)])
    if not files and not failures:
        shown = " ".join(one_line(str(i)) for i in inputs)
        raise RunError(f"no audio files found in {shown} (extensions: {' '.join(config.audio.extensions)})")
    return {"files": files, "failures": failures, "models": resolve_models(config)}


def prepare_run(inputs: list[str], *, config: Config, out_dir: str | os.PathLike[str],
                plan: dict[str, Any] | None = None,
                registry: str = DEFAULT_REGISTRY) -> tuple[list[RecordingJob], dict[str, Any]]:
    """Plan the run (unless ``plan`` is given), write its config, hash the inputs and compute
    every stage key."""
    from tasks.pipeline.artefacts import ArtefactStore
    from tasks.core.config import write_config

    t_start = time.perf_counter()
    started = dt.datetime.now(dt.timezone.utc)
    out = Path(out_dir)
    plan = plan or plan_run(inputs, config=config, out_dir=out)
    files, failures, models = plan["files"], list(plan["failures"]), plan["models"]
    ArtefactStore(out / ".emoflow" / "artefacts").sweep()
    write_config(config, out / "config.yaml")
    readable: list[tuple[Path, str]] = []
    for f in files:
        try:
            readable.append((f, sha256_file(f)))
        except OSError as exc:
            failures.append(input_failure(str(f), f"cannot read file ({exc.strerror or exc})"))
    ids = assign_recording_ids([f.as_posix() for f, _ in readable])
    plain = config.to_plain()
    stages = load_registry(registry)
    jobs = [RecordingJob(recording=Recording.from_path(rid, f, sha), out_dir=str(out),
                         config=plain,
                         keys=stages.compute_keys(sha256=sha, config=config, models=models), models=models,
                         registry=registry)
            for (f, sha), rid in zip(readable, ids)]
    run = {"run_id": uuid.uuid4().hex, "run_name": f"emoflow-{config.sha256()[:8]}-{started.strftime('%Y%m%dT%H%M%S')}",
           "started": started.isoformat(), "t_start": t_start, "out_dir": str(out), "config": plain,
           "models": models, "failures": failures}
    return jobs, run
