"""The transcribe stage in the pipeline: what was said, in every output, keyed on its own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from tasks.core.config import load_config
from tasks.pipeline import layout
from tasks.pipeline.runner import run_stages
from tasks.run.plan import prepare_run
from tasks.stages import REGISTRY


@pytest.fixture(scope="module")
def excerpt(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    audio, sr = sf.read(shared_data / "ami" / "trn00.flac", dtype="float32")
    path = tmp_path_factory.mktemp("in") / "meeting.wav"
    sf.write(path, audio[: 20 * sr], sr)
    return path


def _sets(tiny_model_dir: Path, *more: str) -> list[str]:
    return [f"emotion.model={tiny_model_dir}", "denoise.enabled=false", *more]


def test_keys_transcribe_recomputes_only_itself_and_export() -> None:
    base = REGISTRY.compute_keys(sha256="s", config=load_config(None, []), models={})
    for setting in ("transcribe.language=en", "transcribe.itn=false", "transcribe.enabled=false"):
        other = REGISTRY.compute_keys(sha256="s", config=load_config(None, [setting]), models={})
        assert {s for s in base if base[s] != other[s]} == {"transcribe", "export"}, setting
    other = REGISTRY.compute_keys(sha256="s", config=load_config(None, ["screen.threshold=0.3"]), models={})
    assert other["transcribe"] == base["transcribe"]
    # it hears what the emotion model hears
    assert REGISTRY["transcribe"].inputs(load_config(None, []))["audio"] == "denoise"
    assert REGISTRY["transcribe"].inputs(load_config(None, ["emotion.audio=original"]))["audio"] == "load"


def test_every_row_gets_text_and_every_word_lies_in_its_row(tmp_path: Path, excerpt: Path,
                                                            tiny_model_dir: Path, tiny_sensevoice_dir: Path) -> None:
    from tasks.transcription.sensevoice import load_sensevoice, transcribe_clips

    cfg = load_config(None, _sets(tiny_model_dir))
    jobs, _ = prepare_run([str(excerpt)], config=cfg, out_dir=tmp_path)
    reports = run_stages(jobs[0])
    assert reports["transcribe"].status == "computed" and reports["transcribe"].facts["is_test_model"]
    segments = layout.read_segments(jobs[0].artefact("segment"), recording_id="meeting")
    said = layout.read_transcripts(jobs[0].artefact("transcribe"))
    assert set(said) == {i for i, s in enumerate(segments) if s.duration * 16000 >= 400}
    assert {s.status for s in segments} >= {"ok"}
    for i, record in said.items():
        for _, start, end in record["words"]:
            assert segments[i].start - 1e-3 <= start <= end <= segments[i].end + 1e-3
    # the stage's text is the engine's on the same clip (cut from the audio the emotion model hears)
    audio = layout.read_audio(jobs[0].artefact("load"))
    first = min(said)
    model = load_sensevoice(tiny_sensevoice_dir, device="cpu")
    (direct,) = transcribe_clips(model, [segments[first].cut(audio)], language="auto", itn=True)
    assert said[first]["text"] == direct.text and said[first]["language"] == direct.language

    folder = tmp_path / "recordings" / "meeting"
    table = pd.read_csv(folder / "segments.csv", dtype=str, keep_default_na=False)
    assert len(table) == len(segments)
    assert {"text", "language", "events", "sv_emotion", "emotion_agree"} <= set(table.columns)
    for pos, row in table.iterrows():
        assert row["text"] == said.get(pos, {}).get("text", "")
        assert row["events"] == ";".join(said.get(pos, {}).get("events", []))
    doc = json.loads((folder / "transcript.json").read_text())
    assert doc["model"]["test_model"] and "TEST" in doc["warning"]
    assert len(doc["segments"]) == len(segments)
    assert sum(len(r["words"]) for r in said.values()) == len(doc["words"]) == reports["export"].facts[
        "transcript_words"]
    for w in doc["words"]:
        seg = next(s for s in doc["segments"] if s["segment_id"] == w["segment_id"])
        assert seg["start"] - 1e-3 <= w["start"] <= w["end"] <= seg["end"] + 1e-3
        assert w["speaker"] == seg["speaker"] and w["emotion"] == seg["emotion"]
    ok = next(s for s in segments if s.status == "ok")
    seg_doc = json.loads((folder / "segments" / f"{ok.segment_id}.json").read_text())
    assert {"text", "words", "events"} <= set(seg_doc)
    srt = (folder / "transcript.srt").read_text()
    vtt = (folder / "transcript.vtt").read_text()
    assert vtt.startswith("WEBVTT")
    cues = [s for s in doc["segments"] if s["text"] or s["events"]]
    assert srt.count(" --> ") == vtt.count(" --> ") == len(cues)


def test_emotion_agree_compares_only_the_shared_classes() -> None:
    from tasks.output.export import emotion_agree

    assert emotion_agree("happy", "happy") is True
    assert emotion_agree("sad", "angry") is False
    assert emotion_agree("surprised", "surprised") is None  # not a SenseVoice/emotion2vec shared class
    assert emotion_agree(None, "happy") is None and emotion_agree("happy", None) is None


def test_transcription_off_leaves_empty_text_and_no_model(tmp_path: Path, excerpt: Path,
                                                          tiny_model_dir: Path) -> None:
    from tasks.models.vetting import resolve_models

    cfg = load_config(None, _sets(tiny_model_dir, "transcribe.enabled=false", "transcribe.model=/nowhere"))
    assert "transcribe" not in resolve_models(cfg)  # nothing resolved, nothing downloaded
    jobs, _ = prepare_run([str(excerpt)], config=cfg, out_dir=tmp_path)
    reports = run_stages(jobs[0])
    assert reports["transcribe"].facts == {"enabled": False, "segments": 0}
    folder = tmp_path / "recordings" / "meeting"
    table = pd.read_csv(folder / "segments.csv", dtype=str, keep_default_na=False)
    assert (table["text"] == "").all() and (table["language"] == "").all()
    assert not (folder / "transcript.json").exists()


def test_a_missing_transcription_model_names_the_fix(tmp_path: Path, tiny_model_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.core.errors import RunError
    from tasks.models.vetting import resolve_models

    monkeypatch.setenv("EMOFLOW_MODEL_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("EMOFLOW_OFFLINE", "1")
    cfg = load_config(None, [f"emotion.model={tiny_model_dir}"])
    with pytest.raises(RunError) as err:
        resolve_models(cfg)
    message = str(err.value)
    assert "\n" not in message and "iic/SenseVoiceSmall" in message
    assert "--set transcribe.model=" in message and "--set transcribe.enabled=false" in message


def test_run_tables_and_report_show_what_was_said(prefect_harness, tmp_path: Path, excerpt: Path,
                                                  tiny_model_dir: Path) -> None:
    from flows.pipeline import run_pipeline

    summary = run_pipeline([str(excerpt)], config=load_config(None, _sets(tiny_model_dir)), out_dir=tmp_path)
    assert not summary.failed
    table = pd.read_parquet(tmp_path / "segments.parquet")
    assert table["text"].map(lambda v: isinstance(v, str)).all()
    assert str(table["emotion_agree"].dtype) == "boolean"
    words = pd.read_csv(tmp_path / "transcripts.csv", dtype=str, keep_default_na=False)
    doc = json.loads((tmp_path / "recordings" / "meeting" / "transcript.json").read_text())
    assert len(words) == len(doc["words"])
    assert list(words.columns) == ["recording_id", "segment_id", "speaker", "start", "end", "word", "emotion",
                                   "sv_emotion"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["models"]["transcribe"]["is_test_model"] and manifest["models"]["transcribe"]["sha256"]
    report = (tmp_path / "report.html").read_text()
    assert 'id="test-transcribe-banner"' in report and "<h3>Transcript</h3>" in report
    spoken = [t for t in table["text"] if t]
    if spoken:
        import html

        assert html.escape(spoken[0][:40]) in report
    # a threshold rerun never transcribes again
    run_pipeline([str(excerpt)], config=load_config(None, _sets(tiny_model_dir, "screen.threshold=0.3")),
                 out_dir=tmp_path)
    stages = json.loads((tmp_path / "manifest.json").read_text())["recordings"]["meeting"]["stages"]
    assert stages["transcribe"]["status"] == "reused" and stages["screen"]["status"] == "computed"
    assert np.isfinite(pd.read_parquet(tmp_path / "segments.parquet")["start"]).all()
