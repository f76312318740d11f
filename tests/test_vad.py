"""Voice activity with pyannote segmentation-3.0 (real weights, real AMI audio)."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.audio import vad
from tasks.diarization.segments import subtract, total, union


def test_regions_from_probability():
    probs = np.array([0.1, 0.9, 0.8, 0.2, 0.7, 0.1])
    regions = vad.regions_from_probability(probs, frame_start=0.005, frame_step=0.01, threshold=0.5)
    assert regions == [(0.01, 0.03), (0.04, 0.05)]
    assert all(type(a) is float and type(b) is float for a, b in regions)
    assert vad.regions_from_probability(probs, frame_start=0.005, frame_step=0.01, threshold=0.95) == []


def test_empty_and_silent_audio():
    assert vad.speech_regions(np.zeros(0, np.float32)) == []
    assert vad.speech_regions(np.zeros(16000 * 3, np.float32)) == []


def test_matches_ami_reference(shared_data):
    from tasks.audio.decode import load_audio

    audio, _ = load_audio(shared_data / "ami" / "dev00.flac")
    ref = []
    for line in (shared_data / "ami" / "debug.development.rttm").read_text().splitlines():
        f = line.split()
        if f and f[1] == "dev00":
            ref.append((float(f[3]), float(f[3]) + float(f[4])))
    ref = union(ref)
    hyp = vad.speech_regions(audio)
    assert hyp == sorted(hyp) and all(0 <= a < b <= 30.0 for a, b in hyp)
    miss = total(subtract(ref, hyp))
    false_alarm = total(subtract(hyp, ref))
    assert (miss + false_alarm) / total(ref) < 0.15, (miss, false_alarm, total(ref))
    # the model is loaded once per process
    assert vad._inference(vad.SEGMENTATION_MODEL, vad.DEFAULT_STEP_S) is vad._inference(
        vad.SEGMENTATION_MODEL, vad.DEFAULT_STEP_S
    )


def test_rejects_other_sample_rates():
    with pytest.raises(ValueError):
        vad.speech_probability(np.zeros(8000, np.float32), sample_rate=8000)
