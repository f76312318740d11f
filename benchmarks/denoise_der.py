"""Diarization error rate on the real AMI excerpts with and without denoising.

For each of the 12 AMI files (``ami/debug.train``: 10 × 30 s, ``ami/debug.development``:
2 × 30 s, read from ``../shared/data`` relative to the project root) the diarization stage
(:func:`tasks.diarization.pipeline.diarize`, ``DiarizationConfig`` defaults) is run on

* ``original``   - the audio as loaded by :func:`tasks.audio.decode.load_audio`;
* ``stationary`` - :func:`tasks.audio.denoise.denoise` with ``DenoiseConfig()`` (the tuned defaults);
* ``rnnoise``    - :func:`tasks.audio.denoise.denoise` with ``DenoiseConfig(method="rnnoise")``.

DER is scored exactly as in ``benchmarks/diarization_der.py`` (its ``load_ami``, ``score`` and
``make_metric`` are imported): pyannote.metrics, collar 0, overlapped speech scored, the UEMs
given. Overall figures are pooled over files (total error time / total reference speech time),
not averaged per file. ``dDER`` is the change against ``original`` in DER points; the target is
that no denoiser makes AMI DER worse by more than 1 point.

    PYTHONPATH=. python benchmarks/denoise_der.py             # all three conditions
    PYTHONPATH=. python benchmarks/denoise_der.py --per-file  # plus per-file tables
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("EMOFLOW_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.diarization_der import DATA, SR, load_ami, make_metric, score  # noqa: E402
from tasks.audio.decode import load_audio  # noqa: E402
from tasks.core.config import DenoiseConfig, DiarizationConfig  # noqa: E402
from tasks.audio.denoise import denoise  # noqa: E402
from tasks.diarization.pipeline import diarize, load_diarization_pipeline  # noqa: E402
from tasks.audio.vad import speech_regions  # noqa: E402

warnings.filterwarnings("ignore")

CONDITIONS: dict[str, DenoiseConfig | None] = {
    "original": None,
    "stationary": DenoiseConfig(method="stationary"),
    "rnnoise": DenoiseConfig(method="rnnoise"),
}
TARGET_POINTS = 1.0


def pooled(files: list[dict], hyps: dict[str, object]) -> dict[str, float]:
    """Overall DER and its parts (% of reference speech), pooled over ``files``."""
    metric = make_metric()
    for f in files:
        metric(f["reference"], hyps[f["uri"]], uem=f["uem"], detailed=True)
    tot = metric["total"] or 1.0
    return {
        "der": 100 * abs(metric),
        "miss": 100 * metric["missed detection"] / tot,
        "fa": 100 * metric["false alarm"] / tot,
        "conf": 100 * metric["confusion"] / tot,
        "speech_s": metric["total"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared CPU)")
    ap.add_argument("--per-file", action="store_true", help="also print per-file DER tables")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    dcfg = DiarizationConfig(threads=args.threads, device="cpu")
    splits = {"train": load_ami("train"), "dev": load_ami("development")}
    files = splits["train"] + splits["dev"]
    # the audio the pipeline would see: tasks.audio.decode.load_audio (load_ami reads with soundfile)
    for f in files:
        audio, _ = load_audio(DATA / "ami" / f"{f['uri']}.flac")
        if audio.shape != f["audio"].shape or not np.allclose(audio, f["audio"], atol=1e-4):
            print(f"note: {f['uri']}: load_audio differs from soundfile read (max |d| "
                  f"{np.max(np.abs(audio[: len(f['audio'])] - f['audio'][: len(audio)])):.2e})")
        f["audio"] = audio

    print(f"denoise_der: {len(files)} AMI files ({len(splits['train'])} train + {len(splits['dev'])} dev, "
          f"{sum(len(f['audio']) for f in files) / SR:.0f} s); torch threads {torch.get_num_threads()}")
    print(f"diarization: threshold {dcfg.clustering_threshold}, min_cluster_size {dcfg.min_cluster_size}, "
          f"step {dcfg.segmentation_step}, min_duration_off {dcfg.min_duration_off}; "
          f"DER collar 0, overlap scored, UEM")

    t = time.perf_counter()
    load_diarization_pipeline(dcfg)  # load models up front so the timings below exclude loading
    speech_regions(files[0]["audio"])
    print(f"models loaded in {time.perf_counter() - t:.1f} s")

    hyps: dict[str, dict[str, object]] = {}
    snrs: dict[str, dict[str, tuple]] = {}
    timing: dict[str, tuple[float, float]] = {}
    for name, ncfg in CONDITIONS.items():
        hyps[name], snrs[name] = {}, {}
        t_den = t_dia = 0.0
        for f in files:
            audio = f["audio"]
            if ncfg is not None:
                t = time.perf_counter()
                audio, stats = denoise(audio, config=ncfg)
                t_den += time.perf_counter() - t
                snrs[name][f["uri"]] = (stats.snr_before_db, stats.snr_after_db)
            t = time.perf_counter()
            hyps[name][f["uri"]] = diarize(audio, recording_id=f["uri"], config=dcfg).annotation
            t_dia += time.perf_counter() - t
        timing[name] = (t_den, t_dia)
        print(f"  {name:<11} done: denoise {t_den:5.1f} s (VAD included), diarize {t_dia:5.1f} s", flush=True)

    if args.per_file:
        for name in CONDITIONS:
            for split, fs in splits.items():
                score(fs, hyps[name], verbose=True, title=f"{name} / AMI {split}")

    print("\nestimated SNR dB before -> after denoising (tasks.audio.denoise.estimate_snr_db, VAD regions)")
    print(f"{'file':<10}" + "".join(f"{n:>20}" for n in CONDITIONS if CONDITIONS[n] is not None))
    for f in files:
        cells = []
        for n in CONDITIONS:
            if CONDITIONS[n] is None:
                continue
            b, a = snrs[n][f["uri"]]
            cells.append(f"{'-' if b is None else f'{b:.1f}'} -> {'-' if a is None else f'{a:.1f}'}")
        print(f"{f['uri']:<10}" + "".join(f"{c:>20}" for c in cells))

    print("\nDER % (pooled over files; miss / FA / confusion as % of reference speech); "
          "dDER = DER - original DER, in points")
    print(f"{'set':<12}{'condition':<12}{'DER':>7}{'miss':>7}{'FA':>7}{'conf':>7}{'dDER':>8}")
    sets = {"train (10)": splits["train"], "dev (2)": splits["dev"], "all (12)": files}
    verdict = {}
    for label, fs in sets.items():
        base = pooled(fs, hyps["original"])
        for name in CONDITIONS:
            r = base if name == "original" else pooled(fs, hyps[name])
            d = r["der"] - base["der"]
            print(f"{label:<12}{name:<12}{r['der']:>7.2f}{r['miss']:>7.2f}{r['fa']:>7.2f}{r['conf']:>7.2f}"
                  f"{('' if name == 'original' else f'{d:+.2f}'):>8}")
            if label.startswith("all") and name != "original":
                verdict[name] = d
        print(f"{'':<12}{'(reference speech ' + format(base['speech_s'], '.0f') + ' s)'}")

    print(f"\ntarget: no denoiser worsens AMI DER (all 12 files) by more than {TARGET_POINTS:.0f} point")
    for name, d in verdict.items():
        ok = d <= TARGET_POINTS
        print(f"  {name:<11} dDER {d:+.2f} points -> {'holds' if ok else 'FAILS'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
