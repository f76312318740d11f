"""The emoflow Prefect flow: per recording load → denoise → diarize → segment → emotion →
screen/drill-down → export, then the run-level tables, manifest and report.

Tasks pass small records (:class:`~flows.recording.RecordingJob`, :class:`~flows.recording.StageReport`);
audio, embeddings and frame curves stay on disk as keyed artefacts, so a rerun recomputes only
the stages whose inputs, config section, model or code changed.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.futures import PrefectFuture
from prefect.states import State

from flows.recording import STAGE_FUNCTIONS, RecordingJob, StageReport
from tasks.stages import STAGES, compute_keys, stage_dependencies
from tasks.config import Config
from tasks.errors import first_line
from tasks.inputs import discover_inputs, input_failure
from tasks.records import Recording, assign_recording_ids
from tasks.storage import atomic_write_json, sha256_file

try:
    from importlib.metadata import version as _version

    EMOFLOW_VERSION = _version("emoflow")
except Exception:  # not installed: running from a checkout
    EMOFLOW_VERSION = "0.1.0"


class RunError(Exception):
    """The run cannot start (no inputs, a model is unavailable); the message is one line."""


# ---------------------------------------------------------------------------------------------
# inputs and models


def check_models(models: dict[str, dict[str, Any]]) -> None:
    """Vet resolved model files before any recording is processed: each checkpoint safe to read
    (no code runs from it) and fitting its model, emotion2vec's config.yaml and tokens.txt usable.

    Raises
    ------
    ModelUnavailableError
        One line: the file at fault and why.
    """
    from tasks.checkpoints import read_pyannote_checkpoint
    from tasks.emotion import check_emotion_model
    from tasks.models import already_vetted, mark_vetted
    from tasks.speaker_embedding import check_campplus

    checks = {"emotion": check_emotion_model, "segmentation": read_pyannote_checkpoint, "embedding": check_campplus}
    for kind, check in checks.items():
        record = models.get(kind)
        if record is None or already_vetted(kind, record):
            continue
        check(record["path"])
        mark_vetted(kind, record)


def resolve_models(config: Config, *, load: bool = False) -> dict[str, dict[str, Any]]:
    """Resolve every model the config needs and vet its files (:func:`check_models`), then
    optionally load them; fail fast with a one-line :class:`RunError`."""
    from tasks.models import ModelUnavailableError, resolve
    from tasks.testmodels import is_test_model

    out: dict[str, dict[str, Any]] = {}
    try:
        emotion = resolve(config.emotion.model, kind="emotion", hub=config.emotion.hub)
        out["emotion"] = {"id": config.emotion.model, "path": emotion.path, "sha256": emotion.sha256,
                          "source": emotion.source, "is_test_model": is_test_model(emotion.path)}
        if config.diarization.pipeline == "offline":
            seg = resolve(config.diarization.segmentation_model, kind="segmentation")
            emb = resolve(config.diarization.embedding_model, kind="embedding")
            out["segmentation"] = {"id": seg.ref, "path": seg.path, "sha256": seg.sha256, "source": seg.source}
            out["embedding"] = {"id": emb.ref, "path": emb.path, "sha256": emb.sha256, "source": emb.source}
        else:
            out["diarization_pipeline"] = {"id": config.diarization.pipeline, "path": "", "sha256": "",
                                           "source": "pyannote"}
        check_models(out)
        if config.diarization.known_speakers and "embedding" in out:
            from tasks.speakers import SpeakerError, load_voiceprints

            try:  # a missing store or a voiceprint of another CAM++ model stops the run before it starts
                load_voiceprints(store=Path(config.diarization.known_speakers).expanduser(),
                                 model_sha256=out["embedding"]["sha256"])
            except SpeakerError as exc:
                raise RunError(str(exc)) from None
    except ModelUnavailableError as exc:
        raise RunError(str(exc)) from None
    if load:
        try:
            from tasks.emotion import get_emotion_model

            get_emotion_model(config.emotion)
            from tasks.diarize import load_diarization_pipeline

            load_diarization_pipeline(config.diarization)
        except ModelUnavailableError as exc:  # one line naming the file already
            raise RunError(str(exc)) from None
        except Exception as exc:  # loading errors are reported, not raised as tracebacks
            raise RunError(f"model failed to load: {type(exc).__name__}: {first_line(exc, limit=300)}") from None
    return out


# ---------------------------------------------------------------------------------------------
# tasks


def _permanent(exc: BaseException) -> bool:
    """Errors a retry cannot fix (bad input, missing model, bad config)."""
    from tasks.audio import AudioError
    from tasks.models import ModelUnavailableError

    return isinstance(exc, (AudioError, ModelUnavailableError, ValueError, KeyError, TypeError, FileNotFoundError))


def _retry_transient(task_obj: Any, task_run: Any, state: State) -> bool:
    try:
        state.result(raise_on_failure=True)
    except BaseException as exc:  # noqa: BLE001 - we classify it
        return not _permanent(exc)
    return False


def _stage_task(stage: str):
    fn = STAGE_FUNCTIONS[stage]

    def run_stage(job: RecordingJob, upstream: StageReport | None = None) -> StageReport:
        return fn(job)

    run_stage.__name__ = f"{stage}_stage"
    run_stage.__doc__ = fn.__doc__
    return task(name=stage, task_run_name=f"{stage}-{{job.recording_id}}", retry_condition_fn=_retry_transient,
                persist_result=False, cache_policy=None)(run_stage)


STAGE_TASKS = {stage: _stage_task(stage) for stage in STAGES}


# ---------------------------------------------------------------------------------------------
# the flow


@dataclass
class RunSummary:
    out_dir: Path
    recordings: int
    failed: list[dict[str, str]] = field(default_factory=list)
    segments: int = 0
    drilled: int = 0
    wall_s: float = 0.0
    stage_s: float = 0.0
    report: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "recordings": self.recordings, "failed": self.failed,
                "segments": self.segments, "drilled": self.drilled, "wall_s": self.wall_s,
                "stage_s": self.stage_s, "report": self.report}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunSummary":
        return cls(**{**d, "out_dir": Path(d["out_dir"])})

    def describe(self) -> str:
        lines = [f"emoflow: {self.recordings} recording(s) processed, {len(self.failed)} failed, "
                 f"{self.segments} segment(s), {self.drilled} drilled; results in {self.out_dir}"]
        for f in self.failed:
            lines.append(f"  failed: {f['message']} [{f['stage']}]")
        return "\n".join(lines)


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
    message = first_line(exc)
    if job.source_path not in message:
        message = f"{job.source_path}: {message}"
    return {"input": job.source_path, "stage": stage, "error": type(exc).__name__, "message": message[:500]}


POLL_S = 0.5  # how often the flow looks at its futures and the stages' progress files
PROGRESS_INTERVAL_S = 30.0  # plain progress lines when stderr is not a terminal (EMOFLOW_PROGRESS_INTERVAL_S)
MAX_ACTIVITIES = 4  # recordings named in one plain progress line


def _future_done(fut: PrefectFuture) -> bool:
    """Whether a task run finished (without waiting and without asking the API)."""
    wrapped = getattr(fut, "wrapped_future", None)
    return bool(wrapped.done()) if wrapped is not None else fut.state.is_final()


def _future_started(fut: PrefectFuture) -> bool:
    """Whether a task run left the queue (thread pools know; Dask futures count as started)."""
    running = getattr(getattr(fut, "wrapped_future", None), "running", None)
    return bool(running()) if callable(running) else True


class _RunProgress:
    """What the flow shows while it waits: finished recordings, segments, and the stage each
    running recording is in with its fraction done and ETA (read from the stages' progress
    files, :mod:`tasks.progress`).

    On a terminal (or with ``EMOFLOW_PROGRESS=1``) a rich bar with one line per running
    recording; otherwise a plain line every ``interval_s`` to stderr and the Prefect run log.
    """

    def __init__(self, jobs: list[RecordingJob], order: tuple[str, ...], *, out_dir: str, logger: Any) -> None:
        self.jobs, self.order, self.out_dir, self.logger = jobs, order, out_dir, logger
        self.console = sys.stderr.isatty() or os.environ.get("EMOFLOW_PROGRESS") == "1"
        try:
            self.interval_s = float(os.environ.get("EMOFLOW_PROGRESS_INTERVAL_S", PROGRESS_INTERVAL_S))
        except ValueError:  # a display setting must not stop a run
            self.interval_s = PROGRESS_INTERVAL_S
        self.t0 = self.last_line = time.monotonic()
        self.bar: Any = None
        self.lines: dict[str, tuple[Any, str]] = {}  # recording id -> (rich task, stage)

    def __enter__(self) -> "_RunProgress":
        from tasks.progress import clear_progress

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
        from tasks.progress import clear_progress

        if self.bar is not None:
            for line, _ in self.lines.values():
                self.bar.remove_task(line)
            self.bar.__exit__(*exc)
        clear_progress(out_dir=self.out_dir, recording_ids=[j.recording_id for j in self.jobs])

    def update(self, chains: list[list[tuple[str, PrefectFuture]]], *, settled: int, segments: int) -> None:
        """Refresh the display; ``settled`` recordings have their outcome recorded (in order)."""
        from tasks.progress import describe_stage, progress_line, read_progress, stage_fraction

        now = time.time()
        finished = settled + sum(all(_future_done(f) for _, f in chain) for chain in chains[settled:])
        active: dict[str, tuple[str, str, float | None]] = {}
        for job, chain in zip(self.jobs[settled:], chains[settled:]):
            current = next(((s, f) for s, f in chain if not _future_done(f)), None)
            if current is None or not _future_started(current[1]):
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


def _progress(jobs: list[RecordingJob], order: tuple[str, ...], *, out_dir: str, logger: Any) -> _RunProgress:
    return _RunProgress(jobs, order, out_dir=out_dir, logger=logger)


@flow(name="emoflow", log_prints=False, persist_result=False)
def emoflow_run(jobs: list[RecordingJob], run: dict[str, Any]) -> dict[str, Any]:
    """Process recordings, then write the run's tables, manifest and report."""
    from prefect import get_run_logger

    logger = get_run_logger()
    _claim_run_dir(run, logger)
    config = Config.model_validate(run["config"])
    retries, delay = config.runner.retries, config.runner.retry_delay_s
    tasks_ = {s: t.with_options(retries=retries, retry_delay_seconds=delay) for s, t in STAGE_TASKS.items()}
    order = tuple(stage_dependencies(config))  # each stage after what it reads
    chains: list[list[tuple[str, PrefectFuture]]] = []
    kept: list[list[dict[str, Any]]] = []  # reports of the leading stages an earlier run left on disk
    for job in jobs:
        futures: list[tuple[str, PrefectFuture]] = []
        reports, upstream = [], None
        for stage in order:
            if not futures and _kept_report(job, stage, reports):
                continue  # no task run for a stage whose output is on disk: a file check is enough
            upstream = tasks_[stage].submit(job, upstream)
            futures.append((stage, upstream))
        chains.append(futures)
        kept.append(reports)
    outcomes: list[dict[str, Any]] = []
    total_segments = 0
    with _progress(jobs, order, out_dir=run["out_dir"], logger=logger) as progress:
        for job, futures, reports in zip(jobs, chains, kept):
            failure = None
            for stage, fut in futures:
                while not _future_done(fut):
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
    summary = finalize(jobs, outcomes, run)
    try:
        _publish_artifacts(summary, config.sha256())
    except Exception as exc:  # artifacts are a convenience; never lose results over them
        logger.warning("could not publish Prefect artifacts: %s", exc)
    return summary.to_dict()


def _kept_report(job: RecordingJob, stage: str, reports: list[dict[str, Any]]) -> bool:
    """Report ``stage`` as reused without a task run when its output is on disk; False (run it
    as a task) when it is not, or when reading what is kept fails."""
    try:
        if not job.reusable(stage):
            return False
        report = STAGE_FUNCTIONS[stage](job)
    except Exception:  # noqa: BLE001 - the task run will compute it (and report any failure)
        return False
    reports.append(report.to_dict())
    return True


def _claim_run_dir(run: dict[str, Any], logger: Any) -> None:
    """Record this flow run in the run directory's lock; mark a predecessor that died while
    running (killed, machine lost) as ``Crashed`` on the Prefect server, where it would
    otherwise stay ``Running`` forever."""
    from prefect.runtime import flow_run

    from tasks.rundir import update_lock_record

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


def finalize(jobs: list[RecordingJob], outcomes: list[dict[str, Any]], run: dict[str, Any]) -> RunSummary:
    """Write segments.parquet/.csv, embeddings, failures.csv, manifest.json and report.html."""
    from tasks.export import write_failures, write_run_tables
    from tasks.rundir import prune_recordings

    config = Config.model_validate(run["config"])
    out = Path(run["out_dir"])
    failures = list(run["failures"])
    ok_ids = []
    recordings: dict[str, Any] = {}
    for job, outcome in zip(jobs, outcomes):
        if outcome["failure"] is not None:
            failures.append(outcome["failure"])
        else:
            ok_ids.append(job.recording_id)
        recordings[job.recording_id] = {
            "source_path": job.source_path,
            "stages": {r["stage"]: {"status": r["status"], "seconds": round(r["seconds"], 4)} for r in outcome["reports"]},
            "facts": {r["stage"]: r["facts"] for r in outcome["reports"] if r["facts"]},
            "failed": outcome["failure"],
        }
    t0 = time.perf_counter()
    try:
        links = _link_speakers([j for j in jobs if j.recording_id in set(ok_ids)], config=config)
    except Exception as exc:  # linking is run-level extra: never lose the recordings' results over it
        links = {}
        failures.append({"input": str(out), "stage": "link_speakers", "error": type(exc).__name__,
                         "message": f"{out}: speakers not linked across recordings: {first_line(exc)}"})
    for (rid, speaker), gid in links.items():
        recordings[rid].setdefault("global_speakers", {})[speaker] = gid
    table = write_run_tables(out, ok_ids, csv_too=config.export.csv, global_speakers=links)
    # the visible tree shows exactly this run: outputs of recordings that are not its inputs
    # (or failed in it) go; their artefacts stay under .emoflow/ for reuse
    prune_recordings(out, keep=ok_ids)
    write_failures(out, failures)
    summary = RunSummary(out_dir=out, recordings=len(ok_ids), failed=failures,
                         segments=int((table["status"] == "ok").sum()) if len(table) else 0,
                         drilled=int(table["drilled"].sum()) if len(table) else 0)
    summary.stage_s = sum(s["seconds"] for r in recordings.values() for s in r["stages"].values())
    summary.stage_s += time.perf_counter() - t0
    _write_manifest(out, config, run, jobs, recordings, failures, summary)
    if config.report.enabled:
        t0 = time.perf_counter()
        try:
            from tasks.report import build_report

            report_path = build_report(out, config=config.report)
            summary.report = str(report_path.relative_to(out))
        except Exception as exc:  # a report problem must not lose the results
            failures.append({"input": str(out), "stage": "report", "error": type(exc).__name__,
                             "message": f"{out}: report failed: {first_line(exc)}"})
            write_failures(out, failures)
        summary.stage_s += time.perf_counter() - t0
    summary.wall_s = time.perf_counter() - run["t_start"]
    _write_manifest(out, config, run, jobs, recordings, failures, summary)
    return summary


def _link_speakers(jobs: list[RecordingJob], *, config: Config) -> dict[tuple[str, str], str]:
    """The run's global speakers from the recordings' voices artefacts (:mod:`tasks.voices`)."""
    from tasks import layout
    from tasks.voices import link_run_speakers

    voices = {}
    for job in jobs:
        folder = job.store.get("voices", job.keys["voices"])
        if folder is not None:
            voices[job.recording_id] = layout.read_voices(folder)
    return link_run_speakers(voices, threshold=config.diarization.link_threshold)


def _write_manifest(out: Path, config: Config, run: dict[str, Any], jobs: list[RecordingJob],
                    recordings: dict[str, Any], failures: list[dict[str, str]], summary: RunSummary) -> None:
    inputs = []
    for job in jobs:
        facts = recordings.get(job.recording_id, {}).get("facts", {}).get("load", {})
        inputs.append({"path": job.source_path, "recording_id": job.recording_id, "sha256": job.sha256,
                       "duration": facts.get("duration"), "format": facts.get("format"),
                       "silent": facts.get("silent"), "warnings": facts.get("warnings", [])})
    manifest = {
        "run_id": run["run_id"],
        "run_name": run["run_name"],
        "started": run["started"],
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(),
        "emoflow_version": EMOFLOW_VERSION,
        "python": platform.python_version(),
        "config": config.to_plain(),
        "config_sha256": config.sha256(),
        "section_sha256": {s: config.section_hash(s) for s in config.to_plain()},
        "models": run["models"],
        "inputs": inputs,
        "recordings": recordings,
        "failures": failures,
        "totals": {"recordings": summary.recordings, "failed": len(failures), "segments": summary.segments,
                   "drilled": summary.drilled, "stage_seconds": round(summary.stage_s, 3),
                   "wall_seconds": round(time.perf_counter() - run["t_start"], 3)},
        "report": summary.report,
    }
    atomic_write_json(out / "manifest.json", manifest)


def server_configured() -> bool:
    """Whether Prefect talks to a running server (PREFECT_API_URL) rather than an ephemeral one."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def plan_run(inputs: list[str], *, config: Config, out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Find the inputs and resolve the models (fail fast); writes nothing."""
    files, failures = discover_inputs(inputs, extensions=config.audio.extensions, exclude=[Path(out_dir)])
    if not files and not failures:
        raise RunError(f"no audio files found in {' '.join(inputs)} (extensions: {' '.join(config.audio.extensions)})")
    return {"files": files, "failures": failures, "models": resolve_models(config)}


def prepare_run(inputs: list[str], *, config: Config, out_dir: str | os.PathLike[str],
                plan: dict[str, Any] | None = None) -> tuple[list[RecordingJob], dict[str, Any]]:
    """Plan the run (unless ``plan`` is given), write its config, hash the inputs and compute
    every stage key."""
    from tasks.artefacts import ArtefactStore
    from tasks.config import write_config

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
    jobs = [RecordingJob(recording=Recording(recording_id=rid, source_path=str(f), sha256=sha), out_dir=str(out),
                         config=plain,
                         keys=compute_keys(sha256=sha, config=config, models=models), models=models)
            for (f, sha), rid in zip(readable, ids)]
    run = {"run_id": uuid.uuid4().hex, "run_name": f"emoflow-{config.sha256()[:8]}-{started.strftime('%Y%m%dT%H%M%S')}",
           "started": started.isoformat(), "t_start": t_start, "out_dir": str(out), "config": plain,
           "models": models, "failures": failures}
    return jobs, run


def run_pipeline(inputs: list[str], *, config: Config, out_dir: str | os.PathLike[str]) -> RunSummary:
    """Run emoflow over ``inputs`` into ``out_dir``: the entry point of ``emoflow run``.

    The run holds ``out_dir``'s lock from before it writes anything until its manifest is
    written, so the tables, ``config.yaml`` and ``manifest.json`` always come from one run.

    Raises
    ------
    RunError
        No inputs, a model is unavailable, or ``out_dir`` is unusable or busy (one line).
    """
    from tasks.rundir import RunDirError, run_dir_lock

    plan = plan_run(inputs, config=config, out_dir=out_dir)
    try:
        with run_dir_lock(out_dir) as lock:
            jobs, run = prepare_run(inputs, config=config, out_dir=out_dir, plan=plan)
            if lock.previous_crashed and lock.previous.get("flow_run_id"):
                run["crashed_flow_run"] = lock.previous
            if not jobs:  # every input was unreadable: nothing to orchestrate
                return finalize([], [], run)
            if not server_configured():
                print("emoflow: no Prefect server configured; starting a temporary one for this run (15-25 s). "
                      "For faster runs start one once (`prefect server start`) and "
                      "`prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api`.", file=sys.stderr, flush=True)
            flow_fn = emoflow_run.with_options(flow_run_name=run["run_name"], task_runner=_task_runner(config))
            result = flow_fn(jobs, run)
            return RunSummary.from_dict(result)
    except RunDirError as exc:
        raise RunError(str(exc)) from None
