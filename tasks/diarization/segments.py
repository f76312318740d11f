"""Segmentation: diarization turns → single-speaker segments of 1.5-10 s for the emotion model.

Steps (all interval work is sort + linear sweeps: O(n log n) in the number of turns, O(audio)
for the energy envelope, so a 1-hour monologue takes milliseconds):

1. Each speaker's turns are joined into a union (self-overlaps and touching turns merge).
2. **Overlap**: where two or more speakers' unions intersect, plus the ``overlaps`` regions the
   diarization passes in, is overlapped speech. It is removed from every speaker's speech and
   kept as segments with status ``overlap``; their ``speaker`` is the ``+``-joined sorted names
   of the speakers whose turns intersect or touch the region (e.g. ``SPEAKER_00+SPEAKER_01``),
   or ``OVERLAP`` when fewer than two do (a region known only from ``overlaps`` whose speakers
   the turns do not tell).
3. **Merge**: two pieces of the same speaker that follow each other on the timeline (nobody
   else's speech, overlap included, in between) and are separated by less than
   ``merge_gap_s`` are joined; the short pause becomes part of the segment.
4. **Split**: a piece longer than ``max_s`` is cut at its quietest point (lowest short-time
   energy, 30 ms frames every 10 ms, smoothed over 50 ms) within ``split_search_s`` of its
   middle, restricted so both halves are at least ``min_s`` long; recursively, until every
   piece is at most ``max_s``. Without audio (or energy) the cut is at the middle. Because
   ``max_s >= 2 min_s`` (enforced by the config), every piece of a split is within
   ``[min_s, max_s]``.
5. Pieces shorter than ``min_s`` are kept with status ``too_short`` (not sent to the model),
   so every second of diarized speech is in exactly one segment.
6. Segments are sorted by start time and numbered ``<recording_id>_<nnnn>``; times are rounded
   to the millisecond. The result depends only on the inputs and the config.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

import numpy as np

from tasks.core.timebase import SAMPLE_RATE, compute_num_samples
from tasks.core.config import SegmentationConfig
from tasks.core.records import Segment, Turn, segment_id

Interval = tuple[float, float]

OVERLAP_SPEAKER = "OVERLAP"
"""Speaker name of an overlap segment when no turn touches it."""

ENERGY_HOP_S = 0.01
ENERGY_WIN_S = 0.03
ENERGY_SMOOTH_FRAMES = 5
_EPS = 1e-9


# ---------------------------------------------------------------------------- intervals


def union(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, disjoint union of intervals (touching ones join; empty ones are dropped)."""
    out: list[list[float]] = []
    for s, e in sorted((float(s), float(e)) for s, e in intervals if e > s):
        if out and s <= out[-1][1]:
            if e > out[-1][1]:
                out[-1][1] = e
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def subtract(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    """``a`` minus ``b``; both sorted and disjoint."""
    out: list[Interval] = []
    j = 0
    for s, e in a:
        while j < len(b) and b[j][1] <= s:
            j += 1
        cur, k = s, j
        while k < len(b) and b[k][0] < e:
            if b[k][0] > cur:
                out.append((cur, b[k][0]))
            cur = max(cur, b[k][1])
            k += 1
        if cur < e:
            out.append((cur, e))
    return out


def multi_speaker(unions: Sequence[Sequence[Interval]]) -> list[Interval]:
    """Where at least two of the (per-speaker, disjoint) interval lists are active."""
    events: list[tuple[float, int]] = []
    for u in unions:
        for s, e in u:
            events.append((s, 1))
            events.append((e, -1))
    events.sort(key=lambda ev: (ev[0], ev[1]))  # ends before starts at the same time
    out: list[Interval] = []
    active, start = 0, 0.0
    for t, d in events:
        before = active
        active += d
        if before < 2 <= active:
            start = t
        elif before >= 2 > active and t > start:
            out.append((start, t))
    return union(out)


def total(intervals: Iterable[Interval]) -> float:
    """Total length of disjoint intervals."""
    return float(sum(e - s for s, e in intervals))


# ---------------------------------------------------------------------------- energy


def short_time_energy(
    audio: np.ndarray, *, sample_rate: int = SAMPLE_RATE, hop_s: float = ENERGY_HOP_S, win_s: float = ENERGY_WIN_S
) -> np.ndarray:
    """Mean-square energy of ``win_s`` frames every ``hop_s``; frame ``i`` is centred at ``i * hop_s``.

    Parameters
    ----------
    audio : np.ndarray
        Mono samples.
    sample_rate : int
        Sample rate of ``audio``.
    hop_s, win_s : float
        Frame hop and window in seconds.

    Returns
    -------
    np.ndarray
        (ceil(n / hop),) float64 energies, smoothed over 50 ms.
    """
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    hop = max(1, compute_num_samples(hop_s, sample_rate=sample_rate))
    win = max(hop, compute_num_samples(win_s, sample_rate=sample_rate))
    n_frames = -(-x.shape[0] // hop) if x.size else 0
    if n_frames == 0:
        return np.zeros(0)
    half = win // 2
    csum = np.concatenate(([0.0], np.cumsum(np.square(x))))
    centres = np.arange(n_frames) * hop
    lo = np.clip(centres - half, 0, x.shape[0])
    hi = np.clip(centres + half, 0, x.shape[0])
    energy = (csum[hi] - csum[lo]) / np.maximum(hi - lo, 1)
    k = ENERGY_SMOOTH_FRAMES
    if k > 1 and energy.shape[0] >= k:
        energy = np.convolve(energy, np.ones(k) / k, mode="same")
    return energy


def _split_point(s: float, e: float, *, config: SegmentationConfig, energy: np.ndarray | None, hop_s: float) -> float:
    """Where to cut ``[s, e]``: the quietest frame near the middle, both halves >= min_s."""
    mid = (s + e) / 2
    lo = max(s + config.min_s, mid - config.split_search_s)
    hi = min(e - config.min_s, mid + config.split_search_s)
    if energy is None or energy.size == 0 or hi <= lo:
        return mid
    i0 = int(np.ceil(lo / hop_s - _EPS))
    i1 = int(np.floor(hi / hop_s + _EPS))
    i0, i1 = max(i0, 0), min(i1, energy.shape[0] - 1)
    if i1 < i0:
        return mid
    window = energy[i0 : i1 + 1]
    quietest = np.flatnonzero(window <= window.min() * (1 + 1e-9) + 1e-20)
    times = (i0 + quietest) * hop_s
    t = float(times[np.argmin(np.abs(times - mid))])  # ties: the one closest to the middle
    return min(max(t, lo), hi)


def split_piece(
    s: float, e: float, *, config: SegmentationConfig, energy: np.ndarray | None = None, hop_s: float = ENERGY_HOP_S
) -> list[Interval]:
    """Cut ``[s, e]`` recursively until every piece is at most ``max_s`` long."""
    out: list[Interval] = []
    stack = [(s, e)]
    while stack:
        a, b = stack.pop()
        if b - a <= config.max_s + _EPS:
            out.append((a, b))
            continue
        t = _split_point(a, b, config=config, energy=energy, hop_s=hop_s)
        stack.append((t, b))
        stack.append((a, t))
    return out


# ---------------------------------------------------------------------------- segments


def _overlap_speaker(region: Interval, unions: dict[str, list[Interval]], starts: dict[str, list[float]]) -> str:
    """``A+B`` for the speakers whose speech touches ``region`` (``OVERLAP`` when fewer than 2)."""
    s, e = region
    names = []
    for spk, u in unions.items():
        i = bisect.bisect_right(starts[spk], e + _EPS) - 1
        # the last interval starting at or before e; touching (shared endpoint) counts
        if i >= 0 and u[i][1] >= s - _EPS:
            names.append(spk)
    return "+".join(sorted(names)) if len(names) >= 2 else OVERLAP_SPEAKER


def build_segments(
    turns: Sequence[Turn],
    *,
    recording_id: str,
    config: SegmentationConfig,
    overlaps: Sequence[Interval] = (),
    audio: np.ndarray | None = None,
    sample_rate: int = SAMPLE_RATE,
    energy: np.ndarray | None = None,
    energy_hop_s: float = ENERGY_HOP_S,
) -> list[Segment]:
    """Build a recording's segments from its diarization turns.

    Parameters
    ----------
    turns : sequence of Turn
        Diarization turns (speaker, start, end) in seconds; overlap may or may not be excluded.
    recording_id : str
        Prefix of the segment ids.
    config : SegmentationConfig
        ``min_s``, ``max_s``, ``merge_gap_s``, ``split_search_s``.
    overlaps : sequence of (start, end)
        Overlapped-speech regions from diarization (kept as ``overlap`` segments).
    audio : np.ndarray, optional
        The recording (mono); its short-time energy picks the split points.
    sample_rate : int
        Sample rate of ``audio``.
    energy : np.ndarray, optional
        A precomputed energy envelope (frame ``i`` at ``i * energy_hop_s``), used instead of
        ``audio``.
    energy_hop_s : float
        Hop of ``energy`` in seconds.

    Returns
    -------
    list of Segment
        In time order, ids ``<recording_id>_0000`` ...; empty when there are no turns.
    """
    if energy is None and audio is not None:
        energy = short_time_energy(audio, sample_rate=sample_rate, hop_s=energy_hop_s)
    by_speaker: dict[str, list[Interval]] = {}
    for t in turns:
        s, e = max(float(t.start), 0.0), float(t.end)
        if e > s:
            by_speaker.setdefault(t.speaker, []).append((s, e))
    unions = {spk: union(iv) for spk, iv in sorted(by_speaker.items())}
    overlap = union(list(multi_speaker(list(unions.values()))) + [(max(float(s), 0.0), float(e)) for s, e in overlaps])

    # Timeline of disjoint pieces: (start, end, speaker or None for overlap).
    pieces: list[tuple[float, float, str | None]] = [(s, e, None) for s, e in overlap]
    for spk, u in unions.items():
        pieces.extend((s, e, spk) for s, e in subtract(u, overlap))
    pieces.sort(key=lambda p: (p[0], p[1]))

    merged: list[list] = []  # [start, end, speaker]
    for s, e, spk in pieces:
        prev = merged[-1] if merged else None
        if prev is not None and spk is not None and prev[2] == spk and s - prev[1] < config.merge_gap_s:
            prev[1] = max(prev[1], e)
        else:
            merged.append([s, e, spk])

    starts = {spk: [iv[0] for iv in u] for spk, u in unions.items()}
    raw: list[tuple[float, float, str, str]] = []  # start, end, speaker, status
    for s, e, spk in merged:
        if spk is None:
            raw.append((s, e, _overlap_speaker((s, e), unions, starts), "overlap"))
            continue
        for a, b in split_piece(s, e, config=config, energy=energy, hop_s=energy_hop_s):
            raw.append((a, b, spk, "ok" if b - a >= config.min_s - _EPS else "too_short"))

    out: list[Segment] = []
    for s, e, spk, status in sorted(raw, key=lambda r: (r[0], r[1], r[3], r[2])):
        s3, e3 = round(s, 3), round(e, 3)
        if e3 <= s3:
            continue
        out.append(Segment(segment_id(recording_id, len(out)), recording_id, spk, s3, e3, status))  # type: ignore[arg-type]
    return out
