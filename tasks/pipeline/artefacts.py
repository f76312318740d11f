"""Keyed stage artefacts: what a stage produced, stored under the key of what it depends on.

A stage writes its files into a fresh temporary directory and renames it to
``<root>/<stage>/<key>/`` in one step, so an artefact directory is either complete or absent:
a run killed at any moment leaves only ``*.tmp-*`` directories, which are never trusted and
are swept by the next run.

Nothing found on disk is trusted as it is: :meth:`ArtefactStore.commit` records every file's
size and sha256 in ``meta.json`` (and :func:`commit_published` in the published folder's
``.export.json``), and every reuse checks the folder against that record
(:func:`verify_files`): a file edited in place, truncated, replaced, deleted or added, a symlink
or anything but a regular file, an artefact folder that is a link, or one whose ``meta.json``
names another stage or key (another artefact copied in its place) makes the artefact *bad*; the runner moves it aside with one
warning line and computes it again under the same key. A file's digest is computed once per
process per (path, inode, size, mtime, ctime), so a run reads each artefact's bytes once.

Across runs, a store artefact whose files were hashed and found intact leaves a *stamp*
(``<root>/.stamps/<stage>/<key>.json``: each file's inode, size, mtime, ctime and sha256, as
git's index does): a later reuse hashes only the files whose stat no longer matches their stamp.
Writing a file, or setting its mtime back, changes its ctime (which no user program can set),
and a copied or restored store has other inodes, so any change made after the stamp is hashed
again. A stamp is only taken of files whose ctime is at least :data:`SETTLED_S` old, so a write
in the same clock tick as the hash that vouched for it cannot hide behind it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from tasks.core.config import canonical_hash
from tasks.core.storage import atomic_write_text, real_dir

META = "meta.json"
FILES = "files"
"""The key, in ``meta.json`` and ``.export.json``, of ``{relative path: [size, sha256]}``."""
STAMPS = ".stamps"
"""``<root>/.stamps/<stage>/<key>.json``: the stat of each file of an artefact when its sha256
was last found to match the record (``{relative path: [inode, size, mtime_ns, ctime_ns, sha256]}``)."""
SETTLED_S = 2.0
"""A file changed less than this long ago is hashed on every reuse, never stamped."""


class BadArtefact(Exception):
    """A committed artefact does not match its record; the message names the file and why."""


_DIGESTS: dict[tuple[str, int, int, int, int], str] = {}
_DIGESTS_LOCK = threading.Lock()


def _digest(path: Path, st: os.stat_result) -> str:
    """sha256 of the regular file ``path`` (whose lstat is ``st``), cached per process on what
    changes when the file is written (inode, size, mtime, ctime)."""
    cache_key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    found = _DIGESTS.get(cache_key)
    if found is not None:
        return found
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    digest = h.hexdigest()
    with _DIGESTS_LOCK:
        if len(_DIGESTS) > 100_000:
            _DIGESTS.clear()
        _DIGESTS[cache_key] = digest
    return digest


def _walk(folder: Path, skip: str | frozenset[str]) -> dict[str, os.stat_result]:
    """Every entry under ``folder`` (relative posix path -> lstat), symlinks not followed;
    ``skip`` (the record file itself) left out. Raises :class:`BadArtefact` on a symlink or
    anything that is neither a folder nor a regular file."""
    found: dict[str, os.stat_result] = {}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = p.relative_to(folder).as_posix()
            if stat.S_ISDIR(st.st_mode):
                if stat.S_ISLNK(st.st_mode):  # pragma: no cover - os.walk lists links as files
                    raise BadArtefact(f"{rel} is a symlink")
                continue
            if not stat.S_ISREG(st.st_mode):
                raise BadArtefact(f"{rel} is {'a symlink' if stat.S_ISLNK(st.st_mode) else 'not a regular file'}")
            if rel != skip and not (isinstance(skip, frozenset) and rel in skip):
                found[rel] = st
    return found


def record_files(folder: Path, *, skip: str | frozenset[str] = META) -> dict[str, list[Any]]:
    """``{relative path: [size, sha256]}`` of every file under ``folder`` but ``skip``."""
    return {rel: [st.st_size, _digest(folder / rel, st)] for rel, st in sorted(_walk(folder, skip).items())}


def _stamp(st: os.stat_result, sha: str) -> list[Any]:
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, sha]


def verify_files(folder: Path, recorded: Any, *, skip: str | frozenset[str] = META,
                 stamps: dict[str, Any] | None = None) -> dict[str, list[Any]]:
    """Check ``folder`` holds exactly the files of ``recorded`` (sizes first, then sha256).

    A file whose stat equals its entry in ``stamps`` (inode, size, mtime, ctime, and the same
    recorded sha256) is not read again; every other file is hashed.

    Returns
    -------
    dict
        The stamps of the files now known intact whose ctime is at least :data:`SETTLED_S` old.

    Raises
    ------
    BadArtefact
        What differs: a file missing, added, of another size or content, or no record at all.
    """
    if not isinstance(recorded, dict):
        raise BadArtefact("no record of its files (made by an older emoflow)")
    try:
        found = _walk(folder, skip)
    except OSError as exc:
        raise BadArtefact(f"unreadable ({exc.strerror or exc})") from None
    missing = sorted(set(recorded) - set(found))
    if missing:
        raise BadArtefact(f"{missing[0]} is missing")
    added = sorted(set(found) - set(recorded))
    if added:
        raise BadArtefact(f"{added[0]} was added")
    for rel, st in found.items():
        try:
            size, sha = recorded[rel]
        except (TypeError, ValueError):
            raise BadArtefact(f"{rel}: damaged record") from None
        if st.st_size != size:
            raise BadArtefact(f"{rel} has {st.st_size} bytes, {size} were written")
    settled_ns = time.time_ns() - int(SETTLED_S * 1e9)
    vouched: dict[str, list[Any]] = {}
    for rel, st in found.items():
        sha = recorded[rel][1]
        if stamps is None or stamps.get(rel) != _stamp(st, sha):
            try:
                digest = _digest(folder / rel, st)
            except OSError as exc:
                raise BadArtefact(f"{rel} is unreadable ({exc.strerror or exc})") from None
            if digest != sha:
                raise BadArtefact(f"{rel} was changed after it was written (sha256 differs)")
        if st.st_ctime_ns <= settled_ns:
            vouched[rel] = _stamp(st, sha)
    return vouched


def discard(folder: Path) -> None:
    """Move a bad artefact folder aside (one rename, so nothing reads it again) and remove it."""
    aside = folder.parent / f".{folder.name}.bad-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(folder, aside)  # a symbolic link is renamed itself, never what it points to
    except FileNotFoundError:
        return  # another worker discarded it first
    if aside.is_symlink() or not aside.is_dir():
        aside.unlink(missing_ok=True)
    else:
        shutil.rmtree(aside, ignore_errors=True)


def stage_key(*parts: Any) -> str:
    """Key of a stage's artefact: a hash of everything it depends on."""
    return canonical_hash([str(p) if isinstance(p, Path) else p for p in parts])[:32]


def read_meta(folder: Path) -> dict[str, Any]:
    """The ``meta.json`` of a committed artefact folder (its stage, key, seconds and facts)."""
    return json.loads((folder / META).read_text(encoding="utf-8"))


class ArtefactStore:
    """Artefact directories under ``root``, one per (stage, key)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def get(self, stage: str, key: str, *, on_bad: Any = None) -> Path | None:
        """The complete, verified artefact directory for (stage, key), or None.

        An artefact whose files differ from its record (:func:`verify_files`) is discarded
        (moved aside and removed) and None returned; ``on_bad(path, reason)`` is told first.
        """
        p = self.path(stage, key)
        try:
            mode = os.lstat(self.root / stage).st_mode
        except OSError:
            return None
        if not stat.S_ISDIR(mode):  # a link (or a file) in a stage folder's place: never read through it
            if on_bad is not None:
                on_bad(self.root / stage, f"{'a symbolic link' if stat.S_ISLNK(mode) else 'not a folder'} where the "
                                          "store keeps a stage folder; removed (a link itself, never what it points to)")
            discard(self.root / stage)
            return None
        if not p.is_symlink() and (not (p / META).is_file() or (p / META).is_symlink()):
            return None
        try:
            if p.is_symlink():  # another artefact (or anything) linked in under this key
                raise BadArtefact("the folder is a symbolic link")
            try:
                meta = read_meta(p)
            except (OSError, ValueError):
                raise BadArtefact(f"{META} is unreadable") from None
            if not isinstance(meta, dict) or meta.get("stage") != stage or meta.get("key") != key:
                made = f"{meta.get('stage')}/{meta.get('key')}" if isinstance(meta, dict) else "?"
                raise BadArtefact(f"it was made as {made}, not under this key (a copy of another artefact)")
            stamps = self._read_stamps(stage, key)
            vouched = verify_files(p, meta.get(FILES) if isinstance(meta, dict) else None, stamps=stamps)
        except BadArtefact as exc:
            if on_bad is not None:
                on_bad(p, str(exc))
            discard(p)
            try:
                self._stamps_path(stage, key).unlink(missing_ok=True)
            except OSError:
                pass  # not a file emoflow wrote: it is never trusted (:meth:`_read_stamps`)
            return None
        if vouched and vouched != stamps:
            try:
                real_dir(self._stamps_path(stage, key).parent, base=self.root)  # never through a link
                atomic_write_text(self._stamps_path(stage, key), json.dumps(vouched))
            except (OSError, ValueError):
                pass  # a stamp only saves time: without it the next reuse hashes again
        return p

    def _stamps_path(self, stage: str, key: str) -> Path:
        return self.root / STAMPS / stage / f"{key}.json"

    def _read_stamps(self, stage: str, key: str) -> dict[str, Any] | None:
        """The stamps of (stage, key), or None when there are none (or they are not a plain
        file of the expected shape: then every file is hashed)."""
        path = self._stamps_path(stage, key)
        try:
            if path.is_symlink() or not path.is_file():
                return None
            stamps = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return stamps if isinstance(stamps, dict) else None

    def meta(self, stage: str, key: str) -> dict[str, Any]:
        return read_meta(self.path(stage, key))

    def begin(self, stage: str, key: str) -> Path:
        """A fresh temporary directory to write the artefact into."""
        self.root.mkdir(parents=True, exist_ok=True)
        real_dir(self.root / stage, base=self.root)  # a link in a stage's place is refused
        tmp = self.root / stage / f"{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        return tmp

    def commit(self, stage: str, key: str, tmp: Path, meta: dict[str, Any]) -> Path:
        """Record every file's size and sha256, write ``meta.json`` last and move ``tmp`` into
        place atomically."""
        meta = {**meta, "stage": stage, "key": key, FILES: record_files(tmp)}  # get() checks both
        _fsync_tree(tmp)
        (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
        final = self.path(stage, key)
        try:
            os.rename(tmp, final)
        except OSError:
            # Another worker committed the same key first: theirs is equally valid.
            shutil.rmtree(tmp, ignore_errors=True)
            if self.get(stage, key) is None:
                raise
        return final

    def sweep(self, *, older_than_s: float = 24 * 3600.0) -> int:
        """Remove temporary directories left by killed runs; return how many.

        A directory is removed when the process that made it (its pid is in the name) is gone,
        or when it is older than ``older_than_s`` (workers on other machines).
        """
        n = 0
        if not self.root.is_dir():
            return 0
        now = time.time()
        for stage_dir in self.root.iterdir():
            if not stage_dir.is_dir():
                continue
            for d in stage_dir.glob("*.tmp-*"):
                if not _pid_alive(d.name) or now - d.stat().st_mtime >= older_than_s:
                    shutil.rmtree(d, ignore_errors=True)
                    n += 1
        return n


def _fsync_tree(folder: Path) -> None:
    """Flush the files of ``folder`` to disk before it is committed (a full disk or a crash
    shows here, not as a committed artefact with holes)."""
    for rel in _walk(folder, META):
        fd = os.open(folder / rel, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _pid_alive(tmp_name: str) -> bool:
    try:
        pid = int(tmp_name.rsplit(".tmp-", 1)[1].split("-")[0])
    except (IndexError, ValueError):
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


PUBLISHED_RECORD = ".export.json"
"""What a published recording folder was made from (``key``), what was written (``facts``) and
its files' sizes and sha256 (``files``)."""
PUBLISHED_UNCHECKED = frozenset({PUBLISHED_RECORD, "timeline.png"})
"""Not part of the published record: the record itself, and the timeline the report writes
beside the export on every report build (from the verified tables)."""


def published_facts(folder: Path, *, key: str, on_bad: Any = None) -> dict[str, Any] | None:
    """The facts of the published ``folder`` when it was made under ``key`` and still holds
    exactly what was written (:func:`verify_files`), else None (``on_bad(folder, reason)`` is
    told when the key matches but the files do not)."""
    record_path = folder / PUBLISHED_RECORD
    if record_path.is_symlink() or folder.is_symlink():
        return None
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (isinstance(record, dict) and record.get("key") == key):
        return None
    try:
        verify_files(folder, record.get(FILES), skip=PUBLISHED_UNCHECKED)
    except BadArtefact as exc:
        if on_bad is not None:
            on_bad(folder, str(exc))
        return None
    return record.get("facts", {})


def begin_published(folder: Path) -> Path:
    """A fresh temporary sibling of ``folder`` to build its new content in."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp


def commit_published(tmp: Path, folder: Path, *, key: str, facts: dict[str, Any]) -> None:
    """Record ``key`` and ``facts`` in ``tmp`` last, then swap it in for ``folder`` (the old one
    is moved aside, then removed)."""
    files = record_files(tmp, skip=PUBLISHED_UNCHECKED)
    _fsync_tree(tmp)
    (tmp / PUBLISHED_RECORD).write_text(json.dumps({"key": key, "facts": facts, FILES: files}), encoding="utf-8")
    old = None
    if folder.is_symlink():  # not emoflow's: replace the link itself, never write through it
        folder.unlink()
    elif folder.exists():
        old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(folder, old)
    os.rename(tmp, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
