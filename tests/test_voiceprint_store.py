"""The voiceprint store refuses what it cannot use before the first recording, by name, and
never opens what is not a regular file (a FIFO would hang ``speakers list``)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from tasks.speakers.voiceprints import DIMENSION, SpeakerError, list_voiceprints, load_voiceprints

SHA = "ab" * 32


def _write(store: Path, name: str, vector, *, inner: str | None = None) -> None:
    store.mkdir(exist_ok=True)
    np.save(store / f"{name}.npy", np.asarray(vector, dtype=np.float32))
    (store / f"{name}.json").write_text(json.dumps(
        {"format": 1, "name": inner or name, "model": {"id": "cam++", "sha256": SHA}, "sources": [],
         "created": "2026-01-01T00:00:00Z", "speech_s": 12.0, "dimension": DIMENSION}))


def _unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIMENSION)
    return v / np.linalg.norm(v)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "speakers"
    _write(root, "Alice", _unit(1))
    _write(root, "Bob", _unit(2))
    return root


def test_good_voiceprints_load(store: Path) -> None:
    assert sorted(load_voiceprints(store=store, model_sha256=SHA)) == ["Alice", "Bob"]


@pytest.mark.parametrize("vector, why", [
    (np.full(DIMENSION, np.nan), "NaN"),
    (np.r_[_unit(3)[:-1], np.inf], "NaN or infinite"),
    (_unit(3)[:100], "shape (100,)"),
    (np.stack([_unit(3), _unit(4)]), "shape (2, 192)"),
    (np.zeros(DIMENSION), "norm 0"),
    (3 * _unit(3), "norm 3"),
])
def test_an_unusable_voiceprint_is_refused_by_name(store: Path, vector, why: str) -> None:
    _write(store, "Carol", vector)
    with pytest.raises(SpeakerError) as err:
        load_voiceprints(store=store, model_sha256=SHA)
    msg = str(err.value)
    assert "\n" not in msg and str(store / "Carol.json") in msg and why in msg, msg


def test_a_voiceprint_under_another_name_is_refused(store: Path) -> None:
    os.rename(store / "Bob.json", store / "Dave.json")
    os.rename(store / "Bob.npy", store / "Dave.npy")
    with pytest.raises(SpeakerError, match="holds the name 'Bob', not 'Dave'"):
        list_voiceprints(store=store)


def test_a_fifo_in_the_store_is_skipped_without_opening_it(store: Path) -> None:
    os.mkfifo(store / "Eve.json")
    os.mkfifo(store / "Zed.npy")
    result: list = []
    t = threading.Thread(target=lambda: result.append(sorted(vp.name for vp in list_voiceprints(store=store))),
                         daemon=True)
    t.start()
    t.join(timeout=10)
    assert result == [["Alice", "Bob"]], "list_voiceprints blocked on a FIFO"


def test_a_fifo_as_the_vector_is_refused_without_opening_it(store: Path) -> None:
    (store / "Bob.npy").unlink()
    os.mkfifo(store / "Bob.npy")
    with pytest.raises(SpeakerError, match="not a regular file"):
        list_voiceprints(store=store)


def test_links_in_the_store_are_refused(store: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    _write(outside, "Mallory", _unit(5))
    (store / "Mallory.json").symlink_to(outside / "Mallory.json")
    (store / "Mallory.npy").symlink_to(outside / "Mallory.npy")
    with pytest.raises(SpeakerError, match="symbolic link"):
        list_voiceprints(store=store)


def test_a_nan_voiceprint_stops_the_run_before_the_first_recording(tmp_path: Path, store: Path,
                                                                  tiny_model_dir: Path) -> None:
    """Vetting loads the store with the real CAM++ checksum: a NaN voiceprint is a RunError."""
    from tasks.core.config import load_config
    from tasks.core.errors import RunError
    from tasks.models.vetting import resolve_models
    from tasks.speakers.voiceprints import current_model

    sha = current_model()[1]
    for name in ("Alice", "Bob"):
        facts = json.loads((store / f"{name}.json").read_text())
        facts["model"]["sha256"] = sha
        (store / f"{name}.json").write_text(json.dumps(facts))
    cfg = load_config(None, [f"emotion.model={tiny_model_dir}", f"diarization.known_speakers={store}"])
    resolve_models(cfg)  # fine as it is
    np.save(store / "Bob.npy", np.full(DIMENSION, np.nan, np.float32))
    with pytest.raises(RunError, match="Bob.json: not a usable voiceprint: its vector holds NaN"):
        resolve_models(cfg)


@pytest.mark.parametrize("vector, why", [
    ((_unit(3) + 1j * _unit(4)).astype(np.complex64), "complex64 values"),
    (np.eye(DIMENSION, dtype=np.int64)[0], "int64 values"),
    (np.eye(DIMENSION, dtype=bool)[0], "bool values"),
    (np.array([repr(x) for x in _unit(3)]), "values, a voiceprint holds floating-point numbers"),
])
def test_a_voiceprint_that_is_not_floating_point_is_refused(store: Path, vector, why: str) -> None:
    """A unit vector of integers, booleans, text or complex numbers converts to 192 floats of
    norm 1: it is not an embedding, and must not be taken as one."""
    store.joinpath("Carol.npy").write_bytes(b"")
    _write(store, "Carol", _unit(3))
    np.save(store / "Carol.npy", vector)
    with pytest.raises(SpeakerError) as err:
        load_voiceprints(store=store, model_sha256=SHA)
    assert str(store / "Carol.json") in str(err.value) and why in str(err.value), str(err.value)


def test_float16_and_float64_voiceprints_are_fine(store: Path) -> None:
    for name, dtype in (("Half", np.float16), ("Double", np.float64)):
        _write(store, name, _unit(9))
        np.save(store / f"{name}.npy", _unit(9).astype(dtype))
    assert sorted(load_voiceprints(store=store, model_sha256=SHA)) == ["Alice", "Bob", "Double", "Half"]


def test_a_huge_or_foreign_file_is_refused_without_reading_it(store: Path, monkeypatch) -> None:
    with open(store / "Bob.npy", "r+b") as fh:
        fh.truncate(10 * 1024 * 1024)  # sparse: a huge vector file
    loads, real_load = [], np.load
    monkeypatch.setattr(np, "load", lambda path, *a, **k: loads.append(Path(path).name) or real_load(path, *a, **k))
    with pytest.raises(SpeakerError, match=r"Bob.npy: not a usable voiceprint: 10485760 bytes"):
        list_voiceprints(store=store)
    assert "Bob.npy" not in loads
    monkeypatch.undo()
    np.savez(open(store / "Bob.npy", "wb"), v=_unit(2))  # an .npz archive under the .npy name
    with pytest.raises(SpeakerError, match="not a NumPy .npy array"):
        list_voiceprints(store=store)
    np.save(store / "Bob.npy", _unit(2))
    (store / "Bob.json").write_text("[1, 2, 3]")
    with pytest.raises(SpeakerError, match="Bob.json: unreadable voiceprint"):
        list_voiceprints(store=store)


@pytest.mark.parametrize("name", ["SPEAKER_01", "a+b", "-rf", "tab\there", "nl\nx", "bidi\u202eevil", " pad"])
def test_a_file_name_enrol_would_refuse_is_refused_in_the_store(store: Path, name: str) -> None:
    """A file dropped into the store under a name enrolment refuses (emoflow's own labels, the
    overlap joiner, control characters) would name speakers wrongly in every table."""
    _write(store, name, _unit(6))
    with pytest.raises(SpeakerError) as err:
        list_voiceprints(store=store)
    message = str(err.value)
    assert "not a valid speaker name" in message and len(message.splitlines()) == 1, message


@pytest.mark.parametrize("first, second", [("Alice", "alice"), ("Jos\u00e9", "Jose\u0301"), ("STRASSE", "straße")])
def test_two_voiceprints_for_one_name_are_refused(tmp_path: Path, first: str, second: str) -> None:
    """Names that differ only in case or Unicode form are one person's name: two voiceprints for
    it would label one speaker two ways (or one silently replace the other)."""
    import unicodedata

    root = tmp_path / "speakers"
    _write(root, first, _unit(1))
    raw = root / f"{second}.npy"
    np.save(raw, _unit(2).astype(np.float32))
    (root / f"{second}.json").write_text(json.dumps(
        {"format": 1, "name": second, "model": {"id": "cam++", "sha256": SHA}, "sources": [], "created": "",
         "speech_s": 3.0, "dimension": DIMENSION}))
    if len(list(root.glob("*.json"))) < 2:
        pytest.skip("the file system folds these names into one")
    with pytest.raises(SpeakerError, match="two voiceprints for one speaker name"):
        list_voiceprints(store=root)
    from tasks.speakers.voiceprints import enroll

    (root / f"{second}.json").unlink()
    (root / f"{second}.npy").unlink()
    if unicodedata.normalize("NFC", second) != unicodedata.normalize("NFC", first):  # NFC forms: the same name
        with pytest.raises(SpeakerError, match="enrolled already"):
            enroll(second, ["unused.wav"], store=root, embedder=object(), model_ref="unused")
