"""Shared fixtures: real data paths, a tiny random emotion2vec, an isolated Prefect."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
SHARED_DATA = SHARED / "data"

# Tests never touch the network or the user's caches.
os.environ.setdefault("EMOFLOW_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded random generator (same numbers every run)."""
    return np.random.default_rng(20261125)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``: real recordings (AMI, LibriSpeech, noise)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


def _librispeech_rows(shared_data: Path) -> list[dict[str, str]]:
    import csv

    with open(shared_data / "librispeech" / "test-other" / "speakers.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="session")
def librispeech_voices(shared_data: Path) -> list[list[Path]]:
    """The LibriSpeech test-other utterances, one list per speaker (sorted by speaker id)."""
    root = shared_data / "librispeech" / "test-other"
    by: dict[str, list[Path]] = {}
    for row in _librispeech_rows(shared_data):
        by.setdefault(row["speaker_id"], []).append(root / row["file"])
    return [sorted(v) for _, v in sorted(by.items())]


@pytest.fixture(scope="session")
def female_and_male_voices(shared_data: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The utterances (16 kHz float32, in file order) of the first female and the first male
    LibriSpeech test-other speaker (by speaker id)."""
    import soundfile as sf

    root = shared_data / "librispeech" / "test-other"
    rows = _librispeech_rows(shared_data)

    def first(sex: str) -> list[np.ndarray]:
        speaker = sorted({r["speaker_id"] for r in rows if r["sex"] == sex})[0]
        files = sorted(root / r["file"] for r in rows if r["speaker_id"] == speaker)
        return [sf.read(f, dtype="float32")[0] for f in files]

    return first("F"), first("M")


@pytest.fixture(scope="session", autouse=True)
def _isolated_caches(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Model cache and checksum cache in a tmp dir, so tests never read the user's."""
    os.environ["EMOFLOW_MODEL_DIR"] = str(tmp_path_factory.mktemp("model-cache") / "models")


@pytest.fixture(scope="session")
def tiny_sensevoice_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised SenseVoiceSmall directory (funasr's own class, small dims,
    a sentencepiece model trained here with SenseVoice's special tokens at their ids)."""
    from tasks.transcription.testmodel import build_sensevoice_dir

    return build_sensevoice_dir(tmp_path_factory.mktemp("sensevoice_tiny"), size="tiny", seed=0)


@pytest.fixture(scope="session", autouse=True)
def _default_transcribe_model(_isolated_caches: None, tiny_sensevoice_dir: Path) -> None:
    """The default ``transcribe.model`` (iic/SenseVoiceSmall) resolves to the tiny test model in
    the tests' model cache, as a completed download would (runs and subprocesses find it; its
    output is labelled a test model)."""
    import shutil

    from tasks.models.hub import cache_dir_for

    target = cache_dir_for("iic/SenseVoiceSmall")
    shutil.copytree(tiny_sensevoice_dir, target)
    (target / ".emoflow-complete").write_text("{}")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised emotion2vec directory (funasr's own class, small dims)."""
    from tasks.models.testmodels import build_emotion2vec_dir

    return build_emotion2vec_dir(tmp_path_factory.mktemp("emotion2vec_tiny"), size="tiny", seed=0)


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory):
    """An isolated Prefect (tmp PREFECT_HOME, ephemeral server) shared by the whole session."""
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(home / "storage")
    os.environ["PREFECT_RESULTS_PERSIST_BY_DEFAULT"] = "false"
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield home
