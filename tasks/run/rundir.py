"""The run directory as a resource: checked before use, one writer at a time, only this run shown.

A run takes an exclusive ``flock`` on ``<out>/.emoflow/lock`` for its whole life. The kernel
drops the lock when its owner exits, however it exits, so a dead owner never blocks the next
run; a second live run into the same directory stops at once with one line naming the owner.
The lock file also holds the owner's record (pid, host, start, Prefect flow-run id, state), so
the next owner can tell that its predecessor died while running and mark its Prefect flow run
``Crashed``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import shutil
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from tasks.run.inputs import RUN_MARKER

LOCK_NAME = "lock"


class RunDirError(Exception):
    """The run directory cannot be used (not a folder, read-only, busy); one-line message."""


def check_out_dir(out: str | os.PathLike[str]) -> Path:
    """Create ``out`` if needed and check it is a writable folder.

    Raises
    ------
    RunDirError
        ``out`` is a file, lies under a file, or cannot be written.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{path}: --out must be a folder, but this is a file")
    try:
        (path / RUN_MARKER).mkdir(parents=True, exist_ok=True)
        probe = path / RUN_MARKER / f".write-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = {errno.EACCES: "permission denied", errno.EROFS: "read-only file system",
                  errno.ENOTDIR: "a parent of it is a file", errno.ENOSPC: "no space left on device"}.get(
            exc.errno or 0, exc.strerror or str(exc))
        raise RunDirError(f"{path}: cannot write the run directory ({reason})") from None
    return path


@dataclass
class RunLock:
    """The held lock of a run directory and what it knows of the previous owner."""

    out: Path
    fd: int
    record: dict[str, Any]
    previous: dict[str, Any] = field(default_factory=dict)

    @property
    def previous_crashed(self) -> bool:
        """Whether the previous owner died while running (it never marked itself finished)."""
        return self.previous.get("state") == "running"

    def update(self, **values: Any) -> None:
        """Add ``values`` to the owner record (e.g. the Prefect flow-run id)."""
        self.record.update({**_read_record(self.out / RUN_MARKER / LOCK_NAME), **values})
        _write_record(self.fd, self.record)


def _read_record(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _write_record(fd: int, record: dict[str, Any]) -> None:
    data = json.dumps(record, indent=1).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def update_lock_record(out: str | os.PathLike[str], **values: Any) -> None:
    """Add ``values`` to the owner record of ``out``'s lock (held by this process), in place:
    the lock file is never replaced, or its lock would be lost."""
    path = Path(out) / RUN_MARKER / LOCK_NAME
    fd = os.open(path, os.O_RDWR)
    try:
        _write_record(fd, {**_read_record(path), **values})
    finally:
        os.close(fd)


@contextlib.contextmanager
def run_dir_lock(out: str | os.PathLike[str]) -> Iterator[RunLock]:
    """Hold the exclusive lock of run directory ``out`` for the block.

    Raises
    ------
    RunDirError
        Another live process holds it: the message names its pid, host and start time.
    """
    path = check_out_dir(out) / RUN_MARKER / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        owner = _read_record(path)
        who = f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}, started {owner.get('started', '?')}"
        raise RunDirError(f"{out}: another emoflow run ({who}) is writing this run directory; "
                          "wait for it to finish or choose another --out") from None
    lock = RunLock(out=Path(out), fd=fd, previous=_read_record(path),
                   record={"pid": os.getpid(), "host": socket.gethostname(),
                           "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                           "state": "running"})
    try:
        _write_record(fd, lock.record)
        yield lock
    finally:
        try:
            lock.update(state="finished")
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def prune_recordings(out: str | os.PathLike[str], keep: Iterable[str]) -> list[str]:
    """Remove ``recordings/<id>/`` folders whose id is not in ``keep`` (and half-written export
    folders); return the removed ids. Artefacts under ``.emoflow/`` stay for reuse."""
    root = Path(out) / "recordings"
    if not root.is_dir():
        return []
    wanted = set(keep)
    removed = []
    for entry in sorted(root.iterdir()):
        if entry.name in wanted:
            continue
        aside = entry
        if not entry.name.startswith("."):  # hidden: a killed export's temporary folder
            aside = root / f".{entry.name}.stale-{uuid.uuid4().hex[:8]}"
            try:
                os.rename(entry, aside)  # the visible tree loses the folder in one step
            except OSError:
                continue
            removed.append(entry.name)
        if aside.is_dir() and not aside.is_symlink():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            aside.unlink(missing_ok=True)
    return removed
