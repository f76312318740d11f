"""Stereo calls split by channel, known speakers named, speakers linked across recordings.

One run prints every figure of issue 15's targets (``benchmarks/calls_and_speakers.results.txt``):

Simulated stereo calls
    LibriSpeech test-other (10 voices x 10 utterances, ``../shared/data``): call ``k`` puts voice
    ``k`` on channel 0 and voice ``k+1`` (mod 10) on channel 1, 4 utterances each (utterances
    2-9 of a voice; 0-1 are kept for enrolment), turns alternating with pauses of 0.3-1.2 s and
    short overlaps (a turn starts 0.8-1.6 s before the other's file ends, whose last 0.2-0.5 s
    are silence) in about a third of them.
    Each channel hears the other at 10-15 % of its amplitude, 0-20 ms late, and its own real
    noise (``noise/``) at 20 dB SNR (against that channel's active speech). Reference: frames of
    10 ms where a clean source's energy is within 3 dB of the noise floor or above it (floor: the
    channel's added noise plus the utterance's own recording background, its 20th-percentile
    frame energy; LibriSpeech's background is itself only ~20 dB down for some voices), pauses
    of 0.2 s or more are non-speech.
DER
    pyannote.metrics, overlap scored, collar 0 and the 0.25 s telephone collar (±0.25 s around
    every reference boundary: ``collar=0.5`` in pyannote.metrics, which splits it in two);
    ``auto`` (tasks.diarization.channels) beside mono diarization of the mix (tasks.diarization.pipeline.diarize, the
    pipeline's default config); dual-mono copies of the calls must be mixed by ``auto``.
Known speakers
    Voices 0, 2, 4, 6, 8 enrolled from their utterances 0-1; the others are not enrolled.
    Figures: of the speech the run gives an enrolled voice (reference voice v, output label
    mapped to v), the share carrying v's name; the share of v's reference speech carrying its
    name; for voices not enrolled, the share of their speech carrying any enrolled name. Naming
    and linking are scored on single-voice reference speech (in an overlap both voices' labels
    are right, so it cannot tell names apart); the share left out is printed.
Linking
    The 10 calls' split speakers linked without names (tasks.speakers.voiceprints.link_speakers): share of
    speech time in a global speaker whose majority voice is the right one.
Thresholds (--tune)
    Cosine similarity of enrolment vectors to call centroids, same voice vs different voices,
    and of call centroids to each other: the figures behind ``known_threshold`` and
    ``link_threshold``.

Run: ``OMP_NUM_THREADS=1 python benchmarks/calls_and_speakers.py``.
"""

from __future__ import annotations

import csv
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
LIBRI = DATA / "librispeech" / "test-other"
NOISES = sorted((DATA / "noise").rglob("*.wav"))
SR = 16000
FRAME = 160  # 10 ms reference frames
ENROLLED = (0, 2, 4, 6, 8)


def voices() -> list[list[Path]]:
    """10 voices x 10 utterance paths (test-other, speakers.csv order)."""
    by: dict[str, list[Path]] = {}
    with open(LIBRI / "speakers.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            by.setdefault(row["speaker_id"], []).append(LIBRI / row["file"])
    return [sorted(v) for _, v in sorted(by.items())]


def _read(path: Path) -> np.ndarray:
    x, sr = sf.read(path, dtype="float32")
    assert sr == SR
    return x if x.ndim == 1 else x.mean(axis=1)


def _noise(rng: np.random.Generator, n: int, path: Path | None = None, *, copy: int = 0) -> np.ndarray:
    """``n`` samples of real noise from ``path`` (default: a random one of ``NOISES``), from a
    random start, looped when the file is shorter.

    ``copy`` (a call's channel) keeps channels' excerpts of one file independent, as on a real
    call (no two microphones hear sample-identical noise): copy ``k`` draws from the ``k``-th
    of two disjoint halves of the file when it holds 2 ``n`` samples, and otherwise copy 1 is
    the file played backwards (same spectrum and level, a different waveform), looped from its
    own random start."""
    x = _read(path if path is not None else NOISES[int(rng.integers(len(NOISES)))])
    if copy % 2 and x.shape[0] < 2 * n:
        x = x[::-1]
    elif x.shape[0] >= 2 * n:
        half = x.shape[0] // 2
        x = x[half:] if copy % 2 else x[:half]
    if x.shape[0] < n:
        x = np.tile(x, -(-n // x.shape[0]))
    start = int(rng.integers(0, x.shape[0] - n + 1))
    return x[start : start + n].astype(np.float64)


def _active_power(x: np.ndarray) -> float:
    frames = x[: x.shape[0] // FRAME * FRAME].reshape(-1, FRAME)
    e = np.mean(frames.astype(np.float64) ** 2, axis=1)
    return float(np.mean(e[e > 0.01 * e.max()])) if e.size else 0.0


@dataclass
class Call:
    name: str
    channels: np.ndarray  # (2, n) float32
    reference: "object"   # pyannote Annotation, labels "v{index}"
    voices: tuple[int, int]
    clean: np.ndarray | None = None  # (2, n) each channel's own voice before bleed and noise


def simulate_call(*, name: str, a: int, b: int, utterances: tuple[list[Path], list[Path]],
                  rng: np.random.Generator, bleed: tuple[float, float] = (0.10, 0.15),
                  snr_db: float = 20.0, noises: tuple[Path, Path] | None = None,
                  levels_db: tuple[float, float] = (0.0, 0.0), reference_snr_db: float | None = None) -> Call:
    """Two voices on two channels with bleed, delays, noise, pauses and short overlaps.

    ``noises``: each channel's noise file (default: random ones); ``levels_db``: each
    channel's speech level (gain in dB; the bleed and the SNR follow it);
    ``reference_snr_db``: the reference's floor is the utterance's own background plus noise
    at this SNR instead of the call's (one reference for the same call at every SNR: speech
    that can be heard at 20 dB is the speaker's at 10 dB too)."""
    from pyannote.core import Annotation, Segment

    turns = [(0, u) for u in utterances[0]]
    turns2 = [(1, u) for u in utterances[1]]
    order = [t for pair in zip(turns, turns2) for t in pair]
    clips = [(who, _read(u)) for who, u in order]
    starts, t = [], int(0.5 * SR)
    for k, (_, x) in enumerate(clips):
        starts.append(t)
        if rng.random() < 0.35 and k + 1 < len(clips):
            # next turn starts 0.8-1.6 s before this file ends (LibriSpeech files end with
            # 0.2-0.5 s of silence): about 0.3-1.2 s of both talking
            t += x.shape[0] - int(rng.uniform(0.8, 1.6) * SR)
        else:
            t += x.shape[0] + int(rng.uniform(0.3, 1.2) * SR)   # pause
    n = max(s + x.shape[0] for s, (_, x) in zip(starts, clips)) + int(0.5 * SR)
    clean = np.zeros((2, n))
    background = np.zeros((2, n // FRAME + 1))  # each utterance's own recording noise, per frame
    for s, (who, x) in zip(starts, clips):
        clean[who, s : s + x.shape[0]] += x
        frames = x[: x.shape[0] // FRAME * FRAME].reshape(-1, FRAME).astype(np.float64)
        background[who, s // FRAME : s // FRAME + frames.shape[0]] = np.percentile(np.mean(frames ** 2, axis=1), 20)
    for c in (0, 1):
        if levels_db[c]:
            clean[c] *= 10 ** (levels_db[c] / 20)
            background[c] *= 10 ** (levels_db[c] / 10)
    gains = rng.uniform(*bleed, size=2)
    delays = rng.integers(0, int(0.020 * SR) + 1, size=2)
    mixed = clean.copy()
    for c in (0, 1):
        o = 1 - c
        d = int(delays[o])
        mixed[c, d:] += gains[o] * clean[o, : n - d]
    floors = []
    for c in (0, 1):
        noise = _noise(rng, n, None if noises is None else noises[c], copy=c)
        p_speech, p_noise = _active_power(clean[c]), float(np.mean(noise ** 2))
        noise *= np.sqrt(p_speech / (p_noise * 10 ** (snr_db / 10)))
        mixed[c] += noise
        floors.append(float(np.mean(noise ** 2)) if reference_snr_db is None
                      else p_speech / 10 ** (reference_snr_db / 10))
    reference = Annotation(uri=name)
    for c, voice in ((0, a), (1, b)):
        frames = clean[c, : n // FRAME * FRAME].reshape(-1, FRAME)
        # above the noise floor: the channel's noise plus the utterance's own background, +3 dB
        active = np.mean(frames ** 2, axis=1) > 2 * (floors[c] + background[c, : frames.shape[0]])
        # pauses shorter than 0.2 s are speech
        idx = np.flatnonzero(np.diff(np.r_[0, active.view(np.int8), 0]))
        segs = [(s, e) for s, e in zip(idx[0::2], idx[1::2])]
        merged: list[list[int]] = []
        for s, e in segs:
            if merged and s - merged[-1][1] < 20:
                merged[-1][1] = e
            else:
                merged.append([s, e])
        for s, e in merged:
            reference[Segment(s * 0.01, e * 0.01)] = f"v{voice}"
    peak = np.abs(mixed).max()
    if peak > 0.99:
        mixed *= 0.99 / peak
    return Call(name, mixed.astype(np.float32), reference, (a, b), clean.astype(np.float32))


# --------------------------------------------------------------------------- scoring helpers
def _alone(ref, label):
    """Where reference voice ``label`` speaks and nobody else does."""
    own = ref.label_timeline(label).support()
    overlap = ref.get_overlap()
    return own.extrude(overlap) if overlap else own


def _co(ref, ref_label, hyp, hyp_label) -> float:
    """Seconds where reference ``ref_label`` speaks alone and ``hyp_label`` speaks (naming and
    linking are scored on single-voice reference speech: in overlaps both voices' labels are
    right)."""
    b = hyp.label_timeline(hyp_label).support()
    return float(sum(s.duration for s in _alone(ref, ref_label).crop(b, mode="intersection")))


def _ref_s(ref, label) -> float:
    return float(_alone(ref, label).duration())


def _mapping(ref, hyp) -> dict[str, str]:
    """hypothesis label -> reference voice (pyannote's optimal one-to-one mapping)."""
    from pyannote.metrics.diarization import DiarizationErrorRate

    return {str(h): str(r) for h, r in DiarizationErrorRate().optimal_mapping(ref, hyp).items()}


def build_calls(seed: int) -> list[Call]:
    """10 calls on a ring of voices: call k = voice k (channel 0) and voice k+1 (channel 1)."""
    V = voices()
    rng = np.random.default_rng(seed)
    calls = []
    for k in range(10):
        a, b = k, (k + 1) % 10
        # voice a's utterances 2-5 in its channel-0 call, 6-9 in its channel-1 call
        calls.append(simulate_call(name=f"call{k:02d}", a=a, b=b, utterances=(V[a][2:6], V[b][6:10]), rng=rng))
    return calls


def main() -> None:
    import argparse
    import tempfile

    import torch
    from pyannote.metrics.diarization import DiarizationErrorRate

    from tasks.diarization.channels import decide_channel_mode, diarize_channels
    from tasks.core.config import DiarizationConfig
    from tasks.diarization.pipeline import diarize
    from tasks.speakers.campplus import load_embedding_model
    from tasks.speakers.voiceprints import enroll, current_model, link_speakers, load_voiceprints, name_speakers, speaker_centroids

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="calls' seed (thresholds were chosen with --seed 1)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = DiarizationConfig()
    embedder = load_embedding_model(cfg.embedding_model, "cpu")
    t0 = time.time()
    calls = build_calls(args.seed)
    total_s = sum(c.channels.shape[1] for c in calls) / SR
    print(f"calls: {len(calls)} simulated stereo calls, {total_s / 60:.1f} min, seed {args.seed}; "
          f"bleed 10-15 % each way, 0-20 ms late; real noise at 20 dB SNR")

    metrics = {(sys_, collar): DiarizationErrorRate(collar=collar, skip_overlap=False)
               for sys_ in ("auto", "mono") for collar in (0.0, 0.5)}
    outputs: dict[str, dict[str, object]] = {"auto": {}, "mono": {}}
    cents: dict[str, dict[str, dict[str, np.ndarray]]] = {"auto": {}, "mono": {}}
    voice_of: dict[str, dict[tuple[str, str], str]] = {"auto": {}, "mono": {}}
    split, dual_split, timing = 0, 0, {"auto": 0.0, "mono": 0.0}
    for call in calls:
        t = time.time()
        decision = decide_channel_mode(call.channels, mode="auto", config=cfg, embedder=embedder)
        if decision.mode == "split":
            split += 1
            result = diarize_channels(call.channels, config=cfg, recording_id=call.name, activity=decision.activity)
            channel_of = {f"CH{c}": c for c in range(2)}
            cents["auto"][call.name] = speaker_centroids(call.channels, result.annotation, embedder=embedder,
                                                         channel_of=channel_of)
        else:
            print(f"  {call.name}: auto mixed: {decision.reason}")
            result = diarize(call.channels.mean(axis=0), recording_id=call.name, config=cfg)
            cents["auto"][call.name] = speaker_centroids(call.channels.mean(axis=0), result.annotation, embedder=embedder)
        timing["auto"] += time.time() - t
        outputs["auto"][call.name] = result.annotation
        t = time.time()
        mono = diarize(call.channels.mean(axis=0), recording_id=call.name, config=cfg).annotation
        timing["mono"] += time.time() - t
        outputs["mono"][call.name] = mono
        cents["mono"][call.name] = speaker_centroids(call.channels.mean(axis=0), mono, embedder=embedder)
        for name, hyp in (("auto", result.annotation), ("mono", mono)):
            for collar in (0.0, 0.5):
                metrics[(name, collar)](call.reference, hyp)
            for h, r in _mapping(call.reference, hyp).items():
                voice_of[name][(call.name, h)] = r
        # a dual-mono copy (gain difference, independent faint noise) must never be split
        rng = np.random.default_rng(hash(call.name) % 2**32)
        mix = call.channels.mean(axis=0)
        dual = np.stack([mix, 0.8 * mix + 0.001 * rng.standard_normal(mix.shape[0]).astype(np.float32)])
        if decide_channel_mode(dual, mode="auto", config=cfg, embedder=embedder).mode == "split":
            dual_split += 1
    ref_total = sum(c.reference.get_timeline().support().duration() for c in calls)
    ref_overlap = sum(c.reference.get_overlap().duration() for c in calls)
    print(f"reference speech {ref_total:.0f} s, of which overlapped {100 * ref_overlap / ref_total:.1f} %")
    print(f"\nauto: split {split}/{len(calls)} stereo calls; dual-mono copies split: {dual_split}/{len(calls)} (target 0)")
    print(f"\nDER (overlap scored)            collar 0      collar 0.25 s (±0.25, target <= 3 %)   seconds")
    for name, label in (("auto", "auto (channels split)"), ("mono", "mono diarization of the mix")):
        d0, d25 = (abs(metrics[(name, c)]) for c in (0.0, 0.5))
        parts = metrics[(name, 0.5)][:]
        tot = parts["total"]
        detail = (f"miss {100 * parts['missed detection'] / tot:.1f} / FA {100 * parts['false alarm'] / tot:.1f} / "
                  f"conf {100 * parts['confusion'] / tot:.1f}")
        print(f"{label:<32}{100 * d0:6.2f} %     {100 * d25:6.2f} %  ({detail})      {timing[name]:6.1f}")

    # ---------------------------------------------------------------- known speakers
    V = voices()
    with tempfile.TemporaryDirectory() as store:
        for v in ENROLLED:
            enroll(f"voice{v}", V[v][0:2], store=store, embedder=embedder)
        prints = load_voiceprints(store=store, model_sha256=current_model()[1])
    print(f"\nknown speakers: enrolled voices {', '.join(f'v{v}' for v in ENROLLED)} from utterances 0-1 "
          f"(not in the calls); threshold {cfg.known_threshold}")
    for name in ("auto", "mono"):
        same, diff = [], []
        for (rec, label), voice in voice_of[name].items():
            c = cents[name][rec].get(label)
            if c is None:
                continue
            for n, vec in prints.items():
                (same if n == "voice" + voice[1:] else diff).append(float(np.dot(c, vec)))
        print(f"  {name}: cosine(centroid, voiceprint): same voice min {min(same):.3f} / 5th pct "
              f"{np.percentile(same, 5):.3f} / median {np.median(same):.3f}; other voices max {max(diff):.3f} / "
              f"95th pct {np.percentile(diff, 95):.3f} / median {np.median(diff):.3f}")
    for name in ("auto", "mono"):
        named_ok = attributed = ref_enrolled = leak = ref_other = wrong_name = named_total = 0.0
        for call in calls:
            hyp = outputs[name][call.name]
            naming = name_speakers(cents[name][call.name], prints, threshold=cfg.known_threshold)
            for voice in (f"v{call.voices[0]}", f"v{call.voices[1]}"):
                enrolled = int(voice[1:]) in ENROLLED
                for h in hyp.labels():
                    co = _co(call.reference, voice, hyp, h)
                    given = naming.get(str(h), str(h))
                    if enrolled:
                        if voice_of[name].get((call.name, str(h))) == voice:
                            attributed += co
                            named_ok += co if given == f"voice{voice[1:]}" else 0.0
                    elif given in prints:
                        leak += co
                    if given in prints:
                        named_total += co
                        wrong_name += co if given != f"voice{voice[1:]}" else 0.0
                if enrolled:
                    ref_enrolled += _ref_s(call.reference, voice)
                else:
                    ref_other += _ref_s(call.reference, voice)
        hit = 0.0
        for call in calls:
            hyp = outputs[name][call.name]
            naming = name_speakers(cents[name][call.name], prints, threshold=cfg.known_threshold)
            for voice in (f"v{call.voices[0]}", f"v{call.voices[1]}"):
                if int(voice[1:]) in ENROLLED:
                    hit += sum(_co(call.reference, voice, hyp, h) for h in hyp.labels()
                               if naming.get(str(h)) == f"voice{voice[1:]}")
        print(f"  {name}: speech attributed to an enrolled voice carrying its name {100 * named_ok / attributed:.1f} % "
              f"(target >= 95); its reference speech carrying its name {100 * hit / ref_enrolled:.1f} % (>= 90); "
              f"not-enrolled voices' speech carrying an enrolled name {100 * leak / ref_other:.1f} % (<= 5); "
              f"named speech with a wrong name {100 * wrong_name / max(named_total, 1e-9):.1f} %")

    # ---------------------------------------------------------------- linking
    print(f"\nlinking across the {len(calls)} calls (no names), threshold {cfg.link_threshold}")
    for name in ("auto", "mono"):
        same, diff = [], []
        items = [(rec, lab, vec) for rec, cs in cents[name].items() for lab, vec in cs.items()]
        for i, (r1, l1, v1) in enumerate(items):
            for r2, l2, v2 in items[i + 1 :]:
                if r1 == r2:
                    continue
                s = float(np.dot(v1, v2))
                (same if voice_of[name].get((r1, l1)) == voice_of[name].get((r2, l2)) else diff).append(s)
        print(f"  {name}: cosine between calls' centroids: same voice min {min(same):.3f} / median "
              f"{np.median(same):.3f}; other voices max {max(diff):.3f} / 95th pct {np.percentile(diff, 95):.3f}")
    for name in ("auto", "mono"):
        gids = link_speakers(cents[name], threshold=cfg.link_threshold)
        time_by: dict[str, dict[str, float]] = {}
        for call in calls:
            hyp = outputs[name][call.name]
            for h in hyp.labels():
                g = gids.get((call.name, str(h)))
                if g is None:
                    continue
                for voice in (f"v{call.voices[0]}", f"v{call.voices[1]}"):
                    time_by.setdefault(g, {}).setdefault(voice, 0.0)
                    time_by[g][voice] += _co(call.reference, voice, hyp, h)
        right = sum(max(v.values()) for v in time_by.values())
        total = sum(sum(v.values()) for v in time_by.values())
        majority = {g: max(v, key=v.get) for g, v in time_by.items()}
        print(f"  {name}: {len(time_by)} global speakers for 10 voices; speech time in a global speaker whose majority "
              f"voice is right {100 * right / total:.1f} % (target >= 95); voices split over several ids: "
              f"{sum(1 for v in set(majority.values()) if list(majority.values()).count(v) > 1)}")
    print(f"\nwall time {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
