"""Scheduled inbox processing: ``emoflow serve --inbox DIR --cron EXPR``.

Each scheduled run of :func:`inbox_scan` processes the inbox files whose *content* has not been
processed yet (a renamed copy is not redone). Files are claimed with an exclusive create of
``<out>/.emoflow/inbox/<sha256>.claim`` before any work, so two overlapping runs never process
the same file; ``<sha256>.done`` records the run directory that holds its results.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from tasks.core.config import Config, load_config
from tasks.core.storage import atomic_write_json, sha256_file

STALE_CLAIM_S = 6 * 3600.0


class ServeError(RuntimeError):
    """``emoflow serve`` cannot start; the message says what to do."""


def _ledger(out_root: Path) -> Path:
    path = out_root / ".emoflow" / "inbox"
    path.mkdir(parents=True, exist_ok=True)
    return path


def claim(out_root: Path, sha256: str, *, source: str) -> bool:
    """Atomically claim a content hash for this run; False if done or claimed by a live run."""
    ledger = _ledger(out_root)
    if (ledger / f"{sha256}.done").exists():
        return False
    path = ledger / f"{sha256}.claim"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                continue
            if age < STALE_CLAIM_S:
                return False
            path.unlink(missing_ok=True)  # a run that died long ago: take over its claim
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump({"source": source, "pid": os.getpid(), "claimed": dt.datetime.now(dt.timezone.utc).isoformat()}, fh)
        return True
    return False


def release(out_root: Path, sha256: str, *, run_dir: Path | None) -> None:
    """Mark a claimed hash done (with its run dir) or give the claim back (run_dir None)."""
    ledger = _ledger(out_root)
    if run_dir is not None:
        atomic_write_json(ledger / f"{sha256}.done", {"run_dir": str(run_dir)})
    (ledger / f"{sha256}.claim").unlink(missing_ok=True)


@flow(name="emoflow-inbox", log_prints=True, persist_result=False)
def inbox_scan(inbox: str, out_root: str, config: dict[str, Any] | None = None,
               config_path: str | None = None) -> dict[str, Any]:
    """Process the inbox files not processed yet into a new run directory under ``out_root``."""
    from flows.pipeline import run_pipeline
    from tasks.run.inputs import discover_inputs

    logger = get_run_logger()
    cfg = Config.model_validate(config) if config else load_config(config_path)
    root = Path(out_root)
    files, _ = discover_inputs([inbox], extensions=cfg.audio.extensions, exclude=[root])
    claimed: dict[str, Path] = {}
    for f in files:
        try:
            sha = sha256_file(f)
        except OSError as exc:
            logger.warning("%s: cannot read file (%s)", f, exc)
            continue
        if sha not in claimed and claim(root, sha, source=str(f)):
            claimed[sha] = f
    if not claimed:
        logger.info("inbox %s: nothing new", inbox)
        return {"processed": 0, "run_dir": None}
    run_dir = root / dt.datetime.now(dt.timezone.utc).strftime("run-%Y%m%dT%H%M%S")
    try:
        summary = run_pipeline([str(p) for p in claimed.values()], config=cfg, out_dir=run_dir)
    except BaseException:
        for sha in claimed:
            release(root, sha, run_dir=None)
        raise
    failed_inputs = {f["input"] for f in summary.failed}
    for sha, f in claimed.items():
        # Failed files are done too: retrying bad input every 10 minutes helps nobody.
        release(root, sha, run_dir=run_dir)
    logger.info("inbox %s: %d new file(s) → %s (%d failed)", inbox, len(claimed), run_dir, len(failed_inputs))
    return {"processed": len(claimed), "run_dir": str(run_dir), "failed": sorted(failed_inputs)}


def check_server(timeout: float = 3.0) -> str:
    """The API URL of a running Prefect server, or :class:`ServeError` saying how to start one."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    how = ("start one with `prefect server start` (in another terminal) and run "
           "`prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api`")
    if not url:
        raise ServeError(f"emoflow serve needs a running Prefect server for schedules: {how}")
    try:
        httpx.get(url.rstrip("/") + "/health", timeout=timeout).raise_for_status()
    except Exception:
        raise ServeError(f"no Prefect server answers at {url}: {how}") from None
    return url


def serve_inbox(*, inbox: Path, cron: str, config: Config, out_root: Path) -> None:
    """Serve a deployment of :func:`inbox_scan` on ``cron`` (blocks until interrupted)."""
    from prefect.client.schemas.schedules import CronSchedule

    if not inbox.is_dir():
        raise ServeError(f"{inbox}: inbox folder not found")
    try:
        CronSchedule(cron=cron)
    except Exception:
        raise ServeError(f"--cron {cron!r}: not a valid cron expression") from None
    url = check_server()
    print(f"emoflow: serving deployment 'emoflow-inbox/inbox' on {url}, cron {cron!r}, inbox {inbox} → {out_root}")
    inbox_scan.serve(
        name="inbox",
        cron=cron,
        parameters={"inbox": str(inbox.resolve()), "out_root": str(out_root.resolve()), "config": config.to_plain()},
        tags=["emoflow"],
    )
