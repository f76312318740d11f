"""Screen threshold and drill-down curve summaries."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.core.records import EMOTIONS, EmotionResult, top_emotion
from tasks.emotion.screen import is_drilled, summarise_curve


def _curve(labels: list[tuple[str, int]]) -> np.ndarray:
    rows = []
    for label, n in labels:
        r = np.full(len(EMOTIONS), 0.05)
        r[EMOTIONS.index(label)] = 0.6
        rows += [r / r.sum()] * n
    return np.array(rows)


def test_threshold_is_strict() -> None:
    assert is_drilled(0.69, threshold=0.7) and not is_drilled(0.7, threshold=0.7)


def test_changes_and_runs() -> None:
    curve = _curve([("neutral", 50), ("angry", 100), ("sad", 25)])
    s = summarise_curve(curve, hop_s=0.02, offset_s=10.0)
    assert [r["label"] for r in s["runs"]] == ["neutral", "angry", "sad"]
    assert s["changes"] == [{"time": 11.0, "from": "neutral", "to": "angry"},
                            {"time": 13.0, "from": "angry", "to": "sad"}]
    assert s["dominant"] == "angry"
    assert s["peaks"]["angry"]["time"] == pytest.approx(11.0)
    assert s["runs"][-1]["end"] == pytest.approx(13.5)


def test_flicker_is_absorbed() -> None:
    curve = _curve([("happy", 40), ("sad", 2), ("happy", 40)])
    s = summarise_curve(curve, hop_s=0.02, min_run_s=0.2)
    assert [r["label"] for r in s["runs"]] == ["happy"] and s["changes"] == []


def test_bad_shape() -> None:
    with pytest.raises(ValueError):
        summarise_curve(np.zeros((5, 3)), hop_s=0.02)


def test_emotion_result_top_label() -> None:
    scores = np.full(9, 0.05)
    scores[3] = 0.6
    r = EmotionResult("x_0001", tuple(scores))
    assert r.label == "happy" and r.confidence == pytest.approx(0.6)


def test_top_emotion_is_the_one_argmax() -> None:
    scores = np.full(9, 0.05)
    scores[[2, 6]] = 0.3  # a tie: the first in EMOTIONS order wins, as np.argmax does
    assert top_emotion(scores) == ("fearful", pytest.approx(0.3))
    assert top_emotion(scores)[0] == EMOTIONS[int(np.argmax(scores))]
    r = EmotionResult("x_0002", tuple(scores))
    assert (r.label, r.confidence) == top_emotion(scores)
    with pytest.raises(ValueError, match="expected 9 scores, got 3"):
        top_emotion([0.1, 0.2, 0.7])
