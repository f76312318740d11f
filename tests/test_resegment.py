"""Embedding resegmentation with the real CAM++ weights on real LibriSpeech voices."""

from __future__ import annotations


import numpy as np
import pytest
from pyannote.core import Annotation, Segment

from tasks.diarization import pipeline as D
from tasks.core.config import DiarizationConfig
from tasks.diarization.resegment import _windows, resegment

SR = 16000


@pytest.fixture(scope="module")
def campp():
    with D.torch_threads(1):
        yield D.load_embedding_model(device="cpu")


def _ann(tracks: list[tuple[float, float, str]], uri: str = "rec") -> Annotation:
    ann = Annotation(uri=uri)
    for a, b, lab in tracks:
        ann[Segment(a, b), ann.new_track(Segment(a, b))] = lab
    return ann


def test_windows_tile_the_region_and_end_flush():
    starts = _windows(2.0, 4.6, 1.0, 0.25)
    assert starts[0] == 2.0 and starts[-1] == pytest.approx(3.6)
    assert np.allclose(np.diff(starts)[:-1], 0.25)
    assert _windows(0.0, 0.9, 1.0, 0.25) == []


def test_merged_voice_is_given_back_to_its_speaker(female_and_male_voices, campp):
    """A: 0-8 s and B: 8-10 s labelled as one speaker, B: 10-14 s as another -> 8-10 s moves to B."""
    female, male = female_and_male_voices
    a, b = np.concatenate(female)[: int(8.0 * SR)], np.concatenate(male)[: int(6.0 * SR)]
    audio = np.concatenate([a, b]).astype(np.float32)
    exclusive = _ann([(0.0, 10.0, "SPEAKER_00"), (10.0, 14.0, "SPEAKER_01")])
    full = _ann([(0.0, 10.0, "SPEAKER_00"), (10.0, 14.0, "SPEAKER_01"), (13.0, 14.0, "SPEAKER_00")])

    new_full, new_exclusive = resegment(audio, full, exclusive, embedding=campp, window_s=1.0, hop_s=0.25)

    b_part = new_exclusive.label_timeline("SPEAKER_01").support()
    a_part = new_exclusive.label_timeline("SPEAKER_00").support()
    # most of 8-10 s is now SPEAKER_01, and the first speaker keeps (nearly all of) 0-8 s
    assert b_part.crop(Segment(8.0, 10.0)).duration() >= 1.5
    assert a_part.crop(Segment(0.0, 7.5)).duration() >= 7.0
    # speech is relabelled, never added or removed; the exclusive output has no overlap
    assert new_exclusive.get_timeline().support().duration() == pytest.approx(14.0, abs=1e-6)
    assert not new_exclusive.get_overlap()
    # the overlap region 13-14 s keeps both speakers in the full annotation
    assert new_full.get_overlap().duration() == pytest.approx(1.0, abs=1e-6)
    assert new_full.uri == "rec" and new_exclusive.uri == "rec"


def test_one_speaker_or_short_speech_is_left_alone(campp, rng):
    audio = (0.01 * rng.standard_normal(5 * SR)).astype(np.float32)
    one = _ann([(0.0, 5.0, "SPEAKER_00")])
    assert resegment(audio, one, one, embedding=campp) == (one, one)
    short = _ann([(0.0, 0.6, "SPEAKER_00"), (1.0, 1.5, "SPEAKER_01")])
    full, exclusive = resegment(audio, short, short, embedding=campp)
    assert full is short and exclusive is short


def test_pipeline_option_turns_resegmentation_off():
    on = DiarizationConfig(device="cpu")
    off = on.model_copy(update={"resegment_window_s": 0.0})
    assert on.resegment_window_s == 1.0
    assert D.load_diarization_pipeline(off).resegment_window_s == 0.0
    assert D.load_diarization_pipeline(on) is not D.load_diarization_pipeline(off)
