"""Inbox claims: by content hash, exclusive across overlapping runs, stale claims reclaimed."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from flows.serve import STALE_CLAIM_S, ServeError, check_server, claim, release


def test_claim_is_exclusive(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        wins = list(pool.map(lambda _: claim(tmp_path, "abc", source="a.wav"), range(16)))
    assert wins.count(True) == 1


def test_done_is_never_reclaimed(tmp_path: Path) -> None:
    assert claim(tmp_path, "abc", source="a.wav")
    release(tmp_path, "abc", run_dir=tmp_path / "run-1")
    assert not claim(tmp_path, "abc", source="renamed.wav")


def test_released_without_result_can_be_claimed_again(tmp_path: Path) -> None:
    assert claim(tmp_path, "abc", source="a.wav")
    release(tmp_path, "abc", run_dir=None)
    assert claim(tmp_path, "abc", source="a.wav")


def test_stale_claim_is_taken_over(tmp_path: Path) -> None:
    assert claim(tmp_path, "abc", source="a.wav")
    path = tmp_path / ".emoflow" / "inbox" / "abc.claim"
    old = time.time() - STALE_CLAIM_S - 10
    os.utime(path, (old, old))
    assert claim(tmp_path, "abc", source="a.wav")


def test_serve_without_server_says_how(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        with pytest.raises(ServeError, match="prefect server start"):
            check_server(timeout=1)
