"""Keyed stage artefacts: what a stage produced, stored under the key of what it depends on.

A stage writes its files into a fresh temporary directory and renames it to
``<root>/<stage>/<key>/`` in one step, so an artefact directory is either complete or absent:
a run killed at any moment leaves only ``*.tmp-*`` directories, which are never trusted and
are swept by the next run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from tasks.config import canonical_hash

META = "meta.json"


def stage_key(*parts: Any) -> str:
    """Key of a stage's artefact: a hash of everything it depends on."""
    return canonical_hash([str(p) if isinstance(p, Path) else p for p in parts])[:32]


def source_hash(*module_files: str | os.PathLike[str]) -> str:
    """sha256 of the source of the modules that compute a stage (its code version)."""
    h = hashlib.sha256()
    for f in module_files:
        p = Path(f)
        h.update(p.name.encode() + b"\0" + (p.read_bytes() if p.is_file() else b""))
    return h.hexdigest()[:16]


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
        return json.loads((self.path(stage, key) / META).read_text())

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
