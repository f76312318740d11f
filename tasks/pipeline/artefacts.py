"""Keyed stage artefacts: what a stage produced, stored under the key of what it depends on.

A stage writes its files into a fresh temporary directory and renames it to
``<root>/<stage>/<key>/`` in one step, so an artefact directory is either complete or absent:
a run killed at any moment leaves only ``*.tmp-*`` directories, which are never trusted and
are swept by the next run.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from tasks.core.config import canonical_hash

META = "meta.json"


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

    def get(self, stage: str, key: str) -> Path | None:
        """The complete artefact directory for (stage, key), or None."""
        p = self.path(stage, key)
        return p if (p / META).is_file() else None

    def meta(self, stage: str, key: str) -> dict[str, Any]:
        return read_meta(self.path(stage, key))

    def begin(self, stage: str, key: str) -> Path:
        """A fresh temporary directory to write the artefact into."""
        tmp = self.root / stage / f"{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        return tmp

    def commit(self, stage: str, key: str, tmp: Path, meta: dict[str, Any]) -> Path:
        """Write ``meta.json`` last and move ``tmp`` into place atomically."""
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
"""What a published recording folder was made from (``key``) and what was written (``facts``)."""


def published_facts(folder: Path, *, key: str) -> dict[str, Any] | None:
    """The facts of the published ``folder`` when it was made under ``key``, else None."""
    try:
        record = json.loads((folder / PUBLISHED_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record.get("facts", {}) if isinstance(record, dict) and record.get("key") == key else None


def begin_published(folder: Path) -> Path:
    """A fresh temporary sibling of ``folder`` to build its new content in."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp


def commit_published(tmp: Path, folder: Path, *, key: str, facts: dict[str, Any]) -> None:
    """Record ``key`` and ``facts`` in ``tmp`` last, then swap it in for ``folder`` (the old one
    is moved aside, then removed)."""
    (tmp / PUBLISHED_RECORD).write_text(json.dumps({"key": key, "facts": facts}), encoding="utf-8")
    old = None
    if folder.exists():
        old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(folder, old)
    os.rename(tmp, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
