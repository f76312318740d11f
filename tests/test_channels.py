"""Channels as speakers (tasks/diarization/channels.py, tasks/audio.load_channels) on real LibriSpeech voices
with real noise: a simulated stereo call splits, its bleed is not speech, its overlap is kept;
dual-mono and same-voice channels are mixed."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from pyannote.core import Segment, Timeline

from tasks.core.timebase import SAMPLE_RATE
from tasks.audio.decode import load_audio, load_channels
from tasks.diarization.channels import channel_labels, decide_channel_mode, diarize_channels
from tasks.core.config import DiarizationConfig

SR = SAMPLE_RATE
CFG = DiarizationConfig()


def _utterances(shared: Path) -> dict[str, list[Path]]:
    root = shared / "librispeech" / "test-other"
    by: dict[str, list[Path]] = {}
    with open(root / "speakers.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            by.setdefault(row["speaker_id"], []).append(root / row["file"])
    return {k: sorted(v) for k, v in sorted(by.items())}


def _read(path: Path) -> np.ndarray:
    x, sr = sf.read(path, dtype="float32")
    assert sr == SR
    return x


@pytest.fixture(scope="session")
def embedder():
    from tasks.speakers.campplus import load_embedding_model

    return load_embedding_model(CFG.embedding_model, "cpu")


def _call(a: np.ndarray, b: np.ndarray, noise: np.ndarray, *, bleed: float = 0.15, delay_s: float = 0.01,
          overlap_s: float = 1.5, gain_a: float = 1.0, snr_db: float = 20.0) -> tuple[np.ndarray, dict]:
    """Voice ``a`` (times ``gain_a``) on channel 0, then ``b`` on channel 1 starting
    ``overlap_s`` before ``a`` ends; each channel hears the other at ``bleed`` of its amplitude
    ``delay_s`` late, plus its own stretch of real noise at ``snr_db`` against its voice."""
    a = a * gain_a
    start_a = int(0.5 * SR)
    start_b = start_a + a.size - int(overlap_s * SR)
    n = start_b + b.size + int(0.5 * SR)
    clean = np.zeros((2, n), np.float32)
    clean[0, start_a : start_a + a.size] = a
    clean[1, start_b : start_b + b.size] = b
    d = int(delay_s * SR)
    mixed = clean.copy()
    mixed[0, d:] += bleed * clean[1, : n - d]
    mixed[1, d:] += bleed * clean[0, : n - d]
    for c in (0, 1):
        piece = noise[c * n : (c + 1) * n]
        piece = piece * (np.sqrt(np.mean(clean[c][clean[c] != 0] ** 2) / np.mean(piece ** 2)) / 10 ** (snr_db / 20))
        mixed[c] += piece
    spans = {"a": Segment(start_a / SR, (start_a + a.size) / SR), "b": Segment(start_b / SR, (start_b + b.size) / SR),
             # both voiced (within 20 dB of the loudest: the second file's leading breath at -21 to
             # -26 dB is not talking over the first)
             "both": _talking(clean[0], 20.0).crop(_talking(clean[1], 20.0), mode="intersection")}
    return mixed, spans


def _talking(x: np.ndarray, within_db: float = 25.0) -> Timeline:
    """Where a clean source talks: 10 ms frames within ``within_db`` of its loudest, gaps < 0.2 s
    filled."""
    frames = x[: x.size // 160 * 160].reshape(-1, 160)
    e = np.mean(frames.astype(np.float64) ** 2, axis=1)
    on = e > e.max() * 10 ** (-within_db / 10)
    segs = Timeline([Segment(i * 0.01, (i + 1) * 0.01) for i in np.flatnonzero(on)]).support(collar=0.2)
    return segs


@pytest.fixture(scope="module")
def call(shared_data: Path):
    voices = _utterances(shared_data)
    ids = list(voices)
    a, b = _read(voices[ids[0]][3]), _read(voices[ids[1]][3])  # a man and a woman
    noise = _read(shared_data / "noise" / "speech-commands" / "running_tap.wav")
    return _call(a, b, noise)


@pytest.fixture(scope="module")
def decision(call, embedder):
    return decide_channel_mode(call[0], mode="auto", config=CFG, embedder=embedder)


def test_load_channels_keeps_channels_apart(tmp_path: Path, call) -> None:
    """A 44.1 kHz stereo file under a hostile name comes back as (2, n) at 16 kHz whose mean is
    load_audio's mono; a mono file is one row."""
    channels, _ = call
    stereo = tmp_path / "-rf call 日本.wav"
    import soxr

    sf.write(stereo, soxr.resample(channels.T, SR, 44100), 44100, subtype="FLOAT")
    got, info = load_channels(stereo)
    mono, _ = load_audio(stereo)
    assert got.shape[0] == 2 and got.dtype == np.float32 and info.channels == 2
    assert abs(got.shape[1] - channels.shape[1]) <= 2 and got.shape[1] == mono.shape[0] == info.num_samples
    np.testing.assert_allclose(got.mean(axis=0), mono, atol=1e-5)
    # the channels are not swapped or mixed: channel 0 is the first voice's channel
    n = min(got.shape[1], channels.shape[1])
    assert np.corrcoef(got[0, :n], channels[0, :n])[0, 1] > 0.99
    one = tmp_path / "mono.flac"
    sf.write(one, channels[0], SR)
    got1, _ = load_channels(one)
    assert got1.shape == (1, channels.shape[1])


def test_auto_splits_a_stereo_call(decision) -> None:
    assert decision.mode == "split", decision.reason
    assert "different voices" in decision.reason
    assert decision.figures["correlation"] < 0.5 and decision.figures["bleed_db"] < -10
    assert decision.to_dict()["mode"] == "split" and "activity" not in decision.to_dict()


def test_bleed_is_not_speech_and_overlap_stays(call, decision) -> None:
    channels, spans = call
    result = diarize_channels(channels, config=CFG, names=["agent", "customer"], activity=decision.activity)
    ann = result.annotation
    assert sorted(ann.labels()) == ["agent", "customer"]
    agent, customer = ann.label_timeline("agent").support(), ann.label_timeline("customer").support()
    a, b = spans["a"], spans["b"]
    only_b = Timeline([Segment(a.end + 0.3, b.end)])  # the customer alone: the agent channel has bleed only
    only_a = Timeline([Segment(a.start, b.start - 0.3)])
    assert agent.crop(only_b).duration() < 0.3
    assert customer.crop(only_a).duration() < 0.3
    # each voice's own speech is found (pauses inside utterances are not speech). The spans are
    # the files': the agent's 5.06 s hold ~0.5 s of silence before its first word, ~0.5 s after
    # its last and a 0.3 s pause, ~3.6 s of speech, of which 3.44 s is found (pause edges and
    # turn tails at the noise floor are not speech)
    assert agent.crop(Timeline([a])).duration() > 0.65 * a.duration
    assert customer.crop(Timeline([b])).duration() > 0.7 * b.duration
    # both talk in the overlap: kept as overlap in the annotation, not in the exclusive one
    both = spans["both"]
    assert both.duration() > 0.5
    assert ann.get_overlap().crop(both).duration() > 0.5 * both.duration()
    assert not result.exclusive.get_overlap()


def test_bleed_path_is_measured_and_cancelled(call, decision) -> None:
    """The 15 % bleed 10 ms late is found (delay, gain) and cancelled to far below it; the
    manifest's figures say so."""
    from tasks.diarization.channels import bleed_filters, cancel_bleed

    channels, spans = call
    paths = decision.figures["bleed_paths"]
    for pair in ("0-1", "1-0"):
        assert abs(paths[pair]["delay_ms"] - 10.0) <= 0.5, paths
        # the other channel's own noise biases the least-squares gain low (by ~2 dB here)
        assert abs(paths[pair]["bleed_db"] - 20 * np.log10(0.15)) < 3.0, paths
        assert paths[pair]["residual_db"] < paths[pair]["bleed_db"], paths  # leak + noise excursions
    act = decision.activity
    heard = act.speech.any(axis=0)
    filters, _ = bleed_filters(channels, talking=np.stack([heard, heard]), frame_start=act.frame_start,
                               frame_step=act.frame_step)
    # where only the customer talks, the agent's channel keeps its noise, not the customer
    a, b = spans["a"], spans["b"]
    lo, hi = int((a.end + 0.3) * SR), int((b.end - 0.3) * SR)
    left = cancel_bleed(channels, filters, channel=0)
    d = int(0.01 * SR)

    def with_customer(x: np.ndarray) -> float:  # correlation with the customer 10 ms earlier
        return float(np.corrcoef(x[lo + d : hi], channels[1, lo : hi - d])[0, 1])

    assert with_customer(channels[0]) > 0.3 and abs(with_customer(left)) < 0.05


def test_a_quiet_voice_in_running_water_keeps_its_speech(shared_data: Path, embedder) -> None:
    """Issue 24: a voice 6 dB quieter than the other channel's, running-tap noise at 10 dB SNR
    on its channel, 20 % bleed from the louder voice: split, its utterance kept whole, the
    other's bleed not its speech."""
    voices = _utterances(shared_data)
    ids = list(voices)
    noise = _read(shared_data / "noise" / "speech-commands" / "running_tap.wav")
    channels, spans = _call(_read(voices[ids[2]][4]), _read(voices[ids[3]][4]), noise, bleed=0.2, delay_s=0.015,
                            gain_a=0.5, snr_db=10.0)
    d = decide_channel_mode(channels, mode="auto", config=CFG, embedder=embedder)
    assert d.mode == "split", d.reason
    ann = diarize_channels(channels, config=CFG, activity=d.activity).annotation
    quiet = ann.label_timeline("CH0").support()
    a, b = spans["a"], spans["b"]
    voiced = _talking(np.r_[np.zeros(int(a.start * SR)), _read(voices[ids[2]][4])]).crop(Timeline([a]))
    assert quiet.crop(voiced, mode="intersection").duration() > 0.9 * voiced.duration()
    assert quiet.crop(Timeline([Segment(a.end + 0.3, b.end)])).duration() < 0.3


def test_dual_mono_is_never_split(call, embedder) -> None:
    mix = call[0].mean(axis=0)
    rng = np.random.default_rng(0)
    for copy in (np.stack([mix, mix]), np.stack([mix, 0.7 * mix + 1e-3 * rng.standard_normal(mix.size).astype(np.float32)])):
        d = decide_channel_mode(copy, mode="auto", config=CFG, embedder=embedder)
        assert d.mode == "mix" and "same signal" in d.reason and d.figures["correlation"] > 0.95


def test_one_voice_on_two_channels_is_mixed(shared_data: Path, embedder) -> None:
    """Two channels that do not bleed into each other but carry one person: not split."""
    voices = _utterances(shared_data)
    v = voices[list(voices)[0]]
    noise = _read(shared_data / "noise" / "speech-commands" / "exercise_bike.wav")
    channels, _ = _call(_read(v[4]), _read(v[5]), noise, overlap_s=0.0)
    d = decide_channel_mode(channels, mode="auto", config=CFG, embedder=embedder)
    assert d.mode == "mix" and "same voice" in d.reason, d.reason


def test_modes_and_mono(call) -> None:
    channels, _ = call
    assert decide_channel_mode(channels, mode="mix", config=CFG).mode == "mix"
    assert decide_channel_mode(channels, mode="split", config=CFG).mode == "split"
    mono = decide_channel_mode(channels[:1], mode="split", config=CFG)
    assert mono.mode == "mix" and mono.reason == "mono recording"


def test_channel_labels() -> None:
    assert channel_labels(count=2) == ["CH0", "CH1"]
    assert channel_labels(count=2, names=["agent", "customer", "extra"]) == ["agent", "customer"]
    with pytest.raises(ValueError, match="1 names for 2 channels"):
        channel_labels(count=2, names=["agent"])


def test_config_keys() -> None:
    from tasks.core.config import ConfigError, load_config

    cfg = load_config(None, ["diarization.channels=split", "diarization.channel_names=[agent, customer]"])
    assert cfg.diarization.channels == "split" and cfg.diarization.channel_names == ["agent", "customer"]
    assert load_config(None, []).diarization.channels == "auto"
    with pytest.raises(ConfigError):
        load_config(None, ["diarization.channels=stereo"])
    with pytest.raises(ConfigError):
        load_config(None, ["diarization.channel_names=[a, a]"])


def test_raw_stretches_sample_the_whole_call() -> None:
    """A call up to the sample is covered whole; a longer one by equal, disjoint, evenly spaced
    stretches from its first sample to its last, totalling the sample."""
    from tasks.diarization.channels import raw_stretches

    assert raw_stretches(n=100 * SR, sample_s=240.0) == [(0, 100 * SR)]
    assert raw_stretches(n=240 * SR, sample_s=240.0) == [(0, 240 * SR)]
    for minutes in (4.1, 20, 60, 600):
        n = int(minutes * 60 * SR)
        got = raw_stretches(n=n, sample_s=240.0, stretch_s=60.0)
        assert len(got) == 4 and got[0][0] == 0 and got[-1][1] == n
        assert {b - a for a, b in got} == {60 * SR}
        assert all(b <= a2 for (_, b), (a2, _) in zip(got, got[1:]))
        starts = np.diff([a for a, _ in got])
        assert starts.max() - starts.min() <= 1
    assert sum(b - a for a, b in raw_stretches(n=3600 * SR, sample_s=100.0, stretch_s=30.0)) <= 100 * SR


def test_raw_samples_grow_to_the_whole_call() -> None:
    """A short call is covered whole at once; a long one by samples that double from the first
    size and end with the whole call."""
    from tasks.diarization.channels import raw_samples

    assert raw_samples(n=200 * SR, whole_s=240.0) == [[(0, 200 * SR)]]
    n = 20 * 60 * SR
    got = raw_samples(n=n, whole_s=240.0, sample_s=60.0, stretch_s=15.0)
    sizes = [sum(b - a for a, b in stretches) / SR for stretches in got]
    assert sizes == [60.0, 120.0, 240.0, 480.0, 960.0, 1200.0] and got[-1] == [(0, n)]
    assert all(b - a <= 15 * SR for stretches in got[:-1] for a, b in stretches)
    assert all(s[0][0] == 0 and s[-1][1] == n for s in got)


def test_raw_pass_on_a_sample_of_the_call(call, decision, monkeypatch) -> None:
    """The detector's pass before cancellation runs on the sample's stretches only, their frames
    placed at their time on the call's grid; a short call gets the whole pass (and each
    channel's audio goes through the detector once per pass); samples with too few bleed-path
    frames grow to the whole call."""
    from tasks.diarization import channels as mod

    channels, _ = call
    n = channels.shape[1]
    assert decision.figures["raw_pass_s"] == pytest.approx(n / SR, abs=0.1)
    whole, seen, start, step = mod.raw_speech(channels, stretches=[(0, n)], model_ref=CFG.segmentation_model)
    assert seen.all()
    part = (n // 3, 2 * n // 3)
    probs, seen, start2, step2 = mod.raw_speech(channels, stretches=[part], model_ref=CFG.segmentation_model)
    assert (start2, step2) == (start, step) and probs.shape[1] <= whole.shape[1]
    times = start + step * np.flatnonzero(seen)
    assert times.min() >= part[0] / SR - step and times.max() < part[1] / SR
    assert seen.sum() * step == pytest.approx((part[1] - part[0]) / SR, abs=2 * step)
    assert not probs[:, ~seen].any()
    # in place: the stretch's speech is where the whole pass hears it (a shift would break this)
    heard, heard_whole = probs[:, seen] > 0.5, whole[:, : probs.shape[1]][:, seen] > 0.5
    assert np.mean(heard == heard_whole) > 0.9

    runs: list[int] = []
    real = mod.speech_probability

    def counted(audio, **kw):
        runs.append(len(audio))
        return real(audio, **kw)

    monkeypatch.setattr(mod, "speech_probability", counted)
    ev = mod.channel_evidence(channels, config=CFG)
    assert sum(runs) == 2 * n + n * sum(any(k[1] == c for k in ev.filters) for c in range(2))
    runs.clear()
    mod.channel_evidence(channels[:1], config=CFG, whole_s=0.0, sample_s=4.0, stretch_s=2.0)
    assert runs == [n]  # one channel: nothing to measure or cancel, one pass over all of it
    runs.clear()
    # samples of 4 s and 8 s in 2 s stretches, each too thin, then the whole call
    fallback = mod.channel_evidence(channels, config=CFG, whole_s=0.0, sample_s=4.0, stretch_s=2.0,
                                    enough_frames=10**6)
    assert runs[:12] == [2 * SR] * 12 and runs[12:14] == [n, n]
    assert fallback.facts["raw_pass_s"] == pytest.approx(n / SR, abs=0.1)
    np.testing.assert_array_equal(fallback.probs, ev.probs)
    np.testing.assert_array_equal(fallback.heard_raw, ev.heard_raw)


def test_pauses_the_detector_held_are_cut_only_on_loud_channels() -> None:
    """A quarter second or more at the noise floor inside speech the detector holds at 0.99 is
    cut on a channel whose speech is 20 dB over its floor, kept on one whose speech is 8 dB
    over it (a quiet word there sits near the floor); a short dip (a stop) is never cut."""
    from tasks.diarization.channels import PAUSE_CUT_MIN_SNR_DB, PAUSE_MIN_S, ChannelEvidence, decide_activity

    step, frames = 0.016, 700
    probs = np.full((2, frames), 0.01)
    energy = np.ones((2, frames))  # the noise floor: 1.0
    talk = [slice(50, 330), slice(360, 640)]  # the two channels take turns
    for c, level_db in ((0, 20.0), (1, 8.0)):
        probs[c, talk[c]] = 0.99
        energy[c, talk[c]] = 10 ** (level_db / 10)
    pauses = [slice(150, 175), slice(460, 485)]  # 0.40 s at the floor inside each channel's speech
    dips = [slice(250, 260), slice(560, 570)]  # 0.16 s
    for c in (0, 1):
        energy[c, pauses[c]] = energy[c, dips[c]] = 1.0
    assert 25 * step >= PAUSE_MIN_S > 10 * step
    ev = ChannelEvidence(probs=probs, energy=energy, inside=np.ones(frames, bool),
                         heard_raw=np.zeros((2, frames), bool), raw_seen=np.ones(frames, bool),
                         frame_start=0.0, frame_step=step, duration=frames * step, filters={}, facts={})
    act = decide_activity(ev)
    sp = act.speech
    assert not sp[0, pauses[0]].any() and sp[0, dips[0]].all()  # the loud channel: its pause is cut
    assert sp[0, 50:150].all() and sp[0, 175:330].all() and not sp[0, 330:].any()
    assert sp[1, talk[1]].all() and not sp[1, :360].any()  # the quiet channel: nothing cut
    snr = act.facts["speech_snr_db"]
    assert snr[0] == pytest.approx(20.0, abs=0.1) and snr[1] == pytest.approx(8.0, abs=0.1) and snr[1] < PAUSE_CUT_MIN_SNR_DB
    assert act.facts["pauses_cut_s"] == [pytest.approx(0.4), 0.0]
    assert act.facts["speech_s"] == [pytest.approx(280 * step - 0.4, abs=0.02), pytest.approx(280 * step, abs=0.02)]
