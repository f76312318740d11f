"""Diarization refinement by Silero VAD (tasks/diarization/refine.py) on real LibriSpeech speech."""

from __future__ import annotations


import numpy as np
import pytest
from pyannote.core import Annotation, Segment

from tasks.diarization import pipeline as D
from tasks.diarization import refine as R
from tasks.audio import vad

SR = 16000


@pytest.fixture(scope="module")
def campp():
    with D.torch_threads(1):
        yield D.load_embedding_model(device="cpu")


def first_voiced(x: np.ndarray) -> float:
    """Time (s) of the first 10 ms frame of a clean utterance that holds speech: within 40 dB
    of its loudest frame and 8 dB above its noise floor (10th percentile; test-other files
    open with audible noise), as the benchmark's pause-aware references say."""
    hop = SR // 100
    n = len(x) // hop
    energy = 10 * np.log10(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-10)
    floor = max(energy.max() - 40.0, np.percentile(energy, 10) + 8.0)
    return float(np.flatnonzero(energy > floor)[0] * hop / SR)


def _ann(tracks: list[tuple[float, float, str]]) -> Annotation:
    ann = Annotation(uri="rec")
    for a, b, lab in tracks:
        ann[Segment(a, b), ann.new_track(Segment(a, b))] = lab
    return ann


def _refine(audio, full, exclusive=None, **kwargs):
    probs, _, step = vad.speech_probability(audio, detector="silero")
    return R.refine(audio, full, full if exclusive is None else exclusive, speech_probs=probs, frame_step=step, **kwargs)


def test_frames_round_trip():
    ann = _ann([(0.5, 1.25, "A"), (1.0, 2.0, "B")])
    frames = R.to_frames(ann, ["A", "B"], 300)
    back = R.to_annotation(frames, ["A", "B"], uri="rec", duration=3.0)
    assert back.label_timeline("A").support() == ann.label_timeline("A").support()
    assert back.label_timeline("B").support() == ann.label_timeline("B").support()
    assert R.runs(np.array([0, 1, 1, 0, 1], bool)) == [(1, 3), (4, 5)]


def test_silero_hears_librispeech_speech_and_not_silence(female_and_male_voices):
    utt = female_and_male_voices[0][0][: 6 * SR]
    audio = np.concatenate([np.zeros(SR, np.float32), utt, np.zeros(SR, np.float32)])
    regions = vad.speech_regions(audio, detector="silero", threshold=0.5, offset_threshold=0.35)
    assert regions and regions[0][0] >= 0.9 and regions[-1][1] <= 7.1
    onset = 1.0 + first_voiced(utt)
    assert abs(regions[0][0] - onset) <= 0.05, (regions[0], onset)
    # the model is loaded once per process; plain thresholding is hysteresis with offset = onset
    assert vad._silero(vad.SILERO_MODEL) is vad._silero(vad.SILERO_MODEL)
    probs = np.array([0.1, 0.6, 0.4, 0.4, 0.2, 0.4])
    assert vad.hysteresis(probs, onset=0.5, offset=0.3).tolist() == [False, True, True, True, False, False]
    assert vad.hysteresis(probs, onset=0.5).tolist() == [False, True, False, False, False, False]
    with pytest.raises(ValueError):
        vad.speech_probability(audio, detector="nope")


def test_late_onset_and_offset_move_to_the_voice(female_and_male_voices):
    """A turn labelled 0.3 s late at both ends moves to within 50 ms of the clean source."""
    utt = female_and_male_voices[0][1][: 5 * SR]
    audio = np.concatenate([np.zeros(2 * SR, np.float32), utt, np.zeros(2 * SR, np.float32)])
    onset = 2.0 + first_voiced(utt)
    offset = 2.0 + len(utt) / SR - first_voiced(utt[::-1])
    late = _ann([(onset + 0.3, offset + 0.3, "SPEAKER_00")])
    full, exclusive = _refine(audio, late, shift_s=0.5, pause_s=0.0)
    turns = list(exclusive.itertracks())
    assert abs(turns[0][0].start - onset) <= 0.05, (turns[0][0], onset)
    assert abs(turns[-1][0].end - offset) <= 0.1, (turns[-1][0], offset)
    assert full.labels() == ["SPEAKER_00"]
    # edges off: nothing moves (to 10 ms)
    same, _ = _refine(audio, late, shift_s=0.0, pause_s=0.0)
    assert same.get_timeline().support()[0].start == pytest.approx(onset + 0.3, abs=0.01)


def test_filled_pause_is_cut_and_overlap_and_unheard_turns_are_kept(female_and_male_voices):
    a, b = female_and_male_voices[0][2:4]
    a, b = a[: 4 * SR], b[: 4 * SR]
    gap = np.zeros(int(0.6 * SR), np.float32)
    audio = np.concatenate([np.zeros(SR // 2, np.float32), a, gap, b, np.zeros(3 * SR, np.float32)])
    t_gap = 0.5 + len(a) / SR
    # one turn bridging the 0.6 s pause; a silent stretch (9.7-10.5 s) labelled as overlap of
    # two speakers; a turn over silence (10.6-11 s) the detector hears nothing of
    full = _ann([(0.5, t_gap + 0.6 + 4.0, "S0"), (9.7, 10.5, "S0"), (9.7, 10.5, "S1"), (10.6, 11.0, "S1")])
    exclusive = _ann([(0.5, t_gap + 0.6 + 4.0, "S0"), (9.7, 10.5, "S0"), (10.6, 11.0, "S1")])
    new_full, new_excl = _refine(audio, full, exclusive, shift_s=0.5, pause_s=0.2)
    s0 = new_full.label_timeline("S0").support()
    assert s0.crop(Segment(t_gap + 0.1, t_gap + 0.5)).duration() == 0.0, s0
    assert new_full.get_overlap().duration() == pytest.approx(0.8, abs=0.02)
    assert new_full.label_timeline("S1").support().crop(Segment(10.6, 11.0)).duration() == pytest.approx(0.4, abs=0.02)
    # with pauses off, or in a turn the detector hears less than min_heard of, the bridge stays
    for kwargs in ({"shift_s": 0.0, "pause_s": 0.0}, {"shift_s": 0.5, "pause_s": 0.2, "min_heard": 1.0}):
        kept, _ = _refine(audio, full, exclusive, **kwargs)
        bridge = kept.label_timeline("S0").support().crop(Segment(t_gap, t_gap + 0.6)).duration()
        assert bridge == pytest.approx(0.6, abs=0.02), kwargs


def test_pads_widen_turns_into_free_frames_only(rng):
    audio = (1e-4 * rng.standard_normal(4 * SR)).astype(np.float32)
    ann = _ann([(1.0, 2.0, "A"), (2.05, 3.0, "B")])
    probs = np.zeros(4 * SR // vad.SILERO_CHUNK + 1, np.float32)
    full, _ = R.refine(audio, ann, ann, speech_probs=probs, frame_step=0.032, shift_s=0.0, pause_s=0.0,
                       pad_onset_s=0.1, pad_offset_s=0.1)
    a, b = full.label_timeline("A").support(), full.label_timeline("B").support()
    assert a[0].start == pytest.approx(0.9) and b[0].end == pytest.approx(3.1)
    assert not full.get_overlap(), "a pad never takes a frame another speaker holds"


def test_recovered_speech_gets_the_nearest_speaker_or_stays_unlabelled(female_and_male_voices, campp):
    """A 0-6 s, B 6.5-12.5 s labelled; A speaks again at 13.5-16.5 s with no label."""
    female, male = female_and_male_voices
    a = np.concatenate(female[4:6])
    b = np.concatenate(male[4:6])[: 6 * SR]
    pause = np.zeros(SR, np.float32)
    audio = np.concatenate([a[: 6 * SR], pause[: SR // 2], b, pause, a[6 * SR : 9 * SR], pause]).astype(np.float32)
    ann = _ann([(0.0, 6.0, "SPEAKER_00"), (6.5, 12.5, "SPEAKER_01")])
    full, exclusive = _refine(audio, ann, shift_s=0.0, pause_s=0.0, max_distance=0.7, embedding=campp)
    recovered = full.crop(Segment(13.5, 16.5))
    # Silero hears 13.8-15.4 s of it (then a pause): that is given to A
    assert recovered.label_timeline("SPEAKER_00").duration() >= 1.4, recovered
    assert recovered.label_timeline("SPEAKER_01").duration() == 0.0
    assert not exclusive.get_overlap()
    # a threshold no voice meets leaves it unlabelled
    strict, _ = _refine(audio, ann, shift_s=0.0, pause_s=0.0, max_distance=0.01, embedding=campp)
    assert strict.crop(Segment(13.5, 16.5)).get_timeline().duration() == 0.0
