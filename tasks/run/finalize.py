"""The end of a run: its tables, failures, manifest and report, from what the recordings left.

Everything here reads the recordings' published folders and artefacts; nothing a stage decided
is decided again.
"""

from __future__ import annotations

import datetime as dt
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.core.config import Config
from tasks.core.errors import first_line
from tasks.core.records import one_line
from tasks.core.storage import atomic_write_json
from tasks.pipeline.job import RecordingJob

try:
    from importlib.metadata import version as _version

    EMOFLOW_VERSION = _version("emoflow")
except Exception:  # not installed: running from a checkout
    EMOFLOW_VERSION = "0.3.0"


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
            lines.append(f"  failed: {one_line(f['message'])} [{f['stage']}]")  # a line each, whatever a name holds
        return "\n".join(lines)


def finalize(jobs: list[RecordingJob], outcomes: list[dict[str, Any]], run: dict[str, Any]) -> RunSummary:
    """Write segments.parquet/.csv, embeddings, failures.csv, manifest.json and report.html."""
    from tasks.output.export import write_failures, write_run_tables
    from tasks.run.rundir import prune_recordings

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
            "stages": {r["stage"]: {"status": r["status"], "seconds": round(r["seconds"], 4),
                                    **({"discarded": r["discarded"]} if r.get("discarded") else {})}
                       for r in outcome["reports"]},
            "facts": {r["stage"]: r["facts"] for r in outcome["reports"] if r["facts"]},
            "failed": outcome["failure"],
        }
    # the previous run's report goes before this run's tables are written: report.html is there
    # only when this run wrote it (a failed or disabled report leaves none, never a stale one), and
    # clusters.csv/png of an earlier `emoflow cluster` go too (they describe the old tables)
    from tasks.output.report import remove_report

    remove_report(out)
    t0 = time.perf_counter()
    try:
        links = link_speakers([j for j in jobs if j.recording_id in set(ok_ids)], config=config)
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
    write_manifest(out, config, run, jobs, recordings, failures, summary)
    if config.report.enabled:
        t0 = time.perf_counter()
        try:
            from tasks.output.report import build_report

            report_path = build_report(out, config=config.report)
            summary.report = str(report_path.relative_to(out))
        except Exception as exc:  # a report problem must not lose the results
            from tasks.core.storage import no_space

            remove_report(out)  # never a stale or half one beside this run's tables
            why = "no space left on device" if no_space(exc) else first_line(exc)
            failures.append({"input": str(out), "stage": "report", "error": type(exc).__name__,
                             "message": f"{out}: report failed: {why}"})
            write_failures(out, failures)
        summary.stage_s += time.perf_counter() - t0
    summary.wall_s = time.perf_counter() - run["t_start"]
    write_manifest(out, config, run, jobs, recordings, failures, summary)
    return summary


def link_speakers(jobs: list[RecordingJob], *, config: Config) -> dict[tuple[str, str], str]:
    """The run's global speakers from the recordings' voices artefacts (:mod:`tasks.speakers.linking`)."""
    from tasks.pipeline import layout
    from tasks.speakers.linking import link_run_speakers

    from tasks.pipeline.runner import ensure_artefact

    voices = {}
    for job in jobs:  # verified (a damaged one is computed again under its key)
        voices[job.recording_id] = layout.read_voices(ensure_artefact(job, "voices"))
    return link_run_speakers(voices, threshold=config.diarization.link_threshold)


def write_manifest(out: Path, config: Config, run: dict[str, Any], jobs: list[RecordingJob],
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
