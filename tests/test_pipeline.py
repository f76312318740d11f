"""The whole flow on real AMI recordings: the output contract, reruns, failures, kills, Dask.

Uses the tiny random emotion2vec (labelled a test model) and the real diarization weights.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from flows.pipeline import run_pipeline
from tasks.core.config import load_config
from tasks.output.export import TABLE_COLUMNS
from tasks.core.records import EMOTIONS

pytestmark = pytest.mark.slow

CONTRACT_COLUMNS = [
    "recording_id", "source_path", "segment_id", "speaker", "start", "end", "duration", "label", "confidence",
    *[f"score_{e}" for e in EMOTIONS], "drilled", "embedding_row", "model_sha256",
]
STAGES = ["load", "denoise", "diarize", "segment", "emotion", "screen", "export"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """Two real AMI excerpts (one as MP3), digital silence and two bad files."""
    d = tmp_path_factory.mktemp("inputs")
    shutil.copy(shared_data / "ami" / "dev00.flac", d / "dev00.flac")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(shared_data / "ami" / "trn00.flac"),
                    "-c:a", "libmp3lame", "-b:a", "64k", str(d / "trn00.mp3")], check=True)
    sf.write(d / "silence.wav", np.zeros(3 * 16000, np.float32), 16000)
    (d / "broken.wav").write_bytes(b"JUNK" + np.random.default_rng(7).bytes(4000))
    (d / "empty.flac").write_bytes(b"")
    return d


def _cfg(model: Path, *extra: str):
    # The tiny test model's (meaningless) scores spread over ~0.35-0.8: threshold 0.5 drills some.
    return load_config(None, [f"emotion.model={model}", "screen.threshold=0.5", "export.denoised_audio=true",
                              "runner.retries=0", *extra])


@pytest.fixture(scope="module")
def cold_run(prefect_harness, inputs: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("run")
    summary = run_pipeline([str(inputs)], config=_cfg(tiny_model_dir), out_dir=out)
    # Later tests rerun into the same directory: keep the cold table to compare against.
    shutil.copy(out / "segments.parquet", out.parent / "cold_segments.parquet")
    return out, summary


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def test_failures_are_exactly_the_bad_files(cold_run) -> None:
    out, summary = cold_run
    failures = pd.read_csv(out / "failures.csv")
    assert list(failures.columns) == ["input", "stage", "error", "message"]
    assert sorted(Path(p).name for p in failures["input"]) == ["broken.wav", "empty.flac"]
    assert set(failures["stage"]) == {"load"}
    assert set(failures["error"]) == {"NotAudioError", "EmptyAudioError"}
    for msg, path in zip(failures["message"], failures["input"]):
        assert path in msg and "\n" not in msg
    assert summary.recordings == 3 and len(summary.failed) == 2


def test_segments_table_contract(cold_run) -> None:
    out, _ = cold_run
    table = pd.read_parquet(out / "segments.parquet")
    assert list(table.columns[: len(CONTRACT_COLUMNS)]) == CONTRACT_COLUMNS
    assert list(table.columns) == TABLE_COLUMNS
    assert set(table["recording_id"]) == {"dev00", "trn00"}
    ok = table[table["status"] == "ok"]
    assert len(ok) >= 4
    assert ((ok["duration"] >= 1.5 - 1e-6) & (ok["duration"] <= 10 + 1e-6)).all()
    np.testing.assert_allclose(ok[[f"score_{e}" for e in EMOTIONS]].sum(axis=1), 1.0, atol=1e-4)
    assert set(ok["label"]) <= set(EMOTIONS)
    assert (ok["drilled"] == (ok["confidence"] < 0.5)).all()
    assert ok["drilled"].any() and not ok["drilled"].all()
    assert (table["end"] > table["start"]).all() and (table["model_sha256"].str.len() == 64).all()
    assert (table["start"] >= 0).all() and (table["end"] <= 30.0 + 1e-3).all()  # inside the audio
    csv = pd.read_csv(out / "segments.csv")
    assert list(csv.columns) == TABLE_COLUMNS and len(csv) == len(table)
    not_ok = table[table["status"] != "ok"]
    assert set(not_ok["status"]) <= {"too_short", "overlap"} and (not_ok["label"] == "").all()


def test_segment_json_frames_and_embeddings(cold_run) -> None:
    out, _ = cold_run
    table = pd.read_parquet(out / "segments.parquet")
    emb = np.load(out / "embeddings.npy")
    index = pd.read_csv(out / "embeddings_index.csv")
    exported = table[table["embedding_row"].notna()]
    assert emb.dtype == np.float32 and emb.shape == (len(exported), 32)
    assert (exported["confidence"] >= 0.5).all()  # high_confidence policy
    assert list(index.columns) == ["segment_id", "row"] and len(index) == len(exported)
    for _, row in table[table["status"] == "ok"].iterrows():
        rdir = out / "recordings" / row["recording_id"]
        doc = json.loads((rdir / "segments" / f"{row['segment_id']}.json").read_text())
        assert {"segment_id", "recording_id", "speaker", "start", "end", "granularity", "emotion", "confidence",
                "scores", "frames", "model"} <= set(doc)
        assert list(doc["scores"]) == list(EMOTIONS)
        assert doc["emotion"] == row["label"] and doc["model"]["test_model"] is True
        if row["drilled"]:
            frames = np.load(rdir / doc["frames"]["file"])
            assert frames.dtype == np.float32 and frames.ndim == 2 and frames.shape[1] == 9
            assert abs(frames.shape[0] - row["duration"] * 50) <= 2
            np.testing.assert_allclose(frames.sum(axis=1), 1.0, atol=1e-4)
            assert "changes" in doc["drilldown"] and "peaks" in doc["drilldown"]
        else:
            assert doc["frames"] is None and not (rdir / "frames" / f"{row['segment_id']}.npy").exists()
        if pd.notna(row["embedding_row"]):
            vec = np.load(rdir / "embeddings" / f"{row['segment_id']}.npy")
            np.testing.assert_array_equal(vec, emb[int(row["embedding_row"])])


def test_rttm_and_denoised_audio(cold_run) -> None:
    from pyannote.database.util import load_rttm

    import soundfile as sf

    out, _ = cold_run
    for rid in ("dev00", "trn00"):
        rttm = load_rttm(out / "recordings" / rid / "diarization.rttm")
        assert list(rttm) == [rid] and len(rttm[rid].labels()) >= 1
        info = sf.info(out / "recordings" / rid / "denoised.wav")
        assert info.samplerate == 16000 and info.channels == 1 and abs(info.duration - 30) < 0.1


def test_manifest(cold_run) -> None:
    out, _ = cold_run
    m = _manifest(out)
    assert {"run_id", "started", "finished", "emoflow_version", "config", "config_sha256", "models", "inputs",
            "recordings"} <= set(m)
    assert m["models"]["emotion"]["is_test_model"] is True and len(m["models"]["emotion"]["sha256"]) == 64
    assert m["models"]["segmentation"]["source"] == "bundled"
    durations = {Path(i["path"]).name: i["duration"] for i in m["inputs"]}
    assert abs(durations["dev00.flac"] - 30.0) < 0.02 and abs(durations["trn00.mp3"] - 30.0) < 0.1
    failed = {rid for rid, rec in m["recordings"].items() if rec["failed"]}
    assert failed == {"broken", "empty"}
    assert all(m["recordings"][rid]["failed"]["stage"] == "load" for rid in failed)
    for rid, rec in m["recordings"].items():
        if rid in failed:
            continue
        assert [rec["stages"][s]["status"] for s in STAGES] == ["computed"] * 7
        if rid != "silence":
            assert rec["facts"]["denoise"]["snr_before_db"] is not None
    silence = m["recordings"]["silence"]["facts"]
    assert silence["load"]["silent"] is True
    assert silence["segment"]["segments"] == 0 and "no speech" in silence["segment"]["note"]
    assert (out / "config.yaml").is_file() and load_config(out / "config.yaml").screen.threshold == 0.5
    assert (out / "report.html").is_file()


def test_rerun_reuses_everything(cold_run, tiny_model_dir: Path) -> None:
    out, _ = cold_run
    before = pd.read_parquet(out / "segments.parquet")
    run_pipeline([str(Path(_manifest(out)["inputs"][0]["path"]).parent)], config=_cfg(tiny_model_dir), out_dir=out)
    m = _manifest(out)
    for rec in m["recordings"].values():
        if not rec["failed"]:
            assert {s["status"] for s in rec["stages"].values()} == {"reused"}
    pd.testing.assert_frame_equal(before, pd.read_parquet(out / "segments.parquet"))


def test_threshold_change_recomputes_only_screen_and_export(cold_run, tiny_model_dir: Path) -> None:
    out, _ = cold_run
    src = str(Path(_manifest(out)["inputs"][0]["path"]).parent)
    run_pipeline([src], config=_cfg(tiny_model_dir, "screen.threshold=0.6"), out_dir=out)
    m = _manifest(out)
    for rec in (r for r in m["recordings"].values() if not r["failed"]):
        status = {s: rec["stages"][s]["status"] for s in STAGES}
        assert status == {"load": "reused", "denoise": "reused", "diarize": "reused", "segment": "reused",
                          "emotion": "reused", "screen": "computed", "export": "computed"}
    table = pd.read_parquet(out / "segments.parquet")
    ok = table[table["status"] == "ok"]
    assert (ok["drilled"] == (ok["confidence"] < 0.6)).all()
    # Frames of segments no longer drilled are gone, new ones are there.
    for _, row in ok.iterrows():
        path = out / "recordings" / row["recording_id"] / "frames" / f"{row['segment_id']}.npy"
        assert path.exists() == bool(row["drilled"])


def test_segmentation_change_recomputes_from_segment(cold_run, tiny_model_dir: Path) -> None:
    out, _ = cold_run
    src = str(Path(_manifest(out)["inputs"][0]["path"]).parent)
    run_pipeline([src], config=_cfg(tiny_model_dir, "segmentation.max_s=6"), out_dir=out)
    m = _manifest(out)
    for rec in (r for r in m["recordings"].values() if not r["failed"]):
        assert [rec["stages"][s]["status"] for s in STAGES] == ["reused"] * 3 + ["computed"] * 4
    table = pd.read_parquet(out / "segments.parquet")
    assert (table.loc[table["status"] == "ok", "duration"] <= 6 + 1e-6).all()


def test_denoise_change_keeps_diarization(cold_run, tiny_model_dir: Path) -> None:
    out, _ = cold_run
    src = str(Path(_manifest(out)["inputs"][0]["path"]).parent)
    run_pipeline([src], config=_cfg(tiny_model_dir, "segmentation.max_s=6", "denoise.prop_decrease=0.5"), out_dir=out)
    m = _manifest(out)
    for rec in (r for r in m["recordings"].values() if not r["failed"]):
        status = {s: rec["stages"][s]["status"] for s in STAGES}
        assert status == {"load": "reused", "denoise": "computed", "diarize": "reused", "segment": "reused",
                          "emotion": "computed", "screen": "computed", "export": "computed"}


def test_killed_run_resumes_to_identical_results(prefect_harness, inputs: Path, tiny_model_dir: Path,
                                                 tmp_path: Path, cold_run) -> None:
    """kill -9 a process computing the stages, then the same run completes with the same table."""
    out = tmp_path / "killed"
    cfg = _cfg(tiny_model_dir)
    files = [str(inputs / "dev00.flac"), str(inputs / "trn00.mp3")]
    code = (
        "import sys; from flows.pipeline import prepare_run\n"
        "from tasks.pipeline.runner import run_stage\nfrom tasks.stages import REGISTRY\n"
        "from tasks.core.config import load_config\n"
        f"cfg = load_config({str(out / 'cfg.yaml')!r})\n"
        f"jobs, _ = prepare_run({files!r}, config=cfg, out_dir={str(out)!r})\n"
        "for job in jobs:\n"
        "    for s in REGISTRY.order(cfg):\n"
        "        run_stage(job, s); print(job.recording_id, s, flush=True)\n"
    )
    out.mkdir()
    from tasks.core.config import write_config

    write_config(cfg, out / "cfg.yaml")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    # Kill it while the second recording is in the middle of its stages.
    for line in proc.stdout:
        if line.startswith("trn00 diarize"):
            break
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_pipeline(files, config=cfg, out_dir=out)
    resumed = pd.read_parquet(out / "segments.parquet")
    m = _manifest(out)
    assert m["recordings"]["dev00"]["stages"]["export"]["status"] in ("reused", "computed")
    assert m["recordings"]["dev00"]["stages"]["emotion"]["status"] == "reused"
    # Same results as the uninterrupted cold run of the same config.
    cold = pd.read_parquet(cold_run[0].parent / "cold_segments.parquet")
    cols = [c for c in TABLE_COLUMNS if c not in ("source_path", "embedding_row")]
    pd.testing.assert_frame_equal(resumed[cols].reset_index(drop=True), cold[cols].reset_index(drop=True))
    assert not list((out / ".emoflow" / "artefacts").glob("*/*.tmp-*"))


def test_cli_exit_code_1_when_some_fail(prefect_harness, inputs: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    bad = tmp_path / "in"
    bad.mkdir()
    shutil.copy(inputs / "dev00.flac", bad / "a.flac")
    (bad / "b.wav").write_bytes(b"RIFF0000WAVEjunk")
    result = CliRunner().invoke(app, ["run", str(bad), "--out", str(tmp_path / "o"), "--set",
                                      f"emotion.model={tiny_model_dir}", "--set", "report.enabled=false"])
    assert result.exit_code == 1, result.output
    assert "b.wav" in result.output and "Traceback" not in result.output
