"""Atomic artefact writes and content hashes.

Every file emoflow produces is written to a temporary sibling and renamed into place, so a
killed run never leaves a half-written file under a name that a rerun would trust.

Nothing is written *through* a symbolic link emoflow did not make: the temporary file is a fresh
``mkstemp`` file (``O_CREAT | O_EXCL``), and the rename replaces a link at the target's name with
the file, leaving the link's target untouched (``rename(2)`` never follows its last component).
Folders emoflow owns are made with :func:`real_dir`, which refuses a link in their place.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o644)  # mkstemp makes 0600; artefacts are meant to be shared and served
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], value: Any) -> Path:
    """Write ``value`` as indented JSON atomically."""
    return atomic_write_text(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def atomic_write_npy(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write a ``.npy`` file atomically."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_write_with(path: str | os.PathLike[str], writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def sha256_file(path: str | os.PathLike[str], *, chunk_size: int = 1 << 20) -> str:
    """sha256 hex digest of a regular file's content, read in chunks.

    Raises
    ------
    OSError
        ``path`` is not a regular file (a FIFO or a device is refused without blocking on it).
    """
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
        while chunk := fh.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")


def no_space(exc: BaseException) -> bool:
    """Whether ``exc`` is a full disk (or quota): ENOSPC, EDQUOT, or numpy's short write
    (``240000 requested and 109536 written``), also when it is the cause of another error."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, NoSpaceError):
            return True
        if isinstance(exc, OSError) and (exc.errno in (errno.ENOSPC, errno.EDQUOT) or _SHORT_WRITE.search(str(exc))):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        seen += 1
    return False


class NoSpaceError(OSError):
    """The disk is full: the message is one line, ``no space left on <path>: ...``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(errno.ENOSPC, f"no space left on {path}: free some space and run again (what was "
                                       "written is checked, and recomputed where incomplete)")
        self.path = str(path)

    def __str__(self) -> str:
        return str(self.strerror)


class NotOwnedError(NotADirectoryError):
    """A link or a file stands where emoflow keeps a folder of its own."""

    def __str__(self) -> str:  # "<path>: <why>", not "[Errno 20] <why>: '<path>'"
        return f"{self.filename}: {self.strerror}" if self.filename else str(self.strerror)


def real_dir(path: str | os.PathLike[str], *, base: str | os.PathLike[str]) -> Path:
    """Make folder ``path`` (and its parents up to ``base``, which must exist) and return it;
    no component below ``base`` may be a symbolic link or anything but a folder.

    Raises
    ------
    NotOwnedError
        A component below ``base`` is a link (emoflow never writes through one it did not make)
        or a file; the message names it and says to remove it.
    """
    target, root = Path(path), Path(base)
    rel = target.relative_to(root)
    current = root
    for part in rel.parts:
        current = current / part
        try:
            os.mkdir(current)
            continue
        except FileExistsError:
            pass
        st = os.lstat(current)
        if not stat.S_ISDIR(st.st_mode):
            what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a folder"
            raise NotOwnedError(errno.ENOTDIR, f"{what}, which emoflow did not make; remove it", str(current))
    return target
