"""Scheduled inbox processing: ``emoflow serve --inbox DIR --cron EXPR``.

Each scheduled run of :func:`inbox_scan` processes the inbox files whose *content* has not been
processed yet (a renamed copy is not redone). Files are claimed with an exclusive create of
``<out>/.emoflow/inbox/<sha256>.claim`` before any work, so two overlapping runs never process
the same file; ``<sha256>.done`` records the run directory that holds its results.

A file is taken only once it is complete (:func:`settled`): unchanged (size and mtime) for
``settle_s`` seconds (default :data:`SETTLE_S`, or ``$EMOFLOW_INBOX_SETTLE_S``), unchanged while it
is hashed, and decodable to its end with the duration its header declares (a stalled copy of a
WAV, FLAC or MP4 is caught there) and, for raw streams that declare no duration (MP3 without a
Xing header, ADTS AAC, Ogg), with its last frame whole and an Ogg stream's end-of-stream page
present (:func:`tasks.audio.framing.stream_cut`). Only a copy stalled exactly on a frame or
sample boundary of a stream that declares no size (MP3, ADTS, a WAV or CAF written to a pipe)
is left to the settle time. A file that changed while
its run processed it is not marked done: its complete content is a new hash, processed next time.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from tasks.core.config import Config, load_config
from tasks.core.records import one_line, printable
from tasks.core.storage import atomic_write_json, sha256_file

STALE_CLAIM_S = 6 * 3600.0
SETTLE_S = 10.0
"""How long an inbox file must stay unchanged (size and mtime) before it is taken."""


def settle_seconds(value: float | None = None) -> float:
    """``value``, else ``$EMOFLOW_INBOX_SETTLE_S``, else :data:`SETTLE_S`."""
    if value is not None:
        return max(0.0, float(value))
    try:
        return max(0.0, float(os.environ.get("EMOFLOW_INBOX_SETTLE_S", SETTLE_S)))
    except ValueError:
        return SETTLE_S


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def decodes_completely(path: Path, *, timeout: float = 600.0) -> str | None:
    """None when ``path`` decodes to its end without an error message and to the duration its
    container declares (within 0.5 s or 1 %; for WAV, W64 and CAF the size their header gives,
    :func:`tasks.audio.decode.declared_duration`), and a raw stream's last frame is whole; else
    why not (one line). A cheap full decode: ffmpeg at 1 kHz mono 16-bit, counted, not kept.
    (Not ``-xerror``: it calls the last packet of a complete streamed WAV or CAF, whose header
    gives no size, corrupt.)"""
    try:
        probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration:stream=duration",
                                "-select_streams", "a:0", "-of", "json", str(path)],
                               capture_output=True, text=True, timeout=timeout)
        dec = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0",
                              "-ac", "1", "-ar", "1000", "-f", "s16le", "-"], capture_output=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"not decodable ({type(exc).__name__})"
    if dec.returncode != 0 or dec.stderr.strip():
        return "decoding stops with an error (incomplete?)"
    decoded = len(dec.stdout) / 2 / 1000.0
    if decoded <= 0:
        return "no audio decoded"
    from tasks.audio.framing import stream_cut

    cut = stream_cut(path)  # MP3, ADTS AAC, Ogg: no declared duration, but their last frame tells
    if cut is not None:
        return f"{cut} (still being written?)"
    declared = []
    try:
        facts = json.loads(probe.stdout or "{}")
        for d in [facts.get("format", {}).get("duration"), *[s.get("duration") for s in facts.get("streams", [])]]:
            if d not in (None, "N/A"):
                declared.append(float(d))
    except (ValueError, AttributeError, TypeError):
        pass
    from tasks.audio.decode import declared_duration

    header = declared_duration(path)  # WAV, W64, CAF: ffprobe clamps their duration to the bytes present
    if header is not None and header - decoded > 0.02:  # an exact size: any shortfall is missing audio
        return f"declares {header:.1f} s but decodes to {decoded:.2f} s (still being written?)"
    for d in declared:
        if abs(d - decoded) > max(0.5, 0.01 * d):
            return f"declares {d:.1f} s but decodes to {decoded:.1f} s (still being written?)"
    return None


def settled(path: Path, *, settle_s: float, now: float | None = None) -> bool:
    """Whether ``path`` has been unchanged for ``settle_s`` seconds (by its mtime)."""
    sig = _signature(path)
    if sig is None or sig[1] == 0:
        return False
    return (time.time() if now is None else now) - sig[2] / 1e9 >= settle_s


class ServeError(RuntimeError):
    """``emoflow serve`` cannot start; the message says what to do."""


def _ledger(out_root: Path) -> Path:
    from tasks.core.storage import real_dir

    out_root.mkdir(parents=True, exist_ok=True)
    return real_dir(out_root / ".emoflow" / "inbox", base=out_root)  # never a link emoflow did not make


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
            json.dump({"source": printable(source), "pid": os.getpid(), "claimed": dt.datetime.now(dt.timezone.utc).isoformat()}, fh)
        return True
    return False


def release(out_root: Path, sha256: str, *, run_dir: Path | None) -> None:
    """Mark a claimed hash done (with its run dir) or give the claim back (run_dir None)."""
    ledger = _ledger(out_root)
    if run_dir is not None:
        atomic_write_json(ledger / f"{sha256}.done", {"run_dir": printable(str(run_dir))})
    (ledger / f"{sha256}.claim").unlink(missing_ok=True)


def complete_files(files: list[Path], *, settle_s: float, logger: Any,
                   done: Any = lambda sha: False) -> dict[str, tuple[Path, tuple]]:
    """The ``files`` that are complete (:func:`settled`, unchanged while hashed, decodable to
    their end) by content hash: ``{sha256: (path, signature)}``. Files still changing are left
    for a later scan (logged at info), never claimed."""
    out: dict[str, tuple[Path, tuple]] = {}
    for f in files:
        if not settled(f, settle_s=settle_s):
            logger.info("%s: still being written (changed in the last %g s); taken on a later scan", one_line(str(f)),
                        settle_s)
            continue
        before = _signature(f)
        try:
            sha = sha256_file(f)
        except OSError as exc:
            logger.warning("%s: cannot read file (%s)", one_line(str(f)), one_line(str(exc)))
            continue
        if sha in out or done(sha):
            continue  # processed already (or a copy of one seen in this scan): not decoded again
        why = decodes_completely(f)
        after = _signature(f)
        if before != after:
            logger.info("%s: changed while it was read; taken on a later scan", one_line(str(f)))
            continue
        if why is not None:
            if settled(f, settle_s=max(settle_s, 3600.0)):
                out.setdefault(sha, (f, after))  # an hour unchanged: not a copy in progress, a bad file
            else:  # the run reports it as a failed input
                logger.info("%s: %s; taken on a later scan", one_line(str(f)), why)
            continue
        out.setdefault(sha, (f, after))
    return out


def scan_inbox(inbox: str | os.PathLike[str], root: Path, cfg: Config, *, logger: Any, settle_s: float | None = None,
               run: Any = None) -> dict[str, Any]:
    """One scan of ``inbox``: claim the complete files not processed yet, run them into a new
    run directory under ``root``, mark them done (:func:`inbox_scan` is this as a Prefect flow)."""
    from tasks.run.inputs import discover_inputs

    if run is None:
        from flows.pipeline import run_pipeline as run
    files, _ = discover_inputs([str(inbox)], extensions=cfg.audio.extensions, exclude=[root])
    claimed: dict[str, tuple[Path, tuple]] = {}
    ledger = _ledger(root)
    for sha, (f, sig) in complete_files([Path(p) for p in files], settle_s=settle_seconds(settle_s), logger=logger,
                                        done=lambda sha: (ledger / f"{sha}.done").exists()).items():
        if claim(root, sha, source=str(f)):
            claimed[sha] = (f, sig)
    if not claimed:
        logger.info("inbox %s: nothing new", one_line(str(inbox)))
        return {"processed": 0, "run_dir": None}
    run_dir = root / dt.datetime.now(dt.timezone.utc).strftime("run-%Y%m%dT%H%M%S")
    try:
        summary = run([str(p) for p, _ in claimed.values()], config=cfg, out_dir=run_dir)
    except BaseException:
        for sha in claimed:
            release(root, sha, run_dir=None)
        raise
    failed_inputs = {f["input"] for f in summary.failed}
    for sha, (f, sig) in claimed.items():
        if _signature(f) not in (sig, None):  # written to while its run read it: not this content's result
            logger.warning("%s: changed while it was processed; its complete content is processed next time",
                           one_line(str(f)))
            release(root, sha, run_dir=None)
            continue
        # Failed files are done too: retrying bad input every 10 minutes helps nobody.
        release(root, sha, run_dir=run_dir)
    logger.info("inbox %s: %d new file(s) → %s (%d failed)", one_line(str(inbox)), len(claimed), one_line(str(run_dir)),
                len(failed_inputs))
    return {"processed": len(claimed), "run_dir": str(run_dir), "failed": sorted(failed_inputs)}


@flow(name="emoflow-inbox", log_prints=True, persist_result=False)
def inbox_scan(inbox: str, out_root: str, config: dict[str, Any] | None = None,
               config_path: str | None = None, settle_s: float | None = None) -> dict[str, Any]:
    """Process the complete inbox files not processed yet into a new run directory under ``out_root``."""
    cfg = Config.model_validate(config) if config else load_config(config_path)
    return scan_inbox(inbox, Path(out_root), cfg, logger=get_run_logger(), settle_s=settle_s)


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


def serve_inbox(*, inbox: Path, cron: str, config: Config, out_root: Path, settle_s: float | None = None) -> None:
    """Serve a deployment of :func:`inbox_scan` on ``cron`` (blocks until interrupted); a file is
    taken once unchanged for ``settle_s`` seconds (:func:`settle_seconds`)."""
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
        parameters={"inbox": str(inbox.resolve()), "out_root": str(out_root.resolve()), "config": config.to_plain(),
                    "settle_s": settle_seconds(settle_s)},
        tags=["emoflow"],
    )
