"""Segmentation: bounds, merge/split rules, coverage of every second of speech, stable ids."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.core.config import SegmentationConfig
from tasks.core.records import Turn
from tasks.diarization.segments import (
    OVERLAP_SPEAKER,
    build_segments,
    multi_speaker,
    short_time_energy,
    subtract,
    total,
    union,
)

CFG = SegmentationConfig()
TOL = 0.0015  # times are rounded to the millisecond


def _speech(turns, overlaps=()):
    return union([(t.start, t.end) for t in turns] + list(overlaps))


def _measure_inside(segs, regions):
    """Length of union(segs) ∩ regions."""
    cover = union((s.start, s.end) for s in segs)
    return total(cover) - total(subtract(cover, regions))


# ----------------------------------------------------------------------------- unit cases


def test_no_turns_gives_no_segments():
    assert build_segments([], recording_id="r", config=CFG) == []


def test_short_turn_is_kept_as_too_short():
    segs = build_segments([Turn("A", 2.0, 3.0)], recording_id="r", config=CFG)
    assert [(s.segment_id, s.speaker, s.start, s.end, s.status) for s in segs] == [("r_0000", "A", 2.0, 3.0, "too_short")]


def test_merge_small_gap_same_speaker_only():
    turns = [Turn("A", 0.0, 1.0), Turn("A", 1.2, 2.5), Turn("A", 3.0, 5.0)]
    segs = build_segments(turns, recording_id="r", config=CFG)
    # 0.2 s < 0.3 s merges; 0.5 s does not
    assert [(s.start, s.end, s.status) for s in segs] == [(0.0, 2.5, "ok"), (3.0, 5.0, "ok")]


def test_no_merge_across_another_speaker():
    turns = [Turn("A", 0.0, 2.0), Turn("B", 2.05, 2.15), Turn("A", 2.2, 4.0)]
    segs = build_segments(turns, recording_id="r", config=CFG)
    assert [(s.speaker, s.start, s.end) for s in segs] == [("A", 0.0, 2.0), ("B", 2.05, 2.15), ("A", 2.2, 4.0)]


def test_overlap_becomes_its_own_segment():
    turns = [Turn("SPEAKER_01", 0.0, 5.0), Turn("SPEAKER_00", 4.0, 9.0)]
    segs = build_segments(turns, recording_id="r", config=CFG)
    got = [(s.speaker, s.start, s.end, s.status) for s in segs]
    assert got == [
        ("SPEAKER_01", 0.0, 4.0, "ok"),
        ("SPEAKER_00+SPEAKER_01", 4.0, 5.0, "overlap"),
        ("SPEAKER_00", 5.0, 9.0, "ok"),
    ]


def test_given_overlap_regions_are_kept():
    # diarization with exclude_overlap: turns stop where overlap starts, overlaps passed apart
    turns = [Turn("A", 0.0, 3.0), Turn("B", 3.5, 6.0)]
    segs = build_segments(turns, recording_id="r", config=CFG, overlaps=[(3.0, 3.5), (10.0, 10.4)])
    got = [(s.speaker, s.start, s.end, s.status) for s in segs]
    assert got == [
        ("A", 0.0, 3.0, "ok"),
        ("A+B", 3.0, 3.5, "overlap"),
        ("B", 3.5, 6.0, "ok"),
        (OVERLAP_SPEAKER, 10.0, 10.4, "overlap"),
    ]


def test_split_at_quietest_point_near_middle():
    sr = 16000
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(16 * sr)).astype(np.float32)
    audio[int(7.0 * sr) : int(7.3 * sr)] = 0.0  # a pause at 7.0-7.3 s, 1 s before the middle
    audio[int(2.0 * sr) : int(2.5 * sr)] = 0.0  # a pause too far from the middle to be used
    segs = build_segments([Turn("A", 0.0, 16.0)], recording_id="r", config=CFG, audio=audio, sample_rate=sr)
    assert len(segs) == 2
    cut = segs[0].end
    assert 7.0 <= cut <= 7.3, cut
    assert segs[1].start == cut


def test_split_without_audio_is_at_middle():
    segs = build_segments([Turn("A", 0.0, 25.0)], recording_id="r", config=CFG)
    assert [(s.start, s.end) for s in segs] == [(0.0, 6.25), (6.25, 12.5), (12.5, 18.75), (18.75, 25.0)]


def test_ids_are_stable_and_in_time_order():
    turns = [Turn("B", 5.0, 30.0), Turn("A", 0.0, 4.0), Turn("A", 29.0, 31.0)]
    a = build_segments(turns, recording_id="rec1", config=CFG)
    b = build_segments(list(reversed(turns)), recording_id="rec1", config=CFG)
    assert a == b
    assert [s.segment_id for s in a] == [f"rec1_{i:04d}" for i in range(len(a))]
    assert [s.start for s in a] == sorted(s.start for s in a)


def test_energy_envelope_matches_audio():
    sr = 16000
    x = np.zeros(sr, dtype=np.float32)
    x[8000:8480] = 1.0
    e = short_time_energy(x, sample_rate=sr)
    assert e.shape == (100,)
    assert abs(int(np.argmax(e)) - 51) <= 1  # 8240 samples ≈ 0.515 s


def test_hour_long_monologue_is_fast_and_linear():
    hop = 0.01
    hours = 3600.0
    rng = np.random.default_rng(1)
    energy = rng.uniform(0.5, 1.0, int(hours / hop))
    # short pauses every 2-6 s, like breaths
    t = 0.0
    while t < hours:
        t += rng.uniform(2.0, 6.0)
        i = int(t / hop)
        energy[i : i + 20] = 1e-4
    t0 = time.perf_counter()
    segs = build_segments([Turn("A", 0.0, hours)], recording_id="long", config=CFG, energy=energy, energy_hop_s=hop)
    elapsed = time.perf_counter() - t0
    assert len(segs) >= 360
    assert all(s.status == "ok" and CFG.min_s - TOL <= s.duration <= CFG.max_s + TOL for s in segs)
    assert abs(sum(s.duration for s in segs) - hours) < 0.01
    assert elapsed < 3.0, elapsed
    # many turns: 10 000 one-second turns of alternating speakers
    many = [Turn(f"S{i % 3}", i * 1.0, i * 1.0 + 0.9) for i in range(10_000)]
    t0 = time.perf_counter()
    segs = build_segments(many, recording_id="many", config=CFG)
    assert len(segs) == 10_000
    assert time.perf_counter() - t0 < 3.0


def test_interval_helpers():
    assert union([(2, 3), (0, 1), (1, 1.5), (2.5, 4)]) == [(0, 1.5), (2, 4)]
    assert subtract([(0, 10)], [(1, 2), (5, 6)]) == [(0, 1), (2, 5), (6, 10)]
    assert multi_speaker([[(0, 5)], [(4, 9)], [(8, 10)]]) == [(4, 5), (8, 9)]


# ----------------------------------------------------------------------------- properties

_grid = st.integers(min_value=0, max_value=6000).map(lambda i: i / 100)  # 10 ms grid, 0-60 s


@st.composite
def turn_sets(draw):
    n = draw(st.integers(min_value=0, max_value=25))
    turns = []
    for _ in range(n):
        start = draw(_grid)
        length = draw(st.integers(min_value=1, max_value=2500)) / 100  # up to 25 s
        turns.append(Turn(draw(st.sampled_from(["A", "B", "C"])), start, start + length))
    overlaps = []
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        start = draw(_grid)
        overlaps.append((start, start + draw(st.integers(min_value=1, max_value=300)) / 100))
    config = SegmentationConfig(
        min_s=draw(st.sampled_from([0.5, 1.0, 1.5])),
        max_s=draw(st.sampled_from([3.0, 5.0, 10.0])),
        merge_gap_s=draw(st.sampled_from([0.0, 0.3, 1.0])),
        split_search_s=draw(st.sampled_from([0.0, 0.5, 2.0])),
    )
    with_energy = draw(st.booleans())
    return turns, overlaps, config, with_energy


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(turn_sets(), st.randoms(use_true_random=False))
def test_segment_properties(case, rnd):
    turns, overlaps, config, with_energy = case
    energy = None
    if with_energy:
        gen = np.random.default_rng(rnd.randint(0, 2**31))
        energy = gen.uniform(0.0, 1.0, 9000)
    segs = build_segments(turns, recording_id="rec", config=config, overlaps=overlaps, energy=energy)
    speech = _speech(turns, overlaps)

    # ids in time order
    assert [s.segment_id for s in segs] == [f"rec_{i:04d}" for i in range(len(segs))]
    assert all(a.start <= b.start for a, b in zip(segs, segs[1:]))
    # every ok segment is within bounds; too_short ones are below min_s
    for s in segs:
        assert s.end > s.start
        if s.status == "ok":
            assert config.min_s - TOL <= s.duration <= config.max_s + TOL, s
        elif s.status == "too_short":
            assert s.duration < config.min_s + TOL, s
    # segments of the same status never overlap (in fact no two segments do)
    for status in ("ok", "too_short", "overlap"):
        same = sorted((s.start, s.end) for s in segs if s.status == status)
        assert all(a[1] <= b[0] + 1e-9 for a, b in zip(same, same[1:])), status
    ordered = sorted((s.start, s.end) for s in segs)
    assert all(a[1] <= b[0] + 1e-9 for a, b in zip(ordered, ordered[1:]))
    # each single-speaker segment lies inside one speaker's (gap-merged) turn
    for s in segs:
        if s.status == "overlap":
            assert "+" in s.speaker or s.speaker == OVERLAP_SPEAKER
            continue
        own = union([(t.start, t.end) for t in turns if t.speaker == s.speaker])
        closed = union(list(own) + [(a[1], b[0]) for a, b in zip(own, own[1:]) if b[0] - a[1] < config.merge_gap_s])
        assert any(a - TOL <= s.start and s.end <= b + TOL for a, b in closed), s
        # and never covers another speaker's speech or an overlap region
        others = union([(t.start, t.end) for t in turns if t.speaker != s.speaker] + list(overlaps))
        assert _measure_inside([s], others) <= 0.002
    # every second of diarized speech is covered exactly once: ok + too_short + overlap
    assert abs(_measure_inside(segs, speech) - total(speech)) <= 0.01
    # and the only extra time is the merged pauses (each shorter than merge_gap_s)
    extra = total(subtract(union((s.start, s.end) for s in segs), speech))
    assert extra <= config.merge_gap_s * len(segs) + 0.01
    if config.merge_gap_s == 0:
        assert extra <= 0.01
    # stable: the same inputs give the same segments
    assert segs == build_segments(list(reversed(turns)), recording_id="rec", config=config, overlaps=overlaps, energy=energy)


def test_segment_on_real_ami_reference(shared_data):
    """The AMI reference RTTM (with its real overlaps) segments with full coverage."""
    rttm = shared_data / "ami" / "debug.development.rttm"
    turns = []
    for line in rttm.read_text().splitlines():
        f = line.split()
        if f and f[0] == "SPEAKER" and f[1] == "dev00":
            turns.append(Turn(f[7], float(f[3]), float(f[3]) + float(f[4])))
    from tasks.audio.decode import load_audio

    audio, _ = load_audio(shared_data / "ami" / "dev00.flac")
    segs = build_segments(turns, recording_id="dev00", config=CFG, audio=audio)
    speech = _speech(turns)
    assert abs(_measure_inside(segs, speech) - total(speech)) <= 0.01
    assert {s.status for s in segs} >= {"ok", "overlap"}
    assert all(CFG.min_s - TOL <= s.duration <= CFG.max_s + TOL for s in segs if s.status == "ok")


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])


# ---------------------------------------------------------------------------- real speech
def _first_voiced(x: np.ndarray, sr: int = 16000) -> float:
    """First 10 ms frame of a clean utterance within 40 dB of its loudest frame and 8 dB above
    its noise floor (10th percentile): where its first word starts."""
    hop = sr // 100
    n = len(x) // hop
    energy = 10 * np.log10(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-10)
    return float(np.flatnonzero(energy > max(energy.max() - 40.0, np.percentile(energy, 10) + 8.0))[0] * hop / sr)


def test_emotion_segments_keep_the_first_word_of_each_turn(shared_data):
    """Diarized two-speaker LibriSpeech conversation: the segment that opens each turn starts
    no later than the turn's first voiced frame in the clean source."""
    import csv

    import soundfile as sf

    from tasks.diarization import pipeline as D
    from tasks.core.config import DiarizationConfig

    sr = 16000
    lib = shared_data / "librispeech" / "test-other"
    with open(lib / "speakers.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    speakers = [sorted({r["speaker_id"] for r in rows if r["sex"] == sex})[1] for sex in ("F", "M")]
    utts = {s: sorted(lib / r["file"] for r in rows if r["speaker_id"] == s)[:2] for s in speakers}
    pieces, onsets, t = [], [], 0.5
    pieces.append(np.zeros(int(0.5 * sr), np.float32))
    for i in range(2):
        for s in speakers:
            x = sf.read(utts[s][i], dtype="float32")[0][: 5 * sr]
            onsets.append(t + _first_voiced(x))
            pieces += [x, np.zeros(int(0.7 * sr), np.float32)]
            t += (len(x) + int(0.7 * sr)) / sr
    audio = np.concatenate(pieces)
    with D.torch_threads(1):
        result = D.diarize(audio, recording_id="conv", config=DiarizationConfig(device="cpu", threads=1))
    segments = build_segments(result.turns(), recording_id="conv", config=CFG, overlaps=result.overlaps(), audio=audio)
    for onset in onsets:
        # the segment holding the turn's first word: the earliest one that reaches into it
        holding = [s for s in segments if s.end > onset + 0.05 and s.start < onset + 0.5]
        assert holding, (onset, segments)
        assert min(s.start for s in holding) <= onset, (onset, holding)
