"""Faults around a run that must end in one line and a true state: links where emoflow writes,
an unreachable Prefect server, a failed report, names that look like TeX."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.core.config import load_config
from tasks.core.storage import atomic_write_json, atomic_write_text, real_dir, sha256_file
from tasks.run.rundir import RunDirError, check_out_dir, run_dir_lock, update_lock_record

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- links and odd files


def test_a_lock_that_is_a_symlink_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    (out / ".emoflow").mkdir(parents=True)
    (out / ".emoflow" / "lock").symlink_to(victim)
    with pytest.raises(RunDirError, match="symbolic link.*remove it") as info:
        with run_dir_lock(out):
            pass
    assert str(out / ".emoflow" / "lock") in str(info.value) and "\n" not in str(info.value)
    assert victim.read_text() == "precious"


def test_a_dangling_lock_link_creates_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / ".emoflow").mkdir(parents=True)
    (out / ".emoflow" / "lock").symlink_to(tmp_path / "nowhere")
    with pytest.raises(RunDirError, match="symbolic link"):
        with run_dir_lock(out):
            pass
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("make, what", [(lambda p: p.mkdir(), "is a folder"), (os.mkfifo, "not a regular file")])
def test_a_lock_that_is_not_a_file_is_one_line(tmp_path: Path, make, what: str) -> None:
    out = tmp_path / "out"
    (out / ".emoflow").mkdir(parents=True)
    make(out / ".emoflow" / "lock")
    with pytest.raises(RunDirError, match=what):
        with run_dir_lock(out):
            pass


def test_the_lock_record_is_never_written_through_a_link(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with run_dir_lock(out):
        lock = out / ".emoflow" / "lock"
        victim = tmp_path / "victim.txt"
        victim.write_text("precious")
        lock.unlink()
        lock.symlink_to(victim)
        with pytest.raises(OSError):
            update_lock_record(out, flow_run_id="x")
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("owned", [".emoflow", ".emoflow/artefacts", ".emoflow/progress", "recordings"])
def test_links_in_place_of_emoflows_folders_are_refused(tmp_path: Path, owned: str) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    (out / owned).parent.mkdir(parents=True, exist_ok=True)
    (out / owned).symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(RunDirError, match="symbolic link") as info:
        check_out_dir(out)
    assert str(out / owned) in str(info.value)
    assert not list(elsewhere.iterdir())


def test_out_itself_may_be_a_link(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "out").symlink_to(real, target_is_directory=True)
    with run_dir_lock(tmp_path / "out"):
        pass
    assert (real / ".emoflow" / "lock").is_file()


def test_atomic_writes_replace_a_link_never_write_through_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    for name, write in (("manifest.json", lambda p: atomic_write_json(p, {"a": 1})),
                        ("report.html", lambda p: atomic_write_text(p, "<html>"))):
        target = tmp_path / name
        target.symlink_to(victim)
        write(target)
        assert not target.is_symlink() and target.is_file()
    assert victim.read_text() == "precious"


def test_real_dir_refuses_links_and_files(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "file").write_text("x")
    assert real_dir(tmp_path / "a" / "b", base=tmp_path).is_dir()
    for bad in ("link", "file"):
        with pytest.raises(NotADirectoryError, match="remove it"):
            real_dir(tmp_path / bad / "x", base=tmp_path)


def test_hashing_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "f")
    with pytest.raises(OSError, match="not a regular file"):
        sha256_file(tmp_path / "f")


# ---------------------------------------------------------------- the Prefect server


def test_an_unreachable_prefect_server_is_one_line_before_any_work(tmp_path: Path) -> None:
    audio = tmp_path / "a.wav"
    import soundfile as sf

    sf.write(audio, np.zeros(16000, np.float32), 16000)
    out = tmp_path / "out"
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(audio), "--out", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - t0
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "http://127.0.0.1:9/api" in lines[0] and "prefect server start" in lines[0], lines
    assert not out.exists()  # nothing written
    assert took < 30, took


# ---------------------------------------------------------------- the report


def _finalize_empty_run(out: Path, *sets: str):
    from tasks.run.finalize import finalize

    cfg = load_config(None, list(sets))
    run = {"config": cfg.to_plain(), "out_dir": str(out), "failures": [], "t_start": time.perf_counter(),
           "run_id": "r", "run_name": "r", "started": "now", "models": {}}
    return finalize([], [], run)


def test_a_failed_report_leaves_no_stale_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.output.report as report

    out = tmp_path / "out"
    check_out_dir(out)
    (out / "report.html").write_text("<html>the previous run</html>")

    def broken(*a, **k):
        raise RuntimeError("matplotlib fell over")

    monkeypatch.setattr(report, "build_report", broken)
    summary = _finalize_empty_run(out)
    assert summary.report is None and not (out / "report.html").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["report"] is None and any(f["stage"] == "report" for f in manifest["failures"])


def test_a_disabled_report_leaves_no_stale_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    check_out_dir(out)
    (out / "report.html").write_text("<html>the previous run</html>")
    assert _finalize_empty_run(out, "report.enabled=false").report is None
    assert not (out / "report.html").exists()


TEX_NAMES = ["$x^{$", "a$b", "$\\frac{", "50$ & 10%", "_^{}\\"]


def test_names_that_look_like_tex_are_drawn_literally() -> None:
    from tasks.output.plots import (frame_curves_figure, png_bytes, scores_bar_figure, speaker_distribution,
                                    speaker_distribution_figure, timeline_figure)
    from tasks.core.records import EMOTIONS

    seg = pd.DataFrame({"speaker": TEX_NAMES, "start": [0.0, 1, 2, 3, 4], "end": [0.9, 1.9, 2.9, 3.9, 4.9],
                        "label": ["happy", "sad", "angry", "neutral", "happy"], "confidence": [0.9, 0.4, 0.8, 0.7, 0.6],
                        "status": ["ok"] * 5, "drilled": [False, True, False, False, True]})
    for fig in (timeline_figure(seg, recording_id="$rec^{$", duration=5.0),
                speaker_distribution_figure(speaker_distribution(seg), title="$x^{$: share"),
                frame_curves_figure([("$x^{$ 0.0-1.0", 0.0, 0.02, np.full((10, len(EMOTIONS)), 0.1))]),
                scores_bar_figure([0.1] * len(EMOTIONS), title="$x^{$")):
        assert png_bytes(fig)[:4] == b"\x89PNG"
    fig = timeline_figure(seg, recording_id="r", duration=5.0)
    png_bytes(fig)
    drawn = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert drawn == [n.replace("$", "\\$") for n in sorted(TEX_NAMES)]
