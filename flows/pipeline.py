"""The emoflow Prefect flow: every recording's stages as tasks, in the order they read each
other, then the run's tables, manifest and report.

Tasks pass small records (:class:`~tasks.pipeline.job.RecordingJob`,
:class:`~tasks.pipeline.job.StageReport`); audio, embeddings and frame curves stay on disk as
keyed artefacts, so a rerun recomputes only the stages whose inputs, config, model or code
changed. Every stage runs through one runner (:func:`tasks.pipeline.runner.run_stage`); this
module only orchestrates.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from typing import Any, Iterator

from prefect import flow, task
from prefect.futures import PrefectFuture
from prefect.states import State

from flows.display import POLL_S, RunProgress, future_done
from tasks.core.config import Config
from tasks.core.errors import RunError, first_line
from tasks.core.records import one_line
from tasks.core.storage import no_space
from tasks.models.vetting import resolve_models
from tasks.pipeline.job import DEFAULT_REGISTRY, RecordingJob, StageReport
from tasks.pipeline.registry import load_registry
from tasks.pipeline.runner import kept_report, run_stage
from tasks.run.finalize import RunSummary, finalize
from tasks.run.plan import plan_run, prepare_run

__all__ = ["RunError", "RunSummary", "emoflow_run", "prepare_run", "resolve_models", "run_pipeline",
           "server_configured"]


# ---------------------------------------------------------------------------------------------
# tasks


def _permanent(exc: BaseException) -> bool:
    """Errors a retry cannot fix (bad input, missing model, bad config)."""
    from tasks.audio.decode import AudioError
    from tasks.models.hub import ModelUnavailableError

    return no_space(exc) or isinstance(exc, (AudioError, ModelUnavailableError, ValueError, KeyError, TypeError,
                                             FileNotFoundError))


def _expected(exc: BaseException) -> bool:
    """A failure that is the input's or the machine's, not emoflow's: its one line says it all."""
    from tasks.audio.decode import AudioError
    from tasks.models.hub import ModelUnavailableError

    from tasks.core.storage import NotOwnedError

    return no_space(exc) or isinstance(exc, (AudioError, ModelUnavailableError, NotOwnedError))


class _NoTracebackForExpectedFailures(logging.Filter):
    """Prefect logs a failed task run with its traceback: for bad input (a corrupt or truncated
    file, a full disk) the one-line error is the whole story (the failures table and the run's
    summary name the file and the cause); a traceback there reads as a crash. Any other
    exception keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and _expected(exc):
            record.exc_info, record.exc_text = None, None
        return True


logging.getLogger("prefect.task_runs").addFilter(_NoTracebackForExpectedFailures())


def _retry_transient(task_obj: Any, task_run: Any, state: State) -> bool:
    try:
        state.result(raise_on_failure=True)
    except BaseException as exc:  # noqa: BLE001 - we classify it
        return not _permanent(exc)
    return False


def _run_stage_task(job: RecordingJob, stage: str, upstream: StageReport | None = None) -> StageReport:
    """Reuse or compute one stage of one recording (:func:`tasks.pipeline.runner.run_stage`)."""
    return run_stage(job, stage)


STAGE_TASK = task(name="stage", task_run_name="{stage}-{job.recording_id}", retry_condition_fn=_retry_transient,
                  persist_result=False, cache_policy=None)(_run_stage_task)
"""The Prefect task of every stage (named ``<stage>-<recording id>`` in the UI)."""


def _task_runner(config: Config):
    if config.runner.kind == "dask":
        from prefect_dask import DaskTaskRunner

        if config.runner.address:
            return DaskTaskRunner(address=config.runner.address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": config.runner.max_workers, "threads_per_worker": 1,
                                              "processes": True})
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=config.runner.max_workers)


def _failure_row(job: RecordingJob, stage: str, exc: BaseException) -> dict[str, str]:
    """One line naming the file and the cause (a name holding line breaks or escapes shown
    escaped, :func:`one_line`, never cutting the message short)."""
    shown = one_line(job.source_path)
    text = str(exc)
    for name in {job.recording.open_path, job.source_path}:
        text = text.replace(name, shown)
    message = first_line(RuntimeError(text)) if text.strip() else type(exc).__name__
    message = one_line(message)
    if shown not in message:
        message = f"{shown}: {message}"
    return {"input": job.source_path, "stage": stage, "error": type(exc).__name__, "message": message[:500]}



@flow(name="emoflow", log_prints=False, persist_result=False)
def emoflow_run(jobs: list[RecordingJob], run: dict[str, Any],
                kept: list[list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """Process recordings, then write the run's tables, manifest and report.

    ``kept`` holds, per job, the reports of its leading stages an earlier run left on disk
    (:func:`kept_reports`); found here when not given.
    """
    from prefect import get_run_logger

    logger = get_run_logger()
    _claim_run_dir(run, logger)
    config = Config.model_validate(run["config"])
    retries, delay = config.runner.retries, config.runner.retry_delay_s
    stage_task = STAGE_TASK.with_options(retries=retries, retry_delay_seconds=delay)
    order = load_registry(jobs[0].registry).order(config) if jobs else ()  # each stage after what it reads
    if kept is None:
        kept = [kept_reports(job, order) for job in jobs]
    kept = [list(reports) for reports in kept]
    chains: list[list[tuple[str, PrefectFuture]]] = []
    for job, reports in zip(jobs, kept):
        futures: list[tuple[str, PrefectFuture]] = []
        upstream = None
        for stage in order[len(reports):]:  # no task run for a stage whose output is on disk
            upstream = stage_task.submit(job, stage, upstream)
            futures.append((stage, upstream))
        chains.append(futures)
    outcomes: list[dict[str, Any]] = []
    total_segments = 0
    with RunProgress(jobs, out_dir=run["out_dir"], logger=logger) as progress:
        for job, futures, reports in zip(jobs, chains, kept):
            failure = None
            for stage, fut in futures:
                while not future_done(fut):
                    fut.wait(timeout=POLL_S)
                    progress.update(chains, settled=len(outcomes), segments=total_segments)
                fut.wait()
                state = fut.state
                if state.is_completed():
                    reports.append(fut.result().to_dict())
                    continue
                try:
                    state.result(raise_on_failure=True)
                except BaseException as exc:  # noqa: BLE001
                    failure = _failure_row(job, stage, exc)
                    logger.error("%s", failure["message"])
                break
            if failure is None:
                seg_facts = next((r["facts"] for r in reports if r["stage"] == "export"), {})
                total_segments += int(seg_facts.get("segments", 0) or 0)
                logger.info("%s: %s", job.recording_id, ", ".join(f"{r['stage']} {r['status']}" for r in reports))
            outcomes.append({"recording_id": job.recording_id, "reports": reports, "failure": failure})
            progress.update(chains, settled=len(outcomes), segments=total_segments)
    try:
        summary = finalize(jobs, outcomes, run)
    except OSError as exc:
        if not no_space(exc):
            raise
        logger.error("no space left on %s", run["out_dir"])
        return {"error": f"no space left on {run['out_dir']}: free some space and run again (what was written "
                         "is checked, and recomputed where incomplete)"}
    try:
        _publish_artifacts(summary, config.sha256())
    except Exception as exc:  # artifacts are a convenience; never lose results over them
        logger.warning("could not publish Prefect artifacts: %s", exc)
    return summary.to_dict()


def kept_reports(job: RecordingJob, order: tuple[str, ...]) -> list[dict[str, Any]]:
    """The reports of ``job``'s leading stages (in ``order``) whose output is on disk and
    intact (:func:`tasks.pipeline.runner.kept_report`): a file check each, no task run. Stops at
    the first stage to compute (or whose check fails: its task run reports why)."""
    reports: list[dict[str, Any]] = []
    for stage in order:
        try:
            report = kept_report(job, stage)
        except Exception:  # noqa: BLE001 - the task run will compute it (and report any failure)
            break
        if report is None:
            break
        reports.append(report.to_dict())
    return reports


def _computes_a_model(jobs: list[RecordingJob], kept: list[list[dict[str, Any]]], config: Config) -> bool:
    """Whether any stage left to compute runs a model (the run may last minutes or hours)."""
    if not jobs:
        return False
    registry = load_registry(jobs[0].registry)
    order = registry.order(config)
    return any(registry[stage].models for reports in kept for stage in order[len(reports):])


def _claim_run_dir(run: dict[str, Any], logger: Any) -> None:
    """Record this flow run in the run directory's lock; mark a predecessor that died while
    running (killed, machine lost) as ``Crashed`` on the Prefect server, where it would
    otherwise stay ``Running`` forever."""
    from prefect.runtime import flow_run

    from tasks.run.rundir import update_lock_record

    update_lock_record(run["out_dir"], flow_run_id=str(flow_run.id))
    dead = run.get("crashed_flow_run")
    if not dead:
        return
    try:
        from prefect.client.orchestration import get_client
        from prefect.states import Crashed

        with get_client(sync_client=True) as client:
            previous = client.read_flow_run(dead["flow_run_id"])
            if previous.state is not None and not previous.state.is_final():
                client.set_flow_run_state(
                    previous.id, Crashed(message=f"emoflow process {dead.get('pid')} on {dead.get('host')} died "
                                                 f"while writing {run['out_dir']}"), force=True)
                logger.warning("marked flow run %s of the dead process %s as Crashed", previous.name, dead.get("pid"))
    except Exception as exc:  # another server, or the run was deleted: nothing to mend
        logger.info("previous flow run %s not marked Crashed: %s", dead["flow_run_id"], exc)


def _publish_artifacts(summary: "RunSummary", config_sha: str) -> None:
    """A table artifact of the segments and a markdown summary (label × speaker counts)."""
    import pandas as pd
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    table = pd.read_parquet(summary.out_dir / "segments.parquet")
    scored = table[table["label"].notna()]
    rows = scored[["recording_id", "segment_id", "speaker", "start", "end", "label", "confidence", "drilled"]]
    create_table_artifact(key="emoflow-segments", table=rows.head(500).round(3).to_dict(orient="records"),
                          description=f"Segments (first 500 of {len(rows)}), config {config_sha[:8]}")
    md = [f"# emoflow run (config {config_sha[:8]})", "",
          f"{summary.recordings} recordings, {len(summary.failed)} failed, {summary.segments} segments, "
          f"{summary.drilled} drilled (confidence below the threshold)", ""]
    if len(scored):
        counts = scored.pivot_table(index="speaker", columns="label", values="segment_id", aggfunc="count",
                                    fill_value=0)
        md.append("| speaker | " + " | ".join(counts.columns) + " |")
        md.append("|---" * (len(counts.columns) + 1) + "|")
        for spk, r in counts.iterrows():
            md.append(f"| {spk} | " + " | ".join(str(int(v)) for v in r.values) + " |")
    create_markdown_artifact(key="emoflow-summary", markdown="\n".join(md))


def check_server(timeout: float = 3.0) -> None:
    """When PREFECT_API_URL names a server, check that it answers (``/health``) within
    ``timeout`` seconds; RunError (one line: the URL and the fix) otherwise."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return  # a temporary server is started for the run
    import httpx

    try:
        httpx.get(str(url).rstrip("/") + "/health", timeout=timeout).raise_for_status()
    except Exception as exc:  # noqa: BLE001 - refused, unreachable, timeout, not a Prefect API
        raise RunError(f"no Prefect server answers at PREFECT_API_URL={url} ({type(exc).__name__}): start it "
                       "(`prefect server start`), or fix the URL, or unset PREFECT_API_URL "
                       "(`prefect config unset PREFECT_API_URL`) to run with a temporary server") from None


@contextmanager
def _heartbeats(on: bool) -> Iterator[None]:
    """Prefect's flow-run heartbeats (crash detection for long runs) only where a model stage
    computes: a run that only screens and exports again lasts seconds, and stopping the
    heartbeat thread costs up to a second at its end (it sleeps in 1 s steps). emoflow marks
    a run whose process died as Crashed itself (:func:`_claim_run_dir`)."""
    if on:
        yield
        return
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def server_configured() -> bool:
    """Whether Prefect talks to a running server (PREFECT_API_URL) rather than an ephemeral one."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def run_pipeline(inputs: list[str], *, config: Config, out_dir: str | os.PathLike[str],
                 registry: str = DEFAULT_REGISTRY) -> RunSummary:
    """Run emoflow over ``inputs`` into ``out_dir``: the entry point of ``emoflow run``.

    The run holds ``out_dir``'s lock from before it writes anything until its manifest is
    written, so the tables, ``config.yaml`` and ``manifest.json`` always come from one run.

    Raises
    ------
    RunError
        No inputs, a model is unavailable, or ``out_dir`` is unusable or busy (one line).
    """
    from tasks.core.storage import NoSpaceError
    from tasks.run.rundir import RunDirError, run_dir_lock

    check_server()  # before any work: an unreachable server fails in seconds, not after the run
    try:
        plan = plan_run(inputs, config=config, out_dir=out_dir)
        with run_dir_lock(out_dir) as lock:
            jobs, run = prepare_run(inputs, config=config, out_dir=out_dir, plan=plan, registry=registry)
            if lock.previous_crashed and lock.previous.get("flow_run_id"):
                run["crashed_flow_run"] = lock.previous
            if not jobs:  # every input was unreadable: nothing to orchestrate
                return finalize([], [], run)
            if not server_configured():
                print("emoflow: no Prefect server configured; starting a temporary one for this run (15-25 s). "
                      "For faster runs start one once (`prefect server start`) and "
                      "`prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api`.", file=sys.stderr, flush=True)
            order = load_registry(registry).order(config)
            kept = [kept_reports(job, order) for job in jobs]
            flow_fn = emoflow_run.with_options(flow_run_name=run["run_name"], task_runner=_task_runner(config))
            with _heartbeats(_computes_a_model(jobs, kept, config)):
                result = flow_fn(jobs, run, kept)
            if result.get("error"):  # the run stopped (no space left): nothing it wrote is trusted
                raise RunError(result["error"])
            return RunSummary.from_dict(result)
    except RunDirError as exc:
        raise RunError(str(exc)) from None
    except NoSpaceError as exc:
        raise RunError(str(exc)) from None
    except OSError as exc:
        if no_space(exc):
            raise RunError(f"no space left on {out_dir}: free some space and run again (what was "
                           "written is checked, and recomputed where incomplete)") from None
        raise
