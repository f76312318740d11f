"""The web UI's analysis path and input checks (without a browser)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flows.ui import (
    MAX_UPLOAD_BYTES,
    REJECT_OVERSIZE_JS,
    Analyser,
    UIInputError,
    build_ui,
    check_upload,
    example_audio_path,
    rejected_upload_message,
)
from tasks.audio.decode import AudioError
from tasks.core.config import Config
from tasks.core.records import EMOTIONS
from tests.fakes import FakeEmotionModel


@pytest.fixture(scope="module")
def analyser() -> Analyser:
    return Analyser(Config(), model=FakeEmotionModel())


@pytest.fixture(scope="module")
def example() -> Path:
    p = example_audio_path()
    if p is None:
        pytest.skip("no example audio (data/ or ../shared/data/ami)")
    return p


def test_example_audio_is_small_audio(example):
    assert example.suffix.lower() in (".wav", ".flac", ".mp3", ".m4a", ".ogg")
    assert example.stat().st_size <= MAX_UPLOAD_BYTES


def test_check_upload_messages(tmp_path):
    big = tmp_path / "big.wav"
    big.write_bytes(b"\0" * (12 * 1024 * 1024))
    with pytest.raises(UIInputError, match=r"big.wav is 12.0 MB: the limit is 10 MB"):
        check_upload(big)
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with pytest.raises(UIInputError, match="not a supported audio file"):
        check_upload(txt)
    with pytest.raises(UIInputError, match="No file"):
        check_upload(None)


def test_page_refusal_gives_the_same_one_line_message():
    """The page refuses a file over the limit before sending it; its handler shows check_upload's message."""
    payload = json.dumps({"name": "C:\\fakepath/twelve_mb.wav", "size": 12 * 1024 * 1024, "at": 1})
    assert rejected_upload_message(payload) == ("twelve_mb.wav is 12.0 MB: the limit is 10 MB. Cut it shorter, "
                                                "or use `emoflow run` for long recordings.")
    assert rejected_upload_message("") is None and rejected_upload_message('{"name": "a.wav"}') is None
    assert f"const limit = {MAX_UPLOAD_BYTES};" in REJECT_OVERSIZE_JS


def test_server_refuses_uploads_over_the_limit_at_the_door(tmp_path, monkeypatch):
    """The server's own limit is the UI's 10 MB: a 12 MB POST is refused with 413 and nothing is kept."""
    import socket

    import httpx

    from flows.ui import launch_ui

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo = launch_ui(host="127.0.0.1", port=port, config=Config(), block=False, model=FakeEmotionModel())
    url = f"http://127.0.0.1:{port}"
    try:
        upload_dir = Path(demo.server_app.uploaded_file_dir)
        assert upload_dir == tmp_path / "gradio"
        assert httpx.get(f"{url}/config", timeout=30).json()["max_file_size"] == MAX_UPLOAD_BYTES
        big = b"RIFF" + bytes(12 * 1024 * 1024)
        r = httpx.post(f"{url}/gradio_api/upload", files={"files": ("twelve_mb.wav", big, "audio/wav")}, timeout=60)
        assert r.status_code == 413 and "maximum allowed size" in r.text
        assert not [f for f in upload_dir.rglob("*") if f.is_file()]  # nothing of it was kept
        small = b"RIFF" + bytes(MAX_UPLOAD_BYTES - 4)  # exactly the limit is accepted
        r = httpx.post(f"{url}/gradio_api/upload", files={"files": ("ten_mb.wav", small, "audio/wav")}, timeout=60)
        assert r.status_code == 200 and len(r.json()) == 1 and r.json()[0].endswith("ten_mb.wav")
    finally:
        demo.close()


def test_random_bytes_are_not_audio(analyser, tmp_path, rng):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(rng.integers(0, 256, size=50_000, dtype=np.uint8).tobytes())
    with pytest.raises(AudioError, match="not an audio file|corrupt"):
        analyser.analyse(junk)


def test_utterance_result_follows_the_segment_json_format(analyser, example):
    a = analyser.analyse(example, granularity="utterance", embedding=True)
    assert len(a.segments) == 1 and a.frames == []
    doc = a.segments[0]
    assert set(doc) >= {"segment_id", "recording_id", "speaker", "start", "end", "granularity", "emotion",
                        "confidence", "scores", "frames", "model"}
    assert list(doc["scores"]) == list(EMOTIONS)
    assert doc["emotion"] == max(doc["scores"], key=doc["scores"].get)
    assert doc["confidence"] == pytest.approx(doc["scores"][doc["emotion"]])
    assert doc["end"] == pytest.approx(a.duration, abs=0.01) and doc["granularity"] == "utterance"
    assert a.embeddings.shape == (1, FakeEmotionModel.embed_dim)
    json.dumps(doc)


def test_frame_mode_has_frame_scores(analyser, example):
    a = analyser.analyse(example, granularity="frame")
    fr = a.frames[0]
    assert fr.ndim == 2 and fr.shape[1] == 9 and fr.shape[0] == pytest.approx(a.duration / 0.02, rel=0.05)
    doc = a.segments[0]
    assert doc["granularity"] == "frame" and doc["frames"]["hop_s"] == 0.02
    assert len(doc["frames"]["scores"]) == fr.shape[0]
    assert a.embeddings is None


def test_build_ui_blocks(example):
    import gradio as gr

    demo = build_ui(Config(), model=FakeEmotionModel())
    assert isinstance(demo, gr.Blocks)
    cfg = demo.get_config_file()
    ids = {c.get("props", {}).get("elem_id") for c in cfg["components"]}
    assert {"audio-input", "granularity", "extract-embedding", "example-button", "analyse-button", "message",
            "top-emotion-panel", "scores-chart", "frame-chart", "result-json", "embedding-npy",
            "denoise", "diarize"} <= ids
    assert "TEST MODEL (random weights)" in json.dumps(cfg)


def test_diarize_option_scores_each_speaker_segment(analyser, shared_data, monkeypatch):
    """Diarization → the flow's stages → one result per ok segment (diarizer stubbed by the AMI reference)."""
    import tasks.diarization.pipeline
    import tasks.emotion.model
    from pyannote.database.util import load_rttm

    from tasks.diarization.pipeline import DiarizationResult

    example = shared_data / "ami" / "dev00.flac"
    ref = load_rttm(str(shared_data / "ami" / "debug.development.rttm"))["dev00"]

    def fake_diarize(audio, *, recording_id, config, sample_rate=16000, progress=None):
        ref.uri = recording_id
        return DiarizationResult(ref, ref.copy(), False)

    monkeypatch.setattr(tasks.diarization.pipeline, "diarize", fake_diarize)
    monkeypatch.setattr(tasks.emotion.model, "get_emotion_model", lambda config, max_s=10.0: analyser.model)
    a = analyser.analyse(example, granularity="utterance", embedding=True, diarize=True)
    speakers = {d["speaker"] for d in a.segments}
    assert speakers <= set(ref.labels()) and len(speakers) >= 2
    assert len(a.segments) >= 3 and a.embeddings.shape[0] == len(a.segments)
    for d in a.segments:
        assert 1.5 - 1e-6 <= d["end"] - d["start"] <= 10.0 + 1e-6
    assert {s["status"] for s in a.skipped} <= {"too_short", "overlap"}
    framed = analyser.analyse(example, granularity="frame", diarize=True)  # reuses every stage
    assert [d["segment_id"] for d in framed.segments] == [d["segment_id"] for d in a.segments]
    assert all(d["granularity"] == "frame" and len(d["frames"]["scores"]) == len(f)
               for d, f in zip(framed.segments, framed.frames))


def test_ui_diarizes_the_flows_audio_and_writes_the_flows_segment_json(shared_data, tiny_model_dir, tmp_path,
                                                                       monkeypatch):
    """Denoising on, ``diarization.audio: original`` (the default): the UI and the flow both
    diarize the original audio, and the UI shows exactly the flow's segment JSON documents."""
    import soundfile as sf

    import tasks.diarization.pipeline
    from flows.pipeline import prepare_run
    from tasks.pipeline.runner import run_stage
    from tasks.audio.decode import load_audio
    from tasks.core.config import load_config
    from tasks.stages import REGISTRY

    audio, sr = sf.read(shared_data / "ami" / "trn00.flac", dtype="float32")
    path = tmp_path / "call.wav"
    sf.write(path, audio[: 20 * sr], sr)
    heard = []
    real = tasks.diarization.pipeline.diarize

    def spy(audio, **kwargs):  # type: ignore[no-untyped-def]
        heard.append(np.array(audio, copy=True))
        return real(audio, **kwargs)

    monkeypatch.setattr(tasks.diarization.pipeline, "diarize", spy)
    cfg = load_config(None, [f"emotion.model={tiny_model_dir}", "denoise.enabled=true", "screen.threshold=0.6"])
    ui = Analyser(cfg, workdir=tmp_path / "ui")
    shown = ui.analyse(path, granularity="utterance", denoise=True, diarize=True)

    jobs, _run = prepare_run([str(path)], config=cfg, out_dir=tmp_path / "run")
    for stage in REGISTRY.order(cfg):
        run_stage(jobs[0], stage)
    folder = tmp_path / "run" / "recordings" / "call"
    flow_docs = {p.stem: json.loads(p.read_text()) for p in (folder / "segments").glob("*.json")}

    assert len(heard) == 2  # one diarization each (the UI's own folder, the flow's run folder)
    original = load_audio(path)[0]
    np.testing.assert_array_equal(heard[0], original)
    np.testing.assert_array_equal(heard[1], original)
    assert shown.segments and {d["segment_id"]: d for d in shown.segments} == flow_docs
    assert any(d["drilled"] for d in shown.segments) or all(d["confidence"] >= 0.6 for d in shown.segments)


def test_long_file_is_windowed_and_combined(analyser, shared_data, tmp_path):
    """A 70 s file: three windows whose frame logits are concatenated (utterance = mean frame logit)."""
    import soundfile as sf

    from tasks.audio.decode import load_audio
    from tasks.emotion.model import _softmax_rows, analyse_whole

    audio = np.concatenate([load_audio(shared_data / "ami" / f)[0] for f in ("dev00.flac", "dev01.flac", "trn00.flac")])
    audio = audio[: 70 * 16000]
    path = tmp_path / "long.wav"
    sf.write(path, audio, 16000, subtype="PCM_16")
    a = analyser.analyse(path, granularity="frame", embedding=True)
    assert len(a.segments) == 1 and a.segments[0]["end"] == pytest.approx(70.0, abs=0.01)
    fr = a.frames[0]
    assert fr.shape[0] == pytest.approx(70 / 0.02, rel=0.01)
    whole = analyse_whole(analyser.model, np.asarray(load_audio(path)[0]), max_clip_s=30.0)
    assert whole.frame_logits.shape[0] == pytest.approx(70 / 0.02, rel=0.01)
    np.testing.assert_allclose(whole.scores, _softmax_rows(whole.frame_logits.astype(np.float64).mean(0)), rtol=1e-5)
    assert a.segments[0]["scores"]["happy"] == pytest.approx(float(whole.scores[3]), abs=1e-6)


def test_non_utf8_names_are_analysed_and_shown_escaped(tmp_path, monkeypatch):
    """A file whose name (or folder) is not valid UTF-8: analysed whole and diarized, every message,
    file name and document the page gets is valid UTF-8 (undecodable bytes as \\xNN)."""
    import os

    import orjson
    import soundfile as sf
    from pyannote.core import Annotation, Segment

    import flows.ui
    import tasks.diarization.pipeline
    import tasks.emotion.model
    from tasks.diarization.pipeline import DiarizationResult

    folder = os.fsencode(tmp_path) + b"/in\xfd"
    try:
        os.mkdir(folder)
        raw = folder + b"/caf\xe9 \xff.wav"
        t = np.arange(3 * 16000) / 16000
        with open(raw, "wb") as fh:
            sf.write(fh, (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32),
                     16000, format="WAV")
    except OSError:
        pytest.skip("the file system refuses non-UTF-8 names")
    junk = folder + b"/junk\xfe.wav"
    with open(junk, "wb") as fh:
        fh.write(b"not audio at all")
    path, junk_path = os.fsdecode(raw), os.fsdecode(junk)

    def fake_diarize(audio, *, recording_id, config, sample_rate=16000, progress=None):
        ann = Annotation(uri=recording_id)
        ann[Segment(0.1, 2.9)] = "A"
        return DiarizationResult(ann, ann.copy(), False)

    model = FakeEmotionModel()
    monkeypatch.setattr(tasks.diarization.pipeline, "diarize", fake_diarize)
    monkeypatch.setattr(tasks.emotion.model, "get_emotion_model", lambda config, max_s=10.0: model)
    cfg = Config.model_validate({"transcribe": {"enabled": False}})
    ui = Analyser(cfg, model=model, workdir=tmp_path / "ui")
    whole = ui.analyse(path, embedding=True)
    diarized = ui.analyse(path, diarize=True)
    for a in (whole, diarized):
        assert [d["recording_id"] for d in a.segments] == ["caf"]
        orjson.dumps(a.segments)  # what Gradio sends: raises on a lone surrogate
    assert diarized.segments[0]["speaker"] == "A"

    demo = build_ui(cfg, model=model)
    handlers = {getattr(b.fn, "__name__", ""): b.fn for b in demo.fns.values()}
    message, _ = handlers["on_upload"](path)
    assert "caf\\xe9 \\xff.wav" in message and str(tmp_path) not in message
    monkeypatch.setattr(flows.ui, "example_audio_path", lambda: Path(path))
    copy, message = handlers["load_example"]()
    assert Path(copy).name == "caf\\xe9 \\xff.wav" and "caf\\xe9 \\xff.wav" in message
    for p, needle in ((copy, "done: 1 segment"), (path, "done: 1 segment"), (junk_path, "junk\\xfe.wav: not an audio")):
        shown = handlers["run"](p, "frame", True, False, True, "")
        assert needle in shown[0] and str(tmp_path) not in shown[0], shown[0]
        orjson.dumps([o for o in shown if isinstance(o, str)])
