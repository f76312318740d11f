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


def _reference_runs(frame_scores: np.ndarray, *, min_frames: int) -> list[tuple[int, int, int]]:
    """The absorption rule as first written (every step re-reads the runs from the labels):
    the specification :func:`tasks.emotion.screen._absorb_short_runs` must equal."""
    top = np.asarray(frame_scores).argmax(axis=1)

    def runs_of(t):
        edges = np.flatnonzero(np.diff(t)) + 1
        starts, ends = np.concatenate([[0], edges]), np.concatenate([edges, [t.size]])
        return [(int(t[s]), int(s), int(e)) for s, e in zip(starts, ends)]

    runs = runs_of(top)
    while len(runs) > 1:
        lengths = [e - s for _, s, e in runs]
        i = int(np.argmin(lengths))
        if lengths[i] >= min_frames:
            break
        left = runs[i - 1] if i > 0 else None
        right = runs[i + 1] if i + 1 < len(runs) else None
        into = left if right is None or (left is not None and left[2] - left[1] >= right[2] - right[1]) else right
        top[runs[i][1]:runs[i][2]] = into[0]
        runs = runs_of(top)
    return runs


def test_short_runs_are_absorbed_exactly_as_the_rule_says() -> None:
    from tasks.emotion.screen import _absorb_short_runs

    rng = np.random.default_rng(7)
    for trial in range(300):
        n = int(rng.integers(1, 400))
        if trial % 2:
            scores = rng.random((n, 9))  # a flickering curve: a run per frame or two
        else:
            labels = np.repeat(rng.integers(0, 4, size=n), rng.integers(1, 12, size=n))[:n]
            scores = rng.random((n, 9)) * 0.5
            scores[np.arange(n), labels] += 1.0
        min_frames = int(rng.integers(1, 30))
        got = _absorb_short_runs(scores.argmax(axis=1), min_frames=min_frames)
        assert list(zip(*(a.tolist() for a in got))) == _reference_runs(scores, min_frames=min_frames), trial
