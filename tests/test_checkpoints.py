"""Model files cannot run code: every loader refuses a checkpoint whose unpickling would call a
function, without calling it; bad model files are one-line errors (exit 2 in the CLI)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from flows.cli import app
from tasks.models.checkpoints import (
    CheckpointLoadError,
    UnsafeCheckpointError,
    convert_hint,
    load_pyannote_model,
    load_state,
    pyannote_safe_globals,
)
from tasks.core.config import EmotionConfig
from tasks.emotion.model import CheckpointError, ModelFilesError, check_emotion_model, load_emotion_model
from tasks.models.hub import bundled_path, find_checkpoint, resolve

ROOT = Path(__file__).resolve().parent.parent
SEGMENTATION = "pyannote/segmentation-3.0"
CAMPPLUS = "iic/speech_campplus_sv_zh_en_16k-common_advanced"


class Payload:
    """Unpickling this calls ``Path.touch(sentinel)``: stands for any code a model file could run."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return (Path.touch, (self.sentinel,))


def _one_line_refusal(exc: pytest.ExceptionInfo, file: Path) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"{file}: refused:"), msg
    return msg


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    path = tmp_path / "SENTINEL"
    yield path
    assert not path.exists(), "a model file ran code"


@pytest.fixture
def evil_emotion_dir(tiny_model_dir: Path, tmp_path: Path, sentinel: Path) -> Path:
    """The tiny emotion2vec with its real weights plus a payload, saved like a real checkpoint."""
    d = tmp_path / "evil_emotion"
    shutil.copytree(tiny_model_dir, d)
    state = torch.load(tiny_model_dir / "model.pt", map_location="cpu", weights_only=True)
    torch.save({"model": state["model"], "extra": Payload(sentinel)}, d / "model.pt")
    return d


def _clips() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (8000, 24000, 40000)]


def _scores(model_dir: Path) -> np.ndarray:
    em = load_emotion_model(EmotionConfig(model=str(model_dir), device="cpu"), resolved=resolve(str(model_dir)))
    return np.stack([r.scores for r in em.analyse(_clips())])


# -- the payload is real -------------------------------------------------------------------


def test_payload_runs_code_when_unpickled_unsafely(tmp_path: Path) -> None:
    target = tmp_path / "ran"
    torch.save({"model": {"w": torch.zeros(2)}, "extra": Payload(target)}, tmp_path / "m.pt")
    # the file asks the unpickler for callables (torch lists them without unpickling anything) ...
    assert "builtins.getattr" in torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "m.pt")
    # ... and what an unrestricted unpickler would call with them creates the file: the payload is real
    call, args = Payload(target).__reduce__()
    call(*args)
    assert target.exists()


# -- the shared loader ---------------------------------------------------------------------


@pytest.mark.parametrize("zipfile", [True, False], ids=["zip", "legacy"])
def test_load_state_refuses_code_and_reads_tensors(tmp_path: Path, sentinel: Path, zipfile: bool) -> None:
    evil, good = tmp_path / "evil.pt", tmp_path / "good.pt"
    torch.save({"model": {"w": torch.ones(3)}, "x": Payload(sentinel)}, evil, _use_new_zipfile_serialization=zipfile)
    torch.save({"model": {"w": torch.ones(3)}}, good, _use_new_zipfile_serialization=zipfile)
    with pytest.raises(UnsafeCheckpointError) as err:
        load_state(evil)
    msg = _one_line_refusal(err, evil)
    assert "needs arbitrary unpickling" in msg and "could run code" in msg
    assert "model.safetensors" in msg  # says how to convert it
    assert torch.equal(load_state(good)["w"], torch.ones(3))


@pytest.mark.parametrize("content,reason", [
    (None, "failed finding central directory"),  # the tiny model truncated
    (b"", "empty or truncated file"),
    (b"<html>404 Not Found</html>", "pickle opcode 60 is not allowed"),
])
def test_unreadable_checkpoints_are_one_line_errors(tiny_model_dir: Path, tmp_path: Path, content, reason) -> None:
    f = tmp_path / "model.pt"
    data = (tiny_model_dir / "model.pt").read_bytes()
    f.write_bytes(data[: len(data) // 2] if content is None else content)
    with pytest.raises(CheckpointLoadError) as err:
        load_state(f)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{f}: cannot read") and reason in msg


def test_load_state_rejects_non_tensor_entries(tmp_path: Path) -> None:
    f = tmp_path / "m.pt"
    torch.save({"model": {"w": torch.ones(1), "note": "hello"}}, f)
    with pytest.raises(CheckpointLoadError, match=r"not a state dict: 1 entries are not tensors \(e.g. note\)"):
        load_state(f)


def test_truncated_safetensors_is_an_error(tmp_path: Path) -> None:
    import safetensors.torch

    f = tmp_path / "model.safetensors"
    safetensors.torch.save_file({"w": torch.ones(4)}, f)
    f.write_bytes(f.read_bytes()[:-3])
    with pytest.raises(CheckpointLoadError, match="cannot read the safetensors file"):
        load_state(f)


# -- emotion2vec ---------------------------------------------------------------------------


def test_emotion_loaders_refuse_code(evil_emotion_dir: Path, sentinel: Path) -> None:
    for load in (check_emotion_model, lambda d: load_emotion_model(EmotionConfig(model=str(d), device="cpu"))):
        with pytest.raises(UnsafeCheckpointError) as err:
            load(evil_emotion_dir)
        _one_line_refusal(err, evil_emotion_dir / "model.pt")


def test_emotion_model_files_are_checked(tiny_model_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    check_emotion_model(d)  # the intact copy passes
    (d / "tokens.txt").write_text("生气/angry\nx/bored\n", encoding="utf-8")
    with pytest.raises(ModelFilesError, match=rf"^{d / 'tokens.txt'}: label 'x/bored' is not one of"):
        check_emotion_model(d)
    (d / "tokens.txt").unlink()
    with pytest.raises(ModelFilesError, match=rf"^{d / 'tokens.txt'}: missing"):
        check_emotion_model(d)
    shutil.copy(tiny_model_dir / "tokens.txt", d / "tokens.txt")
    (d / "config.yaml").write_text("model: Emotion2vec\nmodel_conf: [unclosed\n", encoding="utf-8")
    with pytest.raises(ModelFilesError, match=rf"^{d / 'config.yaml'}: not valid YAML"):
        check_emotion_model(d)
    (d / "config.yaml").unlink()
    with pytest.raises(ModelFilesError, match=rf"^{d / 'config.yaml'}: missing"):
        check_emotion_model(d)
    shutil.copy(tiny_model_dir / "config.yaml", d / "config.yaml")
    state = torch.load(d / "model.pt", weights_only=True)
    state["model"]["proj.bias"] = torch.zeros(5)
    torch.save(state, d / "model.pt")
    with pytest.raises(CheckpointError, match=rf"^{d / 'model.pt'}: checkpoint does not fit the model: .*proj.bias"):
        check_emotion_model(d)


def test_safetensors_emotion2vec_gives_the_same_scores(tiny_model_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "st"
    shutil.copytree(tiny_model_dir, d)
    # the conversion command emoflow suggests, run as printed (a trusted file here)
    command = convert_hint(d / "model.pt").split("trust: ", 1)[1]
    argv = shlex.split(command)
    assert argv[0] == "python"
    subprocess.run([sys.executable, *argv[1:]], check=True, cwd=d, timeout=120)
    assert find_checkpoint(d, preferred="model.pt") == d / "model.safetensors"  # preferred over model.pt
    (d / "model.pt").unlink()
    np.testing.assert_array_equal(_scores(d), _scores(tiny_model_dir))


# -- CAM++ and pyannote segmentation -------------------------------------------------------


def test_campplus_loader_refuses_code(tmp_path: Path, sentinel: Path) -> None:
    from tasks.speakers.campplus import CHECKPOINT_NAME, check_campplus, load_campplus

    real = load_state(bundled_path(CAMPPLUS) / CHECKPOINT_NAME)
    d = tmp_path / "campplus"
    d.mkdir()
    torch.save({"state_dict": dict(real), "x": Payload(sentinel)}, d / CHECKPOINT_NAME)
    for load in (load_campplus, check_campplus):
        with pytest.raises(UnsafeCheckpointError) as err:
            load(d)
        _one_line_refusal(err, d / CHECKPOINT_NAME)
    torch.save({"state_dict": {k: v for k, v in real.items() if "head" not in k}}, d / CHECKPOINT_NAME)
    with pytest.raises(CheckpointLoadError, match=r"not a CAM\+\+ checkpoint: \d+ missing weights \(e.g. head"):
        check_campplus(d)


def test_segmentation_and_vad_loaders_refuse_code(tmp_path: Path, sentinel: Path) -> None:
    from tasks.diarization.pipeline import load_segmentation_model
    from tasks.audio.vad import _inference

    with torch.serialization.safe_globals(pyannote_safe_globals()):
        ckpt = torch.load(bundled_path(SEGMENTATION) / "pytorch_model.bin", map_location="cpu", weights_only=True)
    ckpt["callbacks"] = {"x": Payload(sentinel)}
    d = tmp_path / "seg"
    d.mkdir()
    torch.save(ckpt, d / "pytorch_model.bin")
    for load in (lambda p: load_segmentation_model(p, device="cpu"), lambda p: _inference(p, 2.5)):
        with pytest.raises(UnsafeCheckpointError) as err:
            load(str(d))
        _one_line_refusal(err, d / "pytorch_model.bin")


def test_segmentation_checkpoint_must_name_a_pyannote_model(tmp_path: Path) -> None:
    with torch.serialization.safe_globals(pyannote_safe_globals()):
        ckpt = torch.load(bundled_path(SEGMENTATION) / "pytorch_model.bin", map_location="cpu", weights_only=True)
    ckpt["pyannote.audio"]["architecture"]["module"] = "antigravity"  # importing it runs code
    torch.save(ckpt, tmp_path / "pytorch_model.bin")
    with pytest.raises(UnsafeCheckpointError, match="architecture module 'antigravity'"):
        load_pyannote_model(tmp_path)


def test_bundled_segmentation_loads() -> None:
    from pyannote.audio.models.segmentation import PyanNet

    model = load_pyannote_model(bundled_path(SEGMENTATION))
    assert isinstance(model, PyanNet) and not model.training
    assert model.specifications.powerset_max_classes == 2


# -- the CLI: exit 2, one line, before any recording ---------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=180)


def test_cli_refuses_malicious_model(evil_emotion_dir: Path, tmp_path: Path, sentinel: Path) -> None:
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"RIFF")  # never read: the model is refused first
    out = tmp_path / "out"
    for args in (["models", "verify"], ["run", str(wav), "--out", str(out)]):
        r = _cli(*args, "--set", f"emotion.model={evil_emotion_dir}")
        assert r.returncode == 2, r.stderr
        lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
        assert len(lines) == 1 and "Traceback" not in r.stderr
        assert lines[0].startswith(f"emoflow: error: {evil_emotion_dir / 'model.pt'}: refused: ")
    assert not out.exists()


@pytest.mark.parametrize("command", ["verify", "run"])
def test_cli_truncated_model_exits_2(tiny_model_dir: Path, tmp_path: Path, command: str) -> None:
    d = tmp_path / "trunc"
    shutil.copytree(tiny_model_dir, d)
    data = (d / "model.pt").read_bytes()
    (d / "model.pt").write_bytes(data[: len(data) - 1000])
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"RIFF")
    args = ["models", "verify"] if command == "verify" else ["run", str(wav), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(app, [*args, "--set", f"emotion.model={d}"])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"emoflow: error: {d / 'model.pt'}: cannot read the checkpoint")
    assert not (tmp_path / "o").exists()
