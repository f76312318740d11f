"""Every command, given its typical wrong inputs, answers with one line and the exit code the
README states: never a traceback (issue: "no traceback reaches a user from any command")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from flows.cli import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


@pytest.fixture(scope="module")
def junk(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Wrong inputs of every kind, made once."""
    d = tmp_path_factory.mktemp("junk")
    wav = d / "x.wav"
    sf.write(wav, np.zeros(16000, np.float32), 16000)
    a_file = d / "a_file"
    a_file.write_text("not a folder\n")
    readonly = d / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    fake_run = d / "fake_run"
    fake_run.mkdir()
    (fake_run / "manifest.json").write_text("{not json")
    (fake_run / "segments.csv").write_text("garbage,\n\x00\x01")
    bad_rttm = d / "bad.rttm"
    bad_rttm.write_text("SPEAKER x 1 abc def <NA> <NA> A\n")
    bad_yaml = d / "dup.yaml"
    bad_yaml.write_text("screen:\n  threshold: 0.5\nscreen:\n  threshold: 0.9\n")
    binary_yaml = d / "binary.yaml"
    binary_yaml.write_bytes(b"\xff\xfe\x00garbage")
    broken_model = d / "broken_model"
    broken_model.mkdir()
    (broken_model / "model.pt").write_bytes(b"PK\x03\x04 truncated zip")
    (broken_model / "config.yaml").write_text("model: Emotion2vec\n")
    (broken_model / "tokens.txt").write_text("angry\n")
    return {"dir": d, "wav": wav, "file": a_file, "readonly": readonly, "fake_run": fake_run,
            "bad_rttm": bad_rttm, "dup_yaml": bad_yaml, "binary_yaml": binary_yaml, "broken_model": broken_model}


def _cases(j: dict[str, Path], model: Path) -> list[tuple[list[str], int, str]]:
    """(arguments, expected exit code, text the one-line message must contain)."""
    d, wav = j["dir"], str(j["wav"])
    m = f"emotion.model={model}"
    return [
        (["run", wav, "--out", str(j["file"]), "--set", m], 2, "must be a folder"),
        (["run", wav, "--out", str(d / "o-known"), "--set", m, "--set", f"diarization.known_speakers={d / 'nope'}"],
         2, "known_speakers is not a directory"),
        (["run", wav, "--out", str(j["file"] / "sub"), "--set", m], 2, str(j["file"])),
        *([(["run", wav, "--out", str(j["readonly"] / "o"), "--set", m], 2, "cannot write the run directory")]
          if os.geteuid() != 0 else []),  # root writes anywhere: test_rundir covers it then
        (["run", str(d / "nothing-here"), "--set", "screen.threshold=nope"], 2, "screen.threshold"),
        (["run", wav, "--config", str(j["dup_yaml"])], 2, "duplicate key 'screen'"),
        (["run", wav, "--config", str(j["binary_yaml"])], 2, str(j["binary_yaml"])),
        (["run", wav, "--config", str(d)], 2, "config file not found"),
        (["run", wav, "--out", str(d / "o1"), "--set", "emotion.model=/no/such/model"], 2, "/no/such/model"),
        (["run", wav, "--out", str(d / "o2"), "--set", f"emotion.model={j['broken_model']}"], 2, "broken_model"),
        (["ui", "--set", "emotion.model=/no/such/model", "--port", "0"], 2, "/no/such/model"),
        (["ui", "--set", "screen.threshold=7"], 2, "screen.threshold"),
        (["report", str(d / "missing")], 2, "not a run directory"),
        (["report", str(j["file"])], 2, "not a run directory"),
        (["report", str(j["fake_run"])], 2, str(j["fake_run"])),
        (["evaluate", "diarization", str(d / "missing"), "--reference", str(j["bad_rttm"])], 2, "missing"),
        (["evaluate", "diarization", str(j["fake_run"]), "--reference", str(d / "none.rttm")], 2, "fake_run"),
        (["similar", str(d / "missing"), "x_0000"], 2, "missing"),
        (["similar", str(j["fake_run"]), "x_0000", "--top", "0"], 2, "--top"),
        (["cluster", str(d / "missing")], 2, "missing"),
        (["cluster", str(j["fake_run"]), "--k", "abc"], 2, "--k"),
        (["cluster", str(j["fake_run"]), "--k", "0"], 2, "--k"),
        (["models", "pull", "no-such-org/no-such-model"], 2, "no-such-org/no-such-model"),
        (["models", "pull", "../../etc/passwd"], 2, "../../etc/passwd"),
        (["models", "verify", "--set", f"emotion.model={j['broken_model']}"], 2, "broken_model"),
        (["models", "verify", "--set", "emotion.model=/no/such/model"], 2, "/no/such/model"),
        (["config", "--set", "nosuch.key=1"], 2, "nosuch"),
        (["config", "--set", "screen"], 2, "section.key=value"),
        (["config", "--config", str(j["dup_yaml"])], 2, "duplicate key"),
        (["serve", "--inbox", str(d / "missing")], 2, "inbox folder not found"),
        (["serve", "--inbox", str(d), "--cron", "every tuesday"], 2, "--cron"),
    ]


def test_no_command_shows_a_traceback(junk: dict[str, Path], tiny_model_dir: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    failures = []
    for args, code, needle in _cases(junk, tiny_model_dir):
        result = runner.invoke(app, args)
        out = result.output
        unexpected = result.exception is not None and not isinstance(result.exception, SystemExit)
        lines = [ln for ln in out.splitlines() if ln.startswith("emoflow: error:")]
        if unexpected or "Traceback" in out or result.exit_code != code or len(lines) != 1 or needle not in lines[0]:
            failures.append(f"{args}: exit {result.exit_code} (want {code}), "
                            f"exception {result.exception!r}, output {out[-400:]!r}")
    assert not failures, "\n".join(failures)


def test_file_named_like_an_option_is_an_input(tmp_path: Path, tiny_model_dir: Path, prefect_harness) -> None:
    """``-rf.flac`` after ``--`` is a file, and it reaches the decoder as a file, not an option."""
    from flows.pipeline import run_pipeline
    from tasks.core.config import load_config

    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "-rf.flac", np.zeros(8000, np.float32), 16000)
    os.symlink("/dev/zero", src / "zero.wav")
    cwd = os.getcwd()
    os.chdir(src)
    try:
        cfg = load_config(None, [f"emotion.model={tiny_model_dir}", "report.enabled=false"])
        summary = run_pipeline(["-rf.flac", "/dev/zero", "zero.wav"], config=cfg, out_dir=tmp_path / "o")
    finally:
        os.chdir(cwd)
    messages = {f["input"]: f["message"] for f in summary.failed}
    assert "-rf.flac" not in messages, messages  # decoded (silence), not "truncated or corrupt"
    assert summary.recordings == 1
    assert "character device" in messages["/dev/zero"] and "no such file" not in messages["/dev/zero"]
    assert "character device" in messages["zero.wav"]


def test_main_entry_point_hides_unexpected_errors(tmp_path: Path) -> None:
    """The console script prints one line for an unexpected error and keeps the details in a log."""
    code = ("import sys; import flows.cli as c, flows.pipeline as p\n"
            "def boom(*a, **k):\n    raise ZeroDivisionError('kaboom')\n"
            "p.run_pipeline = boom\n"
            "sys.argv = ['emoflow', 'run', 'x.wav']\nc.main()\n")
    env = {**os.environ, "EMOFLOW_LOG_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    assert out.returncode == 70, out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert "kaboom" in out.stderr and str(tmp_path) in out.stderr
    logged = list(tmp_path.glob("error-*.log"))
    assert logged and "ZeroDivisionError" in logged[0].read_text()
