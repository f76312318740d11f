"""The run directory as a resource: checked before use, one writer at a time, only this run shown.

A run takes an exclusive ``flock`` on ``<out>/.emoflow/lock`` for its whole life. The kernel
drops the lock when its owner exits, however it exits, so a dead owner never blocks the next
run; a second live run into the same directory stops at once with one line naming the owner.
The lock file also holds the owner's record (pid, host, start, Prefect flow-run id, state), so
the next owner can tell that its predecessor died while running and mark its Prefect flow run
``Crashed``.

``--out`` itself may be a symbolic link (the user chose it); inside it, emoflow writes only
through folders and files it made: the lock is opened with ``O_NOFOLLOW`` and must be a regular
file, and ``.emoflow`` with its folders and ``recordings`` must be real folders (a link in their
place stops the run with one line naming it, exit 2).
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
import stat
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from tasks.core.storage import NotOwnedError, real_dir
from tasks.run.inputs import RUN_MARKER

LOCK_NAME = "lock"
OWNED_DIRS = (RUN_MARKER, f"{RUN_MARKER}/artefacts", f"{RUN_MARKER}/progress", f"{RUN_MARKER}/plots",
              f"{RUN_MARKER}/discarded", "recordings")
"""The folders of a run directory that emoflow writes into: never links."""


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
        path.mkdir(parents=True, exist_ok=True)
        for owned in OWNED_DIRS:
            real_dir(path / owned, base=path)
        probe = path / RUN_MARKER / f".write-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        probe.write_bytes(b"")
        probe.unlink()
    except NotOwnedError as exc:  # a link or a file where emoflow keeps a folder
        raise RunDirError(f"{exc.filename}: {exc.strerror}") from None
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
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        _write_record(fd, {**_read_record(path), **values})
    finally:
        os.close(fd)


def _open_lock(path: Path) -> int:
    """Open (or create) the lock file, never through a link and never anything but a regular
    file; RunDirError (one line: the path and the fix) otherwise."""
    fix = "remove it (emoflow makes this file itself)"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RunDirError(f"{path}: the run lock is a symbolic link, which emoflow did not make; {fix}") from None
        if exc.errno == errno.EISDIR:
            raise RunDirError(f"{path}: the run lock is a folder; {fix}") from None
        raise RunDirError(f"{path}: cannot open the run lock ({exc.strerror or exc})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RunDirError(f"{path}: the run lock is not a regular file; {fix}")
    os.set_blocking(fd, True)
    return fd


@contextlib.contextmanager
def run_dir_lock(out: str | os.PathLike[str]) -> Iterator[RunLock]:
    """Hold the exclusive lock of run directory ``out`` for the block.

    Raises
    ------
    RunDirError
        Another live process holds it: the message names its pid, host and start time.
    """
    path = check_out_dir(out) / RUN_MARKER / LOCK_NAME
    fd = _open_lock(path)
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
    except OSError as exc:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        reason = "no space left on device" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror or str(exc)
        raise RunDirError(f"{path}: cannot write the run lock ({reason})") from None
    try:
        yield lock
    finally:
        try:
            lock.update(state="finished")
        except OSError:  # a full disk: the kernel lock still goes; the record says "running"
            pass
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
