"""The run directory: checked before use, one writer at a time, dead owners taken over, only
the latest run visible, its own outputs never ingested."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from tasks.run.inputs import discover_inputs
from tasks.run.rundir import RunDirError, check_out_dir, prune_recordings, run_dir_lock

ROOT = Path(__file__).resolve().parent.parent


def test_out_dir_must_be_a_writable_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunDirError, match="must be a folder"):
        check_out_dir(tmp_path / "f")
    with pytest.raises(RunDirError, match="a parent of it is a file"):
        check_out_dir(tmp_path / "f" / "sub")

    def read_only(self, *a, **k):  # root ignores permission bits: simulate a read-only mount
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(RunDirError, match="read-only file system"):
        check_out_dir(tmp_path / "ro")


def test_second_writer_stops_at_once_naming_the_owner(tmp_path: Path) -> None:
    with run_dir_lock(tmp_path / "o") as lock:
        assert lock.record["pid"] == os.getpid()
        code = ("from tasks.run.rundir import run_dir_lock\n"
                f"with run_dir_lock({str(tmp_path / 'o')!r}): pass\n")
        t0 = time.monotonic()
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
        assert time.monotonic() - t0 < 10
        assert other.returncode != 0 and f"pid {os.getpid()}" in other.stderr
    # released on exit: the next owner gets it and knows its predecessor finished
    with run_dir_lock(tmp_path / "o") as lock:
        assert lock.previous["state"] == "finished" and not lock.previous_crashed


def test_dead_owner_is_taken_over_and_known_as_crashed(tmp_path: Path) -> None:
    code = ("import time; from tasks.run.rundir import run_dir_lock, update_lock_record\n"
            f"with run_dir_lock({str(tmp_path / 'o')!r}):\n"
            f"    update_lock_record({str(tmp_path / 'o')!r}, flow_run_id='abc')\n"
            "    print('locked', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    with pytest.raises(RunDirError, match=f"pid {proc.pid}"):
        with run_dir_lock(tmp_path / "o"):
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with run_dir_lock(tmp_path / "o") as lock:
        assert lock.previous_crashed and lock.previous["pid"] == proc.pid
        assert lock.previous["flow_run_id"] == "abc"


def test_discovery_skips_run_dirs_hidden_and_out(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    (inbox / "sub").mkdir(parents=True)
    (inbox / ".hidden").mkdir()
    for p in ("a.wav", "sub/b.WAV", ".hidden/c.wav", "notes.txt"):
        (inbox / p).write_bytes(b"RIFF")
    old_run = inbox / "old_run"
    (old_run / ".emoflow").mkdir(parents=True)
    (old_run / "recordings" / "a").mkdir(parents=True)
    (old_run / "recordings" / "a" / "denoised.wav").write_bytes(b"RIFF")
    (inbox / "out" / "recordings").mkdir(parents=True)
    (inbox / "out" / "recordings" / "x.wav").write_bytes(b"RIFF")
    files, failures = discover_inputs([str(inbox), str(inbox / "missing.wav"), "/dev/null"],
                                      extensions=[".wav"], exclude=[inbox / "out"])
    assert [f.relative_to(inbox).as_posix() for f in files] == ["a.wav", "sub/b.WAV"]
    messages = [f["message"] for f in failures]
    assert any("missing.wav" in m and "no such file" in m for m in messages)
    assert any(m.startswith("/dev/null:") and "character device" in m for m in messages)


def test_prune_keeps_only_this_runs_recordings(tmp_path: Path) -> None:
    for name in ("a", "b", ".b.tmp-1-x"):
        (tmp_path / "recordings" / name).mkdir(parents=True)
    assert prune_recordings(tmp_path, keep=["a"]) == ["b"]
    assert sorted(p.name for p in (tmp_path / "recordings").iterdir()) == ["a"]


def test_two_runs_into_one_directory(prefect_harness, tiny_model_dir: Path, tmp_path: Path,
                                     shared_data: Path) -> None:
    """Started at once with different thresholds: one writes, the other stops with one line; the
    directory's config.yaml, manifest and drilled flags all come from the one that wrote."""
    from prefect.settings import PREFECT_API_URL

    audio = tmp_path / "in" / "a.wav"
    audio.parent.mkdir()
    wav, sr = sf.read(shared_data / "ami" / "dev00.flac", frames=16000 * 8, dtype="float32")
    sf.write(audio, wav, sr)
    out = tmp_path / "out"
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    procs = [subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(audio), "--out", str(out),
                               "--set", f"emotion.model={tiny_model_dir}", "--set", f"screen.threshold={t}",
                               "--set", "report.enabled=false"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for t in (0.1, 0.9)]
    results = [p.communicate(timeout=600) + (p.returncode,) for p in procs]
    codes = sorted(r[2] for r in results)
    assert codes in ([0, 0], [0, 2]), results
    for _, err, code in results:
        assert "Traceback" not in err
        if code == 2:
            assert "another emoflow run" in err and "pid" in err
    threshold = yaml.safe_load((out / "config.yaml").read_text())["screen"]["threshold"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["screen"]["threshold"] == threshold
    import pandas as pd

    table = pd.read_parquet(out / "segments.parquet")
    scored = table[table["status"] == "ok"]
    assert len(scored)
    assert (scored["drilled"] == (scored["confidence"] < threshold)).all()


def test_yaml_duplicate_keys_are_refused(tmp_path: Path) -> None:
    from tasks.core.config import ConfigError, load_config

    p = tmp_path / "c.yaml"
    p.write_text("screen:\n  threshold: 0.5\n  threshold: 0.6\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'threshold' \(line 3\)"):
        load_config(p)


def test_killed_run_is_marked_crashed_by_the_next(prefect_harness, tiny_model_dir: Path, tmp_path: Path,
                                                  shared_data: Path) -> None:
    """kill -9 leaves a flow run RUNNING on the server; the next run into the directory marks it Crashed."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    from flows.pipeline import run_pipeline
    from tasks.core.config import load_config

    audio = tmp_path / "a.wav"
    wav, sr = sf.read(shared_data / "ami" / "dev00.flac", frames=16000 * 8, dtype="float32")
    sf.write(audio, wav, sr)
    out = tmp_path / "out"
    sets = [f"emotion.model={tiny_model_dir}", "report.enabled=false"]
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(audio), "--out", str(out),
                             *[a for s in sets for a in ("--set", s)]], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock_file = out / ".emoflow" / "lock"
    deadline = time.monotonic() + 300
    record: dict = {}
    while time.monotonic() < deadline and not record.get("flow_run_id"):
        time.sleep(0.2)
        try:
            record = json.loads(lock_file.read_text() or "{}")
        except (OSError, ValueError):
            record = {}
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert record.get("flow_run_id"), "the run never started its flow"
    with get_client(sync_client=True) as client:
        before = client.read_flow_run(record["flow_run_id"]).state
    if before is not None and before.is_final():
        pytest.skip("the killed run had already finished")
    run_pipeline([str(audio)], config=load_config(None, sets), out_dir=out)
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(record["flow_run_id"]).state.is_crashed()
