"""Recording identity under hostile file names: ids are strings, unique and safe; rows, paths,
RTTMs, folders, the manifest and the report all agree; names never leak between recordings
through content-keyed artefacts; the run directory shows exactly the latest run."""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.core.records import assign_recording_ids

# --------------------------------------------------------------------------- ids, property-style

_name = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
                min_size=1, max_size=24)
_tricky = st.sampled_from(["0001", "nan", "1e3", "-rf", "--", ".", "..", "NaN", "None", "True", " ", "日本語 録音",
                           "it's \"q\"", "a b", "Y", "y", "é", "é"])
_rel_path = st.lists(st.one_of(_tricky, _name), min_size=1, max_size=3).map(
    lambda parts: "/".join(p.replace("/", "_") or "_" for p in parts) + ".flac")


@settings(max_examples=300, deadline=None)
@given(st.lists(_rel_path, min_size=1, max_size=12, unique=True))
def test_recording_ids_are_unique_safe_strings(paths: list[str]) -> None:
    ids = assign_recording_ids(paths)
    assert ids == assign_recording_ids(list(paths))  # deterministic
    assert all(isinstance(i, str) and i for i in ids)
    assert len({i.casefold() for i in ids}) == len(ids)  # unique, even on case-insensitive disks
    for i in ids:
        assert "/" not in i and "\x00" not in i and not any(c.isspace() for c in i)
        assert not i.startswith(("-", ".")) and i not in (".", "..")
        assert len(i) <= 80


def test_ids_keep_the_stem_and_grow_only_on_clashes() -> None:
    assert assign_recording_ids(["calls/0001.flac", "calls/nan.wav", "x/1e3.mp3"]) == ["0001", "nan", "1e3"]
    assert assign_recording_ids(["c/y.flac", "d/y.flac", "z.flac"]) == ["c-y", "d-y", "z"]
    upper, lower = assign_recording_ids(["a/Y.wav", "a/y.wav"])  # one file on a case-insensitive disk
    assert upper.startswith("a-Y.wav-") and lower.startswith("a-y.wav-") and upper.casefold() != lower.casefold()
    assert assign_recording_ids(["in/-rf.flac"]) == ["rf"]
    assert assign_recording_ids(["日本語 録音.flac"]) == ["日本語-録音"]


# --------------------------------------------------------------------------- one real run

HOSTILE = ["0001.flac", "nan.flac", "1e3.flac", "-rf.flac", "日本語 録音.flac", "it's \"q\".flac",
           "c/y.flac", "d/y.flac", "old.flac"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """6 s of one real LibriSpeech speaker."""
    src = sorted((shared_data / "librispeech" / "test-other").rglob("*.flac"))[0]
    out = tmp_path_factory.mktemp("clip") / "clip.flac"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-t", "6", str(out)], check=True)
    return out


def _run(files_root: Path, out: Path, model: Path, *extra: str):
    from flows.pipeline import run_pipeline
    from tasks.core.config import load_config

    cfg = load_config(None, [f"emotion.model={model}", "screen.threshold=0.5", "runner.retries=0",
                             "export.embeddings=all", *extra])
    return run_pipeline([str(files_root)], config=cfg, out_dir=out)


def _check_agreement(out: Path) -> pd.DataFrame:
    manifest = json.loads((out / "manifest.json").read_text())
    table = pd.read_parquet(out / "segments.parquet")
    csv = pd.read_csv(out / "segments.csv", dtype=str, keep_default_na=False)
    for col in ("recording_id", "segment_id", "speaker", "source_path"):
        assert str(table[col].dtype) in ("string", "object") and table[col].map(type).eq(str).all(), col
    assert list(csv["recording_id"]) == list(table["recording_id"])
    ok_inputs = {i["recording_id"]: i["path"] for i in manifest["inputs"]
                 if not manifest["recordings"][i["recording_id"]]["failed"]}
    folders = {p.name for p in (out / "recordings").iterdir() if not p.name.startswith(".")}
    assert set(table["recording_id"]) == set(ok_inputs) == folders
    assert manifest["totals"]["recordings"] == len(ok_inputs)
    for row in table.itertuples():
        assert row.segment_id.startswith(f"{row.recording_id}_")
        assert row.source_path == ok_inputs[row.recording_id]
    for rid in folders:
        rttm = (out / "recordings" / rid / "diarization.rttm").read_text(encoding="utf-8").split()
        assert not rttm or set(rttm[1::10]) == {rid}
        for js in (out / "recordings" / rid / "segments").glob("*.json"):
            doc = json.loads(js.read_text(encoding="utf-8"))
            assert doc["recording_id"] == rid and doc["segment_id"] == js.stem
    report = (out / "report.html").read_text(encoding="utf-8")
    for rid in folders:
        assert html.escape(rid) in report
    return table


def test_hostile_names_renames_and_duplicates(prefect_harness, clip: Path, tiny_model_dir: Path,
                                              tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    for name in HOSTILE:
        (inbox / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, inbox / name)  # the same content under every name
    out = inbox / "out"  # --out inside the input folder, with exported audio
    summary = _run(inbox, out, tiny_model_dir, "export.denoised_audio=true")
    assert not summary.failed, summary.failed
    table = _check_agreement(out)
    assert set(table["recording_id"]) == {"0001", "nan", "1e3", "rf", "日本語-録音", "it-s-q", "c-y", "d-y", "old"}
    assert summary.recordings == len(HOSTILE)
    per_rec = table.groupby("recording_id")["segment_id"].apply(lambda s: [x.split("_")[-1] for x in s])
    assert len({tuple(v) for v in per_rec}) == 1  # same content, same segments, each under its own name

    # rename old → new and drop a duplicate: the rerun reuses every artefact, names rows anew,
    # and the run directory shows exactly the new inputs (outputs were not ingested either)
    os.rename(inbox / "old.flac", inbox / "new.flac")
    shutil.rmtree(inbox / "d")
    summary = _run(inbox, out, tiny_model_dir, "export.denoised_audio=true")
    assert not summary.failed and summary.recordings == len(HOSTILE) - 1
    table = _check_agreement(out)
    assert "new" in set(table["recording_id"]) and "old" not in set(table["recording_id"])
    assert "y" in set(table["recording_id"])  # c/y.flac is alone now
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["recordings"]["new"]["stages"]["emotion"]["status"] == "reused"
    assert (out / "recordings" / "new" / "diarization.rttm").read_text().split()[1:2] in ([], ["new"])
    assert not any("old" in p.name for p in (out / "recordings").iterdir())
