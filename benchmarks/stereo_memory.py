"""Peak memory of a long stereo call through the flow's stages, split by channel.

    python benchmarks/stereo_memory.py --minutes 60

Builds a call from real LibriSpeech voices (agent on the left, customer on the right, turns
taking turns, 12 % bleed each way 10 ms late, real noise at 20 dB SNR), writes it as a stereo
FLAC, and runs the stages up to ``segment`` in the flow's order (default config:
``diarization.channels: auto``) in this process. Prints the peak RSS after the models are
loaded and after each stage, the channel decision and the seconds per stage. The bound to compare
with is the mono diarization of a 60-minute input (``benchmarks/diarization_memory.py``) plus one
more channel of float32 audio (230 MB per hour).
"""

from __future__ import annotations

import argparse
import csv
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
SR = 16000

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_call(minutes: float, path: Path, seed: int = 0) -> None:
    """A stereo call of ``minutes``: two voices alternating, bleed each way, real noise."""
    root = DATA / "librispeech" / "test-other"
    by: dict[str, list[Path]] = {}
    with open(root / "speakers.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            by.setdefault(row["speaker_id"], []).append(root / row["file"])
    voices = [sorted(v) for _, v in sorted(by.items())][:2]
    utts = [[sf.read(f, dtype="float32")[0] for f in v] for v in voices]
    utts = [[u * (0.05 / np.sqrt(np.mean(u**2))) for u in us] for us in utts]
    rng = np.random.default_rng(seed)
    n = int(minutes * 60 * SR)
    stereo = np.zeros((2, n), np.float32)
    t, k = 0, 0
    while t < n:
        u = utts[k % 2][rng.integers(len(utts[k % 2]))]
        m = min(u.size, n - t)
        stereo[k % 2, t : t + m] += u[:m]
        t += m + int(rng.uniform(0.2, 1.0) * SR)
        k += 1
    delay = int(0.01 * SR)
    bleed = np.zeros_like(stereo)
    bleed[0, delay:] = 0.12 * stereo[1, :-delay]
    bleed[1, delay:] = 0.12 * stereo[0, :-delay]
    stereo += bleed
    noise, _ = sf.read(sorted((DATA / "noise" / "speech-commands").glob("*.wav"))[0], dtype="float32")
    reps = int(np.ceil(n / noise.size))
    for c in range(2):
        x = np.tile(np.roll(noise, c * 7919), reps)[:n]
        stereo[c] += x * (np.sqrt(np.mean(stereo[c] ** 2)) / np.sqrt(np.mean(x**2)) / 10.0)  # 20 dB
    sf.write(path, stereo.T, SR, subtype="PCM_16")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--channels", default="auto", choices=["auto", "mix", "split"],
                    help="diarization.channels (mix: today's mono path on the same call, for comparison)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, e.g. transcribe.enabled=false on a machine without SenseVoice "
                         "(planning the run resolves every enabled model; the stages measured here do not use it)")
    ap.add_argument("--build-only", metavar="PATH", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build_only:  # in a child process, so building the call does not count in the peak
        build_call(args.minutes, Path(args.build_only))
        return 0

    from flows.pipeline import prepare_run
    from tasks.pipeline.runner import run_stage
    from tasks.core.config import load_config
    from tasks.diarization.pipeline import load_diarization_pipeline
    from tasks.speakers.campplus import load_embedding_model

    work = Path(tempfile.mkdtemp(prefix="emoflow-stereo-"))
    call = work / "call.flac"
    t0 = time.perf_counter()
    import subprocess

    subprocess.run([sys.executable, __file__, "--minutes", str(args.minutes), "--build-only", str(call)], check=True)
    print(f"built a {args.minutes:g}-minute stereo call in {time.perf_counter() - t0:.0f} s")
    # a model path is needed to plan the run; the emotion stage is not run here
    from tasks.models.testmodels import build_emotion2vec_dir

    cfg = load_config(None, [f"emotion.model={build_emotion2vec_dir(work / 'e2v', size='tiny')}",
                             f"diarization.channels={args.channels}", *args.set])
    load_diarization_pipeline(cfg.diarization)
    load_embedding_model(cfg.diarization.embedding_model, cfg.diarization.device)
    base = peak_mb()
    print(f"peak RSS with the diarization models loaded: {base:.0f} MB")
    jobs, _run = prepare_run([str(call)], config=cfg, out_dir=work / "run")
    from tasks.stages import REGISTRY

    for stage in [s for s in REGISTRY.order(cfg) if s not in ("emotion", "transcribe", "screen", "export")]:
        t0 = time.perf_counter()
        report = run_stage(jobs[0], stage)
        secs = time.perf_counter() - t0
        extra = ""
        if stage == "channels":
            extra = f" mode {report.facts['mode']}: {report.facts['reason']}"
        if stage == "diarize":
            extra = f" speakers {report.facts['speakers']}"
        print(f"{stage:<9} {secs:7.1f} s  peak RSS {peak_mb():6.0f} MB{extra}")
    print(f"peak RSS {peak_mb():.0f} MB for {args.minutes:g} min of stereo "
          f"(one channel of float32 is {args.minutes * 60 * SR * 4 / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
