"""A deterministic stand-in for ``tasks.emotion.model.EmotionModel`` (same interface), for UI unit tests.

Scores are a softmax of simple clip statistics, so they are reproducible and vary with the audio.
It is a test double of the interface only; the browser test runs the real tiny emotion2vec.
"""

from __future__ import annotations

import numpy as np

from tasks.core.records import EMOTIONS

HOP = 320  # samples per frame at 16 kHz (50 frames/s), as emotion2vec


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


class FakeSegmentEmotion:
    def __init__(self, clip: np.ndarray, proj: np.ndarray, emb_proj: np.ndarray) -> None:
        n = max(1, len(clip) // HOP)
        frames = np.asarray(clip[: n * HOP], dtype=np.float64).reshape(n, -1) if len(clip) >= HOP else np.zeros((1, HOP))
        feats = np.stack([np.log1p(100 * np.abs(frames).mean(1)), np.abs(np.diff(frames, axis=1)).mean(1) * 50,
                          np.ones(n)], axis=1)
        self.frame_logits = (feats @ proj).astype(np.float32)  # (T, 9)
        self.scores = _softmax(self.frame_logits.mean(0).astype(np.float64)).astype(np.float32)
        self.embedding = np.tanh(feats.mean(0) @ emb_proj).astype(np.float32)

    def frame_scores(self, *, smooth_s: float = 0.0, hop_s: float = 0.02) -> np.ndarray:
        step = max(1, int(round(hop_s / 0.02)))
        return _softmax(self.frame_logits[::step].astype(np.float64)).astype(np.float32)


class FakeEmotionModel:
    model_id = "fake-emotion-model"
    sha256 = "f" * 64
    labels = EMOTIONS
    embed_dim = 16
    is_test_model = True

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self._proj = rng.normal(size=(3, len(EMOTIONS))) * 2
        self._emb = rng.normal(size=(3, self.embed_dim))

    max_s = 30.0

    def analyse(self, clips: list[np.ndarray], **_: object) -> list[FakeSegmentEmotion]:
        return [FakeSegmentEmotion(np.asarray(c), self._proj, self._emb) for c in clips]
