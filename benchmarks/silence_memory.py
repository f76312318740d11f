"""Peak memory and cache bytes of a long stretch of digital silence, stage by stage.

    python benchmarks/silence_memory.py --minutes 120 [--model DIR]

Runs every stage in this process (no Prefect) on ``minutes`` of 16 kHz mono digital silence (a
16-bit WAV written to a temporary folder) and prints, per stage, the seconds, the peak RSS growth
over the process's RSS before the first stage (sampled every 20 ms) and the bytes the stage left
in the artefact store; then the totals per hour of input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


class Peak(threading.Thread):
    def __init__(self) -> None:
        import psutil

        super().__init__(daemon=True)
        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self.stop = False

    def run(self) -> None:
        while not self.stop:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)

    def reset(self) -> int:
        self.peak = self.proc.memory_info().rss
        return self.peak


def folder_bytes(path: Path) -> int:
    """Bytes of the files under ``path``, each inode once (a hard link is not a second copy)."""
    seen: dict[tuple[int, int], int] = {}
    for p in path.rglob("*"):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            seen[(st.st_dev, st.st_ino)] = st.st_size
    return sum(seen.values())


def write_silence(path: Path, minutes: float) -> None:
    import soundfile as sf
    import numpy as np

    n = int(minutes * 60 * 16000)
    with sf.SoundFile(path, "w", samplerate=16000, channels=1, subtype="PCM_16") as fh:
        block = np.zeros(16000 * 60, np.int16)
        for start in range(0, n, block.size):
            fh.write(block[: min(block.size, n - start)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--model", default=None, help="emotion model (default: a tiny random test model)")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    from tasks.core.config import load_config
    from tasks.pipeline.runner import run_stage
    from tasks.run.plan import prepare_run
    from tasks.stages import REGISTRY

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model
        if model is None:
            from tasks.models.testmodels import build_emotion2vec_dir

            model = str(build_emotion2vec_dir(tmp / "tiny", size="tiny", seed=0))
        from tasks.transcription.testmodel import build_sensevoice_dir

        sv = build_sensevoice_dir(tmp / "sv-tiny", size="tiny", seed=0)
        wav = tmp / "silence.wav"
        write_silence(wav, args.minutes)
        cfg = load_config(None, [f"emotion.model={model}", f"transcribe.model={sv}", *args.set])
        out = tmp / "out"
        import gc

        gc.collect()
        peak = Peak()
        peak.start()
        base = peak.reset()
        jobs, _ = prepare_run([str(wav)], config=cfg, out_dir=out)
        rows, worst = [], 0
        for name in REGISTRY.order(cfg):
            before = peak.reset()
            t0 = time.perf_counter()
            report = run_stage(jobs[0], name)
            seconds = time.perf_counter() - t0
            time.sleep(0.05)
            stage_dir = out / ".emoflow" / "artefacts" / name
            size = folder_bytes(out / ".emoflow" / "artefacts") - sum(r["cache_mb"] for r in rows) * 2**20
            worst = max(worst, peak.peak - base)
            rows.append({"stage": name, "status": report.status, "seconds": round(seconds, 1),
                         "peak_rss_growth_mb": round((peak.peak - base) / 2**20, 1),
                         "stage_peak_over_its_start_mb": round((peak.peak - before) / 2**20, 1),
                         "cache_mb": round(size / 2**20, 2)})
            print(json.dumps(rows[-1]), flush=True)
        peak.stop = True
        hours = args.minutes / 60
        cache = folder_bytes(out / ".emoflow" / "artefacts")
        published = folder_bytes(out / "recordings")
        print(json.dumps({"minutes": args.minutes, "peak_rss_growth_mb": round(worst / 2**20, 1),
                          "peak_rss_growth_mb_per_hour": round(worst / 2**20 / hours, 1),
                          "cache_mb": round(cache / 2**20, 1), "cache_mb_per_hour": round(cache / 2**20 / hours, 1),
                          "published_mb": round(published / 2**20, 1),
                          "input_mb": round(wav.stat().st_size / 2**20, 1)}), flush=True)


if __name__ == "__main__":
    main()
