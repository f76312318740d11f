"""Measured quality of the denoise stage on real speech mixed with real noise.

Each trial builds a ~20 s "conversation": three LibriSpeech test-other utterances of different
speakers, with 0.6-1.6 s pauses between them and ~1 s of lead-in/tail, plus a real noise
recording (``noise/speech-commands`` or ``noise/misc``, looped if short) scaled so that the SNR
over the *active speech* samples is 0, 5 or 10 dB. The clean signal is known, so per method:

* **SI-SDR improvement** (dB): SI-SDR(denoised, clean) - SI-SDR(noisy, clean), whole file.
* **VAD proxy** for the diarization effect (diarization is not in this branch): speech-detection
  error (missed + false alarm, as a fraction of clean speech time) and F1 of pyannote
  segmentation-3.0 VAD on the noisy vs the denoised audio, both scored against the same VAD on
  the *clean* signal. ``dDetErr`` < 0 means denoising helps the VAD.
* **RTF**: denoise seconds / audio seconds, VAD excluded (regions are passed in), one thread.

The real diarization effect (DER on the AMI excerpts, original vs denoised) is measured by
``benchmarks/denoise_der.py`` (results in ``benchmarks/denoise_der.results.txt``).

Run from the project root::

    python benchmarks/denoise_quality.py --trials 8
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("EMOFLOW_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tasks.audio.decode import load_audio  # noqa: E402
from tasks.core.config import DenoiseConfig  # noqa: E402
from tasks.audio.denoise import denoise  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SR = 16000


def si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Scale-invariant SDR in dB (both signals made zero-mean)."""
    est = estimate.astype(np.float64) - estimate.mean()
    ref = reference.astype(np.float64) - reference.mean()
    alpha = np.dot(est, ref) / max(np.dot(ref, ref), 1e-12)
    target = alpha * ref
    resid = est - target
    return float(10 * np.log10(max(np.dot(target, target), 1e-12) / max(np.dot(resid, resid), 1e-12)))


def _speakers() -> dict[str, list[Path]]:
    import csv

    root = DATA / "librispeech" / "test-other"
    by: dict[str, list[Path]] = {}
    with open(root / "speakers.csv") as f:
        for row in csv.DictReader(f):
            by.setdefault(row["speaker_id"], []).append(root / row["file"])
    return by


def _noises() -> list[Path]:
    return sorted((DATA / "noise" / "speech-commands").glob("*.wav")) + sorted((DATA / "noise" / "misc").glob("*.wav"))


_CACHE: dict[Path, np.ndarray] = {}


def _load(p: Path) -> np.ndarray:
    if p not in _CACHE:
        _CACHE[p] = load_audio(p)[0]
    return _CACHE[p]


def make_mixture(rng: np.random.Generator, snr_db: float, *, noise_path: Path | None = None):  # type: ignore[no-untyped-def]
    """(clean, noisy, clean speech mask) for one trial."""
    speakers = _speakers()
    ids = rng.choice(sorted(speakers), size=3, replace=False)
    parts = [np.zeros(int(rng.uniform(0.8, 1.5) * SR), np.float32)]
    active = [np.zeros_like(parts[0], dtype=bool)]
    for k, sid in enumerate(ids):
        files = speakers[sid]
        utt = _load(files[int(rng.integers(len(files)))])[: 8 * SR]
        parts.append(utt)
        active.append(np.ones(utt.shape[0], dtype=bool))
        gap = int(rng.uniform(0.6, 1.6) * SR) if k < 2 else int(rng.uniform(0.8, 1.5) * SR)
        parts.append(np.zeros(gap, np.float32))
        active.append(np.zeros(gap, dtype=bool))
    clean = np.concatenate(parts)
    mask = np.concatenate(active)
    noises = _noises()
    path = noise_path or noises[int(rng.integers(len(noises)))]
    noise = _load(path)
    reps = -(-clean.shape[0] // noise.shape[0]) + 1
    noise = np.tile(noise, reps)
    off = int(rng.integers(0, noise.shape[0] - clean.shape[0]))
    noise = noise[off : off + clean.shape[0]].astype(np.float64)
    p_s = np.mean(clean[mask].astype(np.float64) ** 2)
    p_n = np.mean(noise**2)
    noise *= np.sqrt(p_s / (p_n * 10 ** (snr_db / 10)))
    noisy = clean + noise
    peak = np.max(np.abs(noisy))
    scale = 0.9 / peak if peak > 0.9 else 1.0
    return (clean * scale).astype(np.float32), (noisy * scale).astype(np.float32), path.stem


def _frames(regions: list[tuple[float, float]], n: int, hop: int = 160) -> np.ndarray:
    m = np.zeros(-(-n // hop), dtype=bool)
    for s, e in regions:
        m[int(s * SR / hop) : int(np.ceil(e * SR / hop))] = True
    return m


def vad_scores(ref: np.ndarray, hyp: np.ndarray) -> tuple[float, float]:
    """(detection error as a fraction of reference speech, F1) on 10 ms frames."""
    tp = float(np.sum(ref & hyp))
    fa = float(np.sum(~ref & hyp))
    miss = float(np.sum(ref & ~hyp))
    err = (fa + miss) / max(float(ref.sum()), 1.0)
    f1 = 2 * tp / max(2 * tp + fa + miss, 1.0)
    return err, f1


METHODS: dict[str, dict[str, object]] = {
    "stationary (config defaults)": {"method": "stationary"},
    "stationary, whole-file profile": {"method": "stationary", "noise_profile": "whole_file"},
    "stationary, earlier grid best": {"method": "stationary", "n_std_thresh_stationary": 1.0,
                                      "freq_mask_smooth_hz": 500.0},
    "non_stationary": {"method": "non_stationary"},
    "rnnoise (prop 0.9: 10% dry)": {"method": "rnnoise"},
    "rnnoise (prop 1.0: pure)": {"method": "rnnoise", "prop_decrease": 1.0},
}
"""Rows printed; every other option is the ``DenoiseConfig`` default (stationary rows: prop 0.9,
n_fft 512; config defaults n_std_thresh 1.5, freq_mask_smooth_hz 125, time_mask_smooth_ms 50)."""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8, help="mixtures per SNR")
    ap.add_argument("--snr", type=float, nargs="+", default=[0.0, 5.0, 10.0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-vad-proxy", action="store_true", help="skip the VAD proxy (faster)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME:key=value,...",
                    help="extra method, e.g. 'nr-1024:method=stationary,n_fft=1024'")
    args = ap.parse_args(argv)

    from tasks.audio.vad import speech_regions

    methods = dict(METHODS)
    for spec in args.set:
        name, _, kv = spec.partition(":")
        methods[name] = {k: _typed(v) for k, v in (p.split("=", 1) for p in kv.split(",") if p)}

    print(f"denoise_quality: {args.trials} trials per SNR, seed {args.seed}, "
          f"VAD proxy {'off' if args.no_vad_proxy else 'on (no diarization in this branch)'}")
    print(f"{'method':34s} {'SNR':>4s} {'SI-SDRi dB':>11s} {'(min..max)':>14s} {'RTF':>6s}"
          + ("" if args.no_vad_proxy else f" {'DetErr noisy→den':>17s} {'dDetErr':>8s} {'F1 noisy→den':>13s}"))
    for snr in args.snr:
        rng = np.random.default_rng(args.seed * 1000 + int(snr * 10))
        trials = [make_mixture(rng, snr) for _ in range(args.trials)]
        prepared = []
        vad_s, vad_dur = 0.0, 0.0
        for clean, noisy, _ in trials:
            t = time.perf_counter()
            speech = speech_regions(noisy)
            vad_s += time.perf_counter() - t
            vad_dur += noisy.shape[0] / SR
            ref = _frames(speech_regions(clean), clean.shape[0]) if not args.no_vad_proxy else None
            hyp_noisy = _frames(speech, noisy.shape[0]) if not args.no_vad_proxy else None
            prepared.append((clean, noisy, speech, ref, hyp_noisy))
        print(f"{'(VAD for noise profile + SNR)':34s} {snr:4.0f} {'':>11s} {'':>14s} {vad_s / vad_dur:6.3f}", flush=True)
        for name, overrides in methods.items():
            cfg = DenoiseConfig(**overrides)
            gains, secs, dur, errs, f1s = [], 0.0, 0.0, [], []
            for clean, noisy, speech, ref, hyp_noisy in prepared:
                t = time.perf_counter()
                out, _ = denoise(noisy, config=cfg, speech=speech)
                secs += time.perf_counter() - t
                dur += noisy.shape[0] / SR
                gains.append(si_sdr(out, clean) - si_sdr(noisy, clean))
                if ref is not None:
                    hyp_den = _frames(speech_regions(out), out.shape[0])
                    e0, f0 = vad_scores(ref, hyp_noisy)
                    e1, f1 = vad_scores(ref, hyp_den)
                    errs.append((e0, e1))
                    f1s.append((f0, f1))
            g = np.array(gains)
            line = f"{name:34s} {snr:4.0f} {g.mean():+11.2f} {f'({g.min():+.1f}..{g.max():+.1f})':>14s} {secs / dur:6.3f}"
            if errs:
                e = np.array(errs).mean(axis=0)
                f = np.array(f1s).mean(axis=0)
                line += f" {f'{e[0]:.3f}→{e[1]:.3f}':>17s} {e[1] - e[0]:+8.3f} {f'{f[0]:.3f}→{f[1]:.3f}':>13s}"
            print(line, flush=True)


def _typed(v: str) -> object:
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


if __name__ == "__main__":
    main()
