"""The command line: help, usage and config errors (exit 2, one line), models list."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import soundfile as sf
import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()


@pytest.fixture
def wav(tmp_path: Path) -> Path:
    path = tmp_path / "x.wav"
    sf.write(path, np.zeros(16000, np.float32), 16000)
    return path


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in ("run", "serve", "ui", "report", "evaluate", "models", "similar", "cluster"):
        assert cmd in result.output


def test_bad_override_exits_2_with_one_line(wav: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", str(wav), "--out", str(tmp_path / "o"), "--set", "screen.threshold=2"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "screen.threshold" in lines[0] and "less than or equal to 1" in lines[0]
    assert not (tmp_path / "o").exists()


def test_missing_model_exits_2_fast(wav: Path, tmp_path: Path) -> None:
    t0 = time.monotonic()
    result = runner.invoke(app, ["run", str(wav), "--out", str(tmp_path / "o")])
    assert time.monotonic() - t0 < 15
    assert result.exit_code == 2
    assert "emotion.model" in result.output and "iic/emotion2vec_plus_large" in result.output
    assert "Traceback" not in result.output


def test_no_inputs_found(tmp_path: Path, tiny_model_dir: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["run", str(tmp_path / "empty"), "--set", f"emotion.model={tiny_model_dir}"])
    assert result.exit_code == 2 and "no audio files found" in result.output


def test_models_list() -> None:
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0
    assert "pyannote/segmentation-3.0" in result.output and "bundled" in result.output
    assert "iic/emotion2vec_plus_large" in result.output


def test_console_script_entry_point() -> None:
    out = subprocess.run([sys.executable, "-m", "flows.cli", "--help"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0 and "emoflow" in out.stdout


def test_config_hash_is_the_same_in_two_processes(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("screen:\n  threshold: 0.6\n")
    root = Path(__file__).resolve().parent.parent
    outs = [subprocess.run([sys.executable, "-m", "flows.cli", "config", "--config", str(path), "--hash"],
                           capture_output=True, text=True, cwd=root, check=True).stdout.strip() for _ in range(2)]
    assert outs[0] == outs[1] and len(outs[0]) == 64
    shown = runner.invoke(app, ["config", "--config", str(path)])
    assert shown.exit_code == 0 and "threshold: 0.6" in shown.output and outs[0] in shown.output
