"""Keyed artefacts are all-or-nothing; atomic writes never leave half files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.pipeline.artefacts import ArtefactStore, stage_key
from tasks.core.storage import atomic_write_npy, atomic_write_with


def test_commit_makes_artefact_visible(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)
    key = stage_key("load", "abc", {"audio": "h"})
    assert store.get("load", key) is None
    tmp = store.begin("load", key)
    (tmp / "audio.npy").write_bytes(b"123")
    assert store.get("load", key) is None  # not yet committed
    store.commit("load", key, tmp, {"facts": {"duration": 1.0}})
    assert store.get("load", key) is not None and store.meta("load", key)["facts"]["duration"] == 1.0
    assert not tmp.exists()


def test_sweep_removes_dead_temporaries(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)
    dead = tmp_path / "diarize" / "k.tmp-999999999-abcd"
    dead.mkdir(parents=True)
    live = store.begin("diarize", "k2")
    assert store.sweep() == 1
    assert not dead.exists() and live.exists()


def test_keys_are_deterministic_and_sensitive() -> None:
    a = stage_key("emotion", "prev", {"emotion": "x"}, ["sha"], "code")
    assert a == stage_key("emotion", "prev", {"emotion": "x"}, ["sha"], "code")
    assert a != stage_key("emotion", "prev", {"emotion": "y"}, ["sha"], "code")


def test_atomic_write_failure_leaves_old_file(tmp_path: Path) -> None:
    target = tmp_path / "x.npy"
    atomic_write_npy(target, np.arange(3))

    def half_then_crash(tmp: Path) -> None:
        tmp.write_bytes(b"half a file")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write_with(target, half_then_crash)
    np.testing.assert_array_equal(np.load(target), np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["x.npy"]
