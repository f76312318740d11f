"""The emotion engine against funasr's own AutoModel, on a tiny random emotion2vec."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.core.config import EmotionConfig
from tasks.emotion.model import (
    CheckpointError,
    EmotionModel,
    SegmentEmotion,
    SegmentTooLongError,
    SegmentTooShortError,
    get_emotion_model,
    label_columns,
    load_emotion_model,
    resample_logits,
    smooth_logits,
)
from tasks.models.hub import resolve
from tasks.core.records import EMOTIONS


def _load(model_dir: Path, **kw) -> EmotionModel:
    cfg = EmotionConfig(model=str(model_dir), device="cpu", **kw)
    return load_emotion_model(cfg, resolved=resolve(str(model_dir)))


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> EmotionModel:
    return _load(tiny_model_dir)


@pytest.fixture(scope="module")
def funasr_model(tiny_model_dir: Path):
    from funasr import AutoModel

    threads = torch.get_num_threads()
    am = AutoModel(model=str(tiny_model_dir), disable_update=True, device="cpu", log_level="ERROR",
                   disable_log=True, disable_pbar=True)
    torch.set_num_threads(threads)  # funasr sets its own ncpu=4
    return am


@pytest.fixture(scope="module")
def clips20() -> list[np.ndarray]:
    """20 clips of random lengths 0.5-10 s (noise with varying loudness and offset)."""
    rng = np.random.default_rng(3)
    out = []
    for _ in range(20):
        n = int(rng.uniform(0.5, 10.0) * 16000)
        x = rng.standard_normal(n).astype(np.float32) * rng.uniform(0.01, 0.5) + rng.uniform(-0.05, 0.05)
        out.append(x.astype(np.float32))
    return out


def test_batched_engine_matches_funasr_reference(engine, funasr_model, clips20):
    """Batched utterance scores, embeddings and frame features == funasr one clip at a time."""
    res = engine.analyse(clips20, batch_seconds=60.0, keep_features=True)
    assert engine.is_test_model
    for clip, r in zip(clips20, res):
        utt = funasr_model.generate(clip, granularity="utterance", disable_pbar=True)[0]
        frm = funasr_model.generate(clip, granularity="frame", disable_pbar=True)[0]
        labels = [lab.split("/")[-1].replace("<unk>", "unknown") for lab in utt["labels"]]
        cols = [EMOTIONS.index(lab) for lab in labels]
        np.testing.assert_allclose(r.scores[cols], np.asarray(utt["scores"]), atol=1e-4, rtol=0)
        np.testing.assert_allclose(r.embedding, utt["feats"], atol=1e-4, rtol=0)
        assert r.features.shape == frm["feats"].shape
        np.testing.assert_allclose(r.features, frm["feats"], atol=1e-3, rtol=0)
        # frame logits: same classifier on every frame; their mean is the utterance logit
        assert r.frame_logits.shape == (frm["feats"].shape[0], len(EMOTIONS))
        assert r.scores.dtype == np.float32 and abs(float(r.scores.sum()) - 1) < 1e-5
        assert r.embedding.shape == (engine.embed_dim,)
        W = funasr_model.model.proj.weight.detach().numpy()
        b = funasr_model.model.proj.bias.detach().numpy()
        np.testing.assert_allclose(r.frame_logits[:, cols], frm["feats"] @ W.T + b, atol=1e-3, rtol=0)


def test_batched_equals_single(engine, clips20):
    batched = engine.analyse(clips20, batch_seconds=60.0, keep_features=True)
    single = engine.analyse(clips20, batch_seconds=0.0, keep_features=True)
    for a, b in zip(batched, single):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
        np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-5)
        np.testing.assert_allclose(a.frame_logits, b.frame_logits, atol=1e-4)


def test_batches_are_length_sorted_and_within_budget(engine, clips20):
    lengths = [c.size for c in clips20]
    buckets = engine.buckets(lengths, 30.0)
    assert sorted(i for b in buckets for i in b) == list(range(len(lengths)))
    for b in buckets:
        padded = len(b) * max(lengths[i] for i in b)
        assert len(b) == 1 or padded <= 30.0 * 16000
        assert [lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True)


def test_one_encoder_forward_per_segment(engine, clips20):
    """Scores, frame logits and embedding all come from a single encoder pass."""
    calls = []
    h = engine.torch_model.modality_encoders["AUDIO"].context_encoder.blocks[0].register_forward_hook(
        lambda m, i, o: calls.append(o[0].shape[0]))  # first transformer block: batch size
    h2 = engine.torch_model.blocks[-1].register_forward_hook(lambda m, i, o: calls.append(-1))
    try:
        engine.analyse(clips20[:5], batch_seconds=0.0)
        assert calls.count(-1) == 5 and [c for c in calls if c > 0] == [1] * 5
        calls.clear()
        engine.analyse(clips20, batch_seconds=1e6)
        assert calls.count(-1) == 1 and [c for c in calls if c > 0] == [20]
    finally:
        h.remove()
        h2.remove()


def test_fast_path_matches_funasr_attention(tiny_model_dir, engine, clips20):
    slow = _load(tiny_model_dir, fast_path=False)
    assert not any(type(m).__name__ == "SdpaAltAttention" for m in slow.torch_model.modules())
    assert any(type(m).__name__ == "SdpaAltAttention" for m in engine.torch_model.modules())
    for a, b in zip(engine.analyse(clips20[:6]), slow.analyse(clips20[:6])):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
        np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-5)


def test_short_and_long_clips_rejected_before_the_model(engine):
    before = engine.forward_calls
    with pytest.raises(SegmentTooShortError, match="399 samples"):
        engine.analyse([np.zeros(16000, np.float32), np.zeros(399, np.float32)])
    with pytest.raises(SegmentTooLongError, match="max_s"):
        engine.analyse([np.zeros(int(10.5 * 16000), np.float32)])
    assert engine.forward_calls == before
    r = engine.analyse([np.random.default_rng(0).standard_normal(400).astype(np.float32)])[0]
    assert r.frame_logits.shape == (1, 9)
    assert issubclass(SegmentTooShortError, ValueError)


def test_alibi_cache_is_bounded(engine, clips20):
    engine.analyse(clips20, batch_seconds=60.0)
    enc = engine._encoder
    assert enc._bias.shape[-1] == enc.num_extra + enc.max_frames
    size = enc._bias.numel()
    engine.analyse(clips20[::-1], batch_seconds=1e6)
    assert enc._bias.numel() == size
    assert engine.torch_model.alibi_biases == {}  # funasr's unbounded cache is not used


def test_unuse_tokens_get_probability_zero(tmp_path, rng):
    from funasr import AutoModel

    from tasks.models.testmodels import build_emotion2vec_dir

    toks = ["生气/angry", "unuse_0", "恐惧/fearful", "开心/happy", "中立/neutral", "unuse_1", "难过/sad",
            "吃惊/surprised", "<unk>"]
    d = build_emotion2vec_dir(tmp_path / "old", size="tiny", seed=1, tokens=toks)
    assert label_columns(toks)[1] is None
    em = _load(d)
    threads = torch.get_num_threads()
    am = AutoModel(model=str(d), disable_update=True, device="cpu", log_level="ERROR", disable_log=True)
    torch.set_num_threads(threads)
    clip = rng.standard_normal(24000).astype(np.float32) * 0.1
    r = em.analyse([clip])[0]
    ref = am.generate(clip, granularity="utterance", disable_pbar=True)[0]
    assert r.scores[EMOTIONS.index("disgusted")] == 0 and r.scores[EMOTIONS.index("other")] == 0
    assert np.isneginf(r.frame_logits[:, EMOTIONS.index("other")]).all()
    used = [EMOTIONS.index(x) for x in ("angry", "fearful", "happy", "neutral", "sad", "surprised", "unknown")]
    np.testing.assert_allclose(r.scores[used], ref["scores"], atol=1e-5)
    fs = r.frame_scores(smooth_s=0.1, hop_s=0.04)
    assert np.all(fs[:, EMOTIONS.index("other")] == 0) and np.allclose(fs.sum(1), 1, atol=1e-5)


def test_unknown_label_is_an_error():
    with pytest.raises(ValueError, match="bored"):
        label_columns(["x/bored"])


def test_missing_or_mismatched_checkpoint_keys_are_errors(tiny_model_dir, tmp_path):
    d = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, d)
    state = torch.load(d / "model.pt", map_location="cpu")
    del state["model"]["blocks.0.attn.qkv.weight"]
    torch.save(state, d / "model.pt")
    with pytest.raises(CheckpointError, match="missing keys.*blocks.0.attn.qkv.weight"):
        _load(d)
    state = torch.load(tiny_model_dir / "model.pt", map_location="cpu")
    state["model"]["proj.bias"] = torch.zeros(5)
    torch.save(state, d / "model.pt")
    with pytest.raises(CheckpointError, match="shape mismatch"):
        _load(d)


def test_model_cache_loads_once(tiny_model_dir):
    cfg = EmotionConfig(model=str(tiny_model_dir), device="cpu")
    a = get_emotion_model(cfg)
    b = get_emotion_model(cfg.model_copy(update={"batch_seconds": 5.0}))
    assert a is b and a.sha256 == resolve(str(tiny_model_dir)).sha256 and a.device == "cpu"
    assert a.labels == EMOTIONS


# -- frame post-processing ----------------------------------------------------------------


def test_smoothing_properties(rng):
    x = rng.standard_normal((137, 9)).astype(np.float32)
    assert np.array_equal(smooth_logits(x, smooth_s=0.0), x)
    assert np.array_equal(smooth_logits(x, smooth_s=0.02), x)  # one-frame window
    s = smooth_logits(x, smooth_s=0.1)  # 5 frames
    assert s.shape == x.shape
    np.testing.assert_allclose(s[10], x[8:13].mean(0), atol=1e-6)
    np.testing.assert_allclose(s[0], x[0:3].mean(0), atol=1e-6)  # edge: existing frames only
    const = np.tile(rng.standard_normal(9), (50, 1))
    np.testing.assert_allclose(smooth_logits(const, smooth_s=0.3), const, atol=1e-5)
    assert s.std(0).mean() < x.std(0).mean()  # smoother
    x[:, 5] = -np.inf
    s = smooth_logits(x, smooth_s=0.1)
    assert np.isneginf(s[:, 5]).all() and np.isfinite(np.delete(s, 5, 1)).all()


def test_resampling_properties(rng):
    x = rng.standard_normal((101, 9)).astype(np.float32)
    assert np.array_equal(resample_logits(x, hop_s=0.02), x)
    r = resample_logits(x, hop_s=0.04)
    assert r.shape == (51, 9)
    np.testing.assert_allclose(r[3], x[6:8].mean(0), atol=1e-6)
    np.testing.assert_allclose(r[-1], x[100], atol=1e-6)  # short last block
    # the mean over blocks of equal size is preserved
    np.testing.assert_allclose(resample_logits(x[:100], hop_s=0.1).mean(0), x[:100].mean(0), atol=1e-5)
    with pytest.raises(ValueError):
        resample_logits(x, hop_s=0.03)


def test_frame_scores(rng):
    logits = rng.standard_normal((60, 9)).astype(np.float32)
    se = SegmentEmotion(scores=np.full(9, 1 / 9, np.float32), frame_logits=logits, embedding=np.zeros(4, np.float32))
    p = se.frame_scores()
    assert p.shape == (60, 9) and np.allclose(p.sum(1), 1, atol=1e-5)
    p2 = se.frame_scores(smooth_s=0.2, hop_s=0.04)
    assert p2.shape == (30, 9) and np.allclose(p2.sum(1), 1, atol=1e-5)
    # smoothing then resampling = softmax of the averaged logits
    z = resample_logits(smooth_logits(logits, smooth_s=0.2), hop_s=0.04)
    e = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(p2, e / e.sum(1, keepdims=True), atol=1e-6)


def test_cpu_default_is_one_clip_per_forward(tiny_model_dir, engine, clips20):
    assert engine.device == "cpu" and engine.batch_seconds == 0.0
    before = engine.forward_calls
    engine.analyse(clips20[:4])
    assert engine.forward_calls - before == 4
    batching = _load(tiny_model_dir, cpu_batching=True, batch_seconds=1e6)
    batching.analyse(clips20[:4])
    assert batching.forward_calls == 1


def test_time_major_conv_extractor_equals_funasr(engine, rng):
    enc = engine.torch_model.modality_encoders["AUDIO"]
    src = torch.from_numpy(rng.standard_normal((2, 12345)).astype(np.float32))
    with torch.inference_mode():
        ref = enc.local_encoder(src).transpose(1, 2)
        fast = engine._encoder.fast_conv(src)
    assert fast.shape == ref.shape
    torch.testing.assert_close(fast, ref, atol=1e-4, rtol=1e-4)
