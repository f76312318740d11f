"""Peak memory of the diarization stage on a long input (AMI excerpts concatenated).

    python benchmarks/diarization_memory.py --minutes 10

Prints peak RSS after loading the models, after building the input and after diarizing.
ru_maxrss is a peak: compare two durations to tell the fixed part (batched activations,
mostly segmentation: batch x 10 s through SincNet) from what grows with the input.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from tasks.diarization import pipeline as D  # noqa: E402
from tasks.core.config import DiarizationConfig  # noqa: E402


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--segmentation-batch-size", type=int, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = DiarizationConfig(device="cpu")
    if args.segmentation_batch_size:
        cfg = cfg.model_copy(update={"segmentation_batch_size": args.segmentation_batch_size})
    D.load_diarization_pipeline(cfg)
    base = peak_mb()
    clips = [sf.read(f, dtype="float32")[0] for f in sorted((DATA / "ami").glob("*.flac"))]
    n = int(args.minutes * 60 * 16000)
    audio = np.concatenate(clips * (n // sum(len(c) for c in clips) + 1))[:n]
    loaded = peak_mb()
    t0 = time.perf_counter()
    result = D.diarize(audio, recording_id="long", config=cfg)
    secs = time.perf_counter() - t0
    peak = peak_mb()
    hours = len(audio) / 16000 / 3600
    print(f"{args.minutes:.0f} min input: {len(result.annotation.labels())} speakers, {secs:.0f} s (RTF {secs / (hours * 3600):.3f})")
    print(f"peak RSS: models loaded {base:.0f} MB, + input {loaded:.0f} MB, after diarization {peak:.0f} MB")
    print(f"growth during diarization {peak - loaded:.0f} MB for {hours * 60:.0f} min "
          f"(segmentation_batch_size {cfg.segmentation_batch_size}); run two durations to separate "
          "the fixed peak (batched model activations) from what grows with the input")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
