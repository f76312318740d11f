"""Screen and drill down: the two-stage method.

Every segment gets its top label and confidence (the screen). Segments whose confidence is
below ``screen.threshold`` are drilled down: their frame-level curve is summarised into runs of
one dominant label, the times where the top label changes, and each label's peak.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from tasks.core.config import DrilldownConfig, ScreenConfig
from tasks.core.records import EMOTIONS, EmotionResult, Segment


def is_drilled(confidence: float, *, threshold: float) -> bool:
    """Whether a segment with this top score goes to drill-down (strictly below the threshold)."""
    return bool(confidence < threshold)


def _runs(top: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(labels, starts, ends)`` of the runs of equal values of ``top`` (end exclusive)."""
    edges = np.flatnonzero(np.diff(top)) + 1
    starts = np.concatenate([[0], edges]).astype(np.int64)
    ends = np.concatenate([edges, [top.size]]).astype(np.int64)
    return top[starts].astype(np.int64), starts, ends


def _absorb_short_runs(top: np.ndarray, *, min_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The runs of ``top`` after absorbing, one at a time, the shortest run shorter than
    ``min_frames`` (the first of equals) into its longer neighbour (the left one on a tie),
    merging the runs that then carry the same label, until none is left or one run remains."""
    labels, starts, ends = _runs(top)
    while labels.size > 1:
        lengths = ends - starts
        i = int(np.argmin(lengths))
        if lengths[i] >= min_frames:
            break
        j = i - 1 if i + 1 == labels.size or (i > 0 and lengths[i - 1] >= lengths[i + 1]) else i + 1
        labels[i] = labels[j]
        lo, hi = i, i  # runs were maximal: only the neighbours can now carry the same label
        while lo > 0 and labels[lo - 1] == labels[i]:
            lo -= 1
        while hi + 1 < labels.size and labels[hi + 1] == labels[i]:
            hi += 1
        if hi > lo:
            ends[lo] = ends[hi]
            labels, starts, ends = (np.delete(a, slice(lo + 1, hi + 1)) for a in (labels, starts, ends))
    return labels, starts, ends


def summarise_curve(
    frame_scores: np.ndarray, *, hop_s: float, offset_s: float = 0.0, min_run_s: float = 0.2
) -> dict[str, Any]:
    """Summarise a frame-level emotion curve.

    Parameters
    ----------
    frame_scores : np.ndarray, shape (T, 9)
        Per-frame probabilities in :data:`tasks.core.records.EMOTIONS` order.
    hop_s : float
        Seconds between frames.
    offset_s : float
        Time of frame 0 in the recording (the segment's start), added to every time.
    min_run_s : float
        Runs of a top label shorter than this are absorbed by their longer neighbour
        before changes are reported, so one-frame flickers are not reported as changes.

    Returns
    -------
    dict
        ``runs``: ``[{"label", "start", "end", "mean_score"}]`` in time order;
        ``changes``: ``[{"time", "from", "to"}]``; ``peaks``: ``{label: {"score", "time"}}``;
        ``dominant``: the label covering the most time.
    """
    scores = np.asarray(frame_scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != len(EMOTIONS):
        raise ValueError(f"frame_scores must be (T, {len(EMOTIONS)}), got {scores.shape}")
    n = scores.shape[0]
    if n == 0:
        return {"runs": [], "changes": [], "peaks": {}, "dominant": None}
    top = scores.argmax(axis=1)
    min_frames = max(1, int(round(min_run_s / hop_s)))
    labels, starts, ends = _absorb_short_runs(top, min_frames=min_frames)
    out_runs = []
    for label, s, e in zip(labels.tolist(), starts.tolist(), ends.tolist()):
        out_runs.append({
            "label": EMOTIONS[label],
            "start": round(offset_s + s * hop_s, 3),
            "end": round(offset_s + e * hop_s, 3),
            "mean_score": round(float(scores[s:e, label].mean()), 4),
        })
    changes = [
        {"time": out_runs[i]["start"], "from": out_runs[i - 1]["label"], "to": out_runs[i]["label"]}
        for i in range(1, len(out_runs))
    ]
    peak_idx = scores.argmax(axis=0)
    peaks = {
        label: {"score": round(float(scores[peak_idx[j], j]), 4), "time": round(offset_s + peak_idx[j] * hop_s, 3)}
        for j, label in enumerate(EMOTIONS)
    }
    coverage: dict[str, float] = {}
    for r in out_runs:
        coverage[r["label"]] = coverage.get(r["label"], 0.0) + r["end"] - r["start"]
    dominant = max(coverage, key=lambda k: coverage[k])
    return {"runs": out_runs, "changes": changes, "peaks": peaks, "dominant": dominant}


def screen_segments(
    results: Sequence[EmotionResult],
    *,
    segments: Sequence[Segment],
    positions: Sequence[int],
    frame_logits: Callable[[int], np.ndarray],
    screen: ScreenConfig,
    drilldown: DrilldownConfig,
) -> tuple[list[EmotionResult], dict[int, np.ndarray]]:
    """Screen every scored segment and drill down into the unsure ones.

    The one place that decides ``drilled``: a segment is drilled when drill-down is enabled and
    its confidence is below ``screen.threshold`` (:func:`is_drilled`). Everyone else (export,
    report, plots) reads that decision.

    Parameters
    ----------
    results : sequence of EmotionResult
        The emotion model's utterance results, one per scored segment (row ``i``).
    segments : sequence of Segment
        All the recording's segments; ``positions[i]`` is row ``i``'s segment.
    positions : sequence of int
        Position in ``segments`` of each result.
    frame_logits : callable
        ``frame_logits(i)`` gives row ``i``'s ``(T, 9)`` frame logits (read only when drilled).
    screen, drilldown : ScreenConfig, DrilldownConfig
        The threshold; whether and how to drill (smoothing, frame hop, shortest run).

    Returns
    -------
    results : list of EmotionResult
        The same results with ``drilled`` and, when drilled, ``drilldown`` (the curve summary,
        times in the recording).
    curves : dict
        Segment position → ``(T', 9)`` float32 frame probabilities, for drilled segments.
    """
    out: list[EmotionResult] = []
    curves: dict[int, np.ndarray] = {}
    for i, (result, pos) in enumerate(zip(results, positions)):
        if not (drilldown.enabled and is_drilled(result.confidence, threshold=screen.threshold)):
            out.append(EmotionResult(result.segment_id, result.scores, drilled=False))
            continue
        from tasks.emotion.model import frame_scores_from_logits

        curve = frame_scores_from_logits(frame_logits(i), smooth_s=drilldown.smooth_s, hop_s=drilldown.frame_hop_s)
        curves[int(pos)] = curve.astype(np.float32)
        summary = summarise_curve(curve, hop_s=drilldown.frame_hop_s, offset_s=segments[pos].start,
                                  min_run_s=drilldown.min_run_s)
        out.append(EmotionResult(result.segment_id, result.scores, drilled=True, drilldown=summary))
    return out, curves
