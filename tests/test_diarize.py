"""Diarization stage with the real (bundled) weights: segmentation-3.0 + CAM++."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import soundfile as sf
import torch
from pyannote.core import Annotation, Segment

from tasks.diarization import pipeline as D
from tasks.diarization import rttm
from tasks.core.config import DiarizationConfig, load_config
from tasks.core.records import Turn

SR = 16000


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One CPU thread: on a shared 2-core machine more threads oversubscribe and crawl."""
    with D.torch_threads(1):
        yield


@pytest.fixture(scope="module")
def cfg() -> DiarizationConfig:
    return DiarizationConfig(device="cpu", threads=1)


@pytest.fixture(scope="module")
def ami(shared_data):
    audio, sr = sf.read(shared_data / "ami" / "dev00.flac", dtype="float32")
    assert sr == SR
    ref = rttm.read_rttm(shared_data / "ami" / "debug.development.rttm")["dev00"]
    return audio, ref


def _speaker_utterances(shared_data, speaker: str) -> list[np.ndarray]:
    lib = shared_data / "librispeech" / "test-other"
    with open(lib / "speakers.csv", newline="") as fh:
        files = [lib / r["file"] for r in csv.DictReader(fh) if r["speaker_id"] == speaker]
    return [sf.read(f, dtype="float32")[0] for f in sorted(files)]


# --------------------------------------------------------------------------- real audio
def test_ami_file_gives_plausible_labels_and_parseable_rttm(ami, cfg, tmp_path):
    from pyannote.metrics.diarization import DiarizationErrorRate

    audio, ref = ami
    result = D.diarize(audio, recording_id="dev00", config=cfg)
    labels = result.annotation.labels()
    assert 2 <= len(labels) <= 6, labels
    assert all(lab.startswith("SPEAKER_") for lab in labels)
    assert set(result.exclusive.labels()) <= set(labels)
    assert not result.exclusive.get_overlap(), "exclusive diarization must not overlap"
    # the overlap regions stay in the full annotation, nothing disappears unexplained
    speech = result.annotation.get_timeline().support().duration()
    exclusive_speech = result.exclusive.get_timeline().support().duration()
    assert exclusive_speech == pytest.approx(speech, abs=0.5)

    turns = result.turns()
    assert turns and all(isinstance(t, Turn) and t.end > t.start for t in turns)
    assert [t.start for t in turns] == sorted(t.start for t in turns)
    for a, b in result.overlaps():
        assert 0 <= a < b <= 30.1

    der = DiarizationErrorRate(collar=0.0, skip_overlap=False)(ref, result.annotation)
    # 12 % measured (33.9 % before resegmentation gave the second voice back)
    assert der < 0.2, f"DER {der:.2f} on dev00"

    path = rttm.write_rttm(result.annotation, tmp_path / "rec" / "diarization.rttm", uri="dev00")
    back = rttm.read_rttm(path)
    assert list(back) == ["dev00"]
    assert set(back["dev00"].labels()) == set(labels)
    assert back["dev00"].get_timeline().duration() == pytest.approx(
        result.annotation.get_timeline().duration(), abs=0.01 * len(turns) + 0.01
    )


def test_benchmarks_score_exactly_what_diarize_returns(ami, cfg):
    """The pipeline's own output (what benchmarks/ score) is settled and cropped already."""
    audio, _ = ami
    result = D.diarize(audio, recording_id="dev00", config=cfg)
    pipeline = D.load_diarization_pipeline(cfg)
    with D.torch_threads(1), torch.inference_mode():
        out = pipeline({"waveform": torch.from_numpy(audio)[None], "sample_rate": SR, "uri": "dev00"})
    assert out.speaker_diarization == result.annotation
    assert out.exclusive_speaker_diarization == result.exclusive
    assert not out.exclusive_speaker_diarization.get_overlap()
    assert out.speaker_diarization.get_timeline().extent().end <= len(audio) / SR


def test_refinement_settings_reach_the_pipeline():
    on = DiarizationConfig(device="cpu")
    off = on.model_copy(update={"speech_detector": "none"})
    assert D.load_diarization_pipeline(on).refine == D.refine_settings(on)
    assert D.load_diarization_pipeline(off).refine["detector"] == "none"
    assert D.load_diarization_pipeline(on) is not D.load_diarization_pipeline(off)


def test_models_are_cached_per_process(cfg):
    assert D.load_diarization_pipeline(cfg) is D.load_diarization_pipeline(cfg)
    assert D.load_segmentation_model(device="cpu") is D.load_segmentation_model(device="cpu")


def test_silence_gives_empty_annotation(cfg, rng, tmp_path):
    for audio in (np.zeros(10 * SR, dtype=np.float32), (1e-4 * rng.standard_normal(12 * SR)).astype(np.float32)):
        result = D.diarize(audio, recording_id="quiet", config=cfg)
        assert len(result.annotation) == 0 and len(result.exclusive) == 0
        assert result.turns() == [] and result.overlaps() == []
        path = rttm.write_rttm(result.annotation, tmp_path / "quiet.rttm", uri="quiet")
        assert path.read_text() == "" and rttm.read_rttm(path) == {}


def test_one_librispeech_speaker_gives_one_label(shared_data, cfg):
    utts = [u[: 8 * SR] for u in _speaker_utterances(shared_data, "1688")[:3]]
    gap = np.zeros(int(0.7 * SR), dtype=np.float32)
    audio = np.concatenate([x for u in utts for x in (u, gap)])
    result = D.diarize(audio, recording_id="one", config=cfg)
    assert len(result.annotation.labels()) == 1, result.annotation.chart()
    speech = result.annotation.get_timeline().support().duration()
    assert speech > 0.6 * len(audio) / SR


def test_num_speakers_option_is_honoured(ami, cfg):
    audio, _ = ami
    result = D.diarize(audio, recording_id="dev00", config=cfg.model_copy(update={"num_speakers": 2}))
    assert len(result.annotation.labels()) == 2


# --------------------------------------------------------------------------- embedding adapter
def test_embedding_adapter_honours_masks(shared_data):
    emb = D.load_embedding_model(device="cpu")
    a = _speaker_utterances(shared_data, "1688")[0]
    b = _speaker_utterances(shared_data, "2033")[0]
    n = 10 * SR
    a = np.resize(a, n)
    num_frames = 589  # segmentation-3.0 frames per 10 s chunk
    mask = torch.zeros(num_frames)
    mask[: int(0.6 * num_frames)] = 1.0
    cut = int(0.65 * n)  # beyond the mask's last sample
    other = a.copy()
    other[cut:] = np.resize(b, n - cut)  # another speaker where the mask is off
    waves = torch.from_numpy(np.stack([a, other]))[:, None]
    masked = emb(waves, masks=torch.stack([mask, mask]))
    assert masked.shape == (2, 192) and np.isfinite(masked).all()
    np.testing.assert_allclose(masked[0], masked[1], atol=1e-4)
    unmasked = emb(waves)
    cos = unmasked[0] @ unmasked[1] / np.linalg.norm(unmasked[0]) / np.linalg.norm(unmasked[1])
    assert cos < 0.999, "without the mask the other speaker must change the embedding"
    # an (almost) empty mask gives NaN, which pyannote's clustering skips
    tiny = torch.zeros(num_frames)
    tiny[:3] = 1
    assert np.isnan(emb(waves[:1], masks=tiny[None])).all()


def test_embedding_batching_matches_one_at_a_time(shared_data):
    emb = D.load_embedding_model(device="cpu")
    a = np.resize(_speaker_utterances(shared_data, "1688")[1], 10 * SR)
    waves = torch.from_numpy(np.stack([a, a, a]))[:, None]
    masks = torch.ones(3, 589)
    masks[1, 500:] = 0  # slightly shorter: same batch group, padded by repetition
    masks[2, :300] = 0  # much shorter: own group
    batched = emb(waves, masks=masks)
    single = np.vstack([emb(waves[i : i + 1], masks=masks[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(batched[0], single[0], atol=1e-4)
    np.testing.assert_allclose(batched[2], single[2], atol=1e-4)
    cos = batched[1] @ single[1] / np.linalg.norm(batched[1]) / np.linalg.norm(single[1])
    assert cos > 0.98


def test_clustering_caps_embeddings_for_long_recordings(cfg):
    from pyannote.core import SlidingWindow, SlidingWindowFeature

    clustering = D.load_diarization_pipeline(cfg).clustering
    n = clustering.max_embeddings + 500
    emb = np.random.default_rng(0).standard_normal((n, 1, 8))
    segs = SlidingWindowFeature(np.ones((n, 10, 1)), SlidingWindow(duration=10, step=1))
    train, chunk_idx, _ = clustering.filter_embeddings(emb, segmentations=segs)
    assert len(train) == clustering.max_embeddings and chunk_idx[0] == 0 and chunk_idx[-1] == n - 1


# --------------------------------------------------------------------------- hub option
def test_hub_pipeline_without_token_or_network_is_a_one_line_error(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("EMOFLOW_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for ref in ("pyannote/speaker-diarization-community-1", "./no/such/pipeline_dir"):
        config = DiarizationConfig(pipeline=ref, device="cpu")
        with pytest.raises(D.DiarizationPipelineError) as info:
            D.load_diarization_pipeline(config)
        msg = str(info.value)
        assert "\n" not in msg and ref in msg
        assert "--set diarization.pipeline=offline" in msg


def test_hub_pipeline_error_when_hub_refuses(monkeypatch):
    """Network reachable but no access (no token): still one line, says how to switch back."""
    from pyannote.audio import Pipeline

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(D, "hub_unreachable_reason", lambda hub: None)

    def refuse(*args, **kwargs):
        raise RuntimeError("401 Client Error: Unauthorized\nmore details")

    monkeypatch.setattr(Pipeline, "from_pretrained", refuse)
    with pytest.raises(D.DiarizationPipelineError) as info:
        D.load_diarization_pipeline(DiarizationConfig(pipeline="pyannote/speaker-diarization-community-1", device="cpu"))
    msg = str(info.value)
    assert "\n" not in msg and "HF_TOKEN" in msg and "--set diarization.pipeline=offline" in msg


def test_pipeline_setting_via_override():
    cfg = load_config(overrides=["diarization.pipeline=pyannote/speaker-diarization-community-1"])
    assert cfg.diarization.pipeline == "pyannote/speaker-diarization-community-1"
    assert load_config().diarization.pipeline == "offline"


# --------------------------------------------------------------------------- results & RTTM
def _toy() -> D.DiarizationResult:
    full = Annotation(uri="toy")
    full[Segment(0.0, 4.0), "a"] = "SPEAKER_00"
    full[Segment(3.0, 6.0), "b"] = "SPEAKER_01"
    full[Segment(7.0, 9.0), "c"] = "SPEAKER_00"
    excl = Annotation(uri="toy")
    excl[Segment(0.0, 3.5)] = "SPEAKER_00"
    excl[Segment(3.5, 6.0)] = "SPEAKER_01"
    excl[Segment(7.0, 9.0)] = "SPEAKER_00"
    return D.DiarizationResult(full, excl, exclude_overlap=True)


def test_turns_and_overlaps():
    res = _toy()
    assert res.overlaps() == [(3.0, 4.0)]
    assert res.turns() == [Turn("SPEAKER_00", 0.0, 3.5), Turn("SPEAKER_01", 3.5, 6.0), Turn("SPEAKER_00", 7.0, 9.0)]
    full = D.DiarizationResult(res.annotation, res.exclusive, exclude_overlap=False)
    assert full.turns()[1] == Turn("SPEAKER_01", 3.0, 6.0)


def test_rttm_roundtrip(tmp_path):
    res = _toy()
    path = rttm.write_rttm(res.annotation, tmp_path / "x.rttm", uri="rec-1")
    lines = path.read_text().splitlines()
    assert lines[0] == "SPEAKER rec-1 1 0.000 4.000 <NA> <NA> SPEAKER_00 <NA> <NA>"
    back = rttm.read_rttm(path)["rec-1"]
    assert back.get_overlap().duration() == pytest.approx(1.0)
    assert sorted(back.labels()) == ["SPEAKER_00", "SPEAKER_01"]
    with pytest.raises(ValueError):
        rttm.write_rttm(res.annotation, tmp_path / "y.rttm", uri="has space")


def test_exclusive_fallback_for_pipelines_returning_only_annotation():
    excl = D._exclusive_of(_toy().annotation)
    assert not excl.get_overlap()
    assert excl.get_timeline().support().duration() == pytest.approx(8.0)
