"""Transcription (SenseVoiceSmall) vs funasr's loop vs the emotion engine, side by side.

Builds, in a temporary directory, a RANDOMLY INITIALISED SenseVoiceSmall of the published size
(512-d, 50 + 20 blocks, ~234 M parameters) and a randomly initialised emotion2vec_plus_large-size
model (~300 M parameters): speed and memory are representative, the transcripts and scores mean
nothing. On the same clips (3-10 s cut from LibriSpeech) it times

* funasr's ``AutoModel.generate`` loop (one clip per call, ``output_timestamp=True``),
* ``transcribe_clips`` one clip per forward and in padded batches (its default is the former on
  a single-threaded CPU, the latter otherwise),
* the transcribe stage's default (one torch thread per pass, as many passes at once as cores:
  ``transcribe.threads``/``transcribe.workers``),
* the emotion engine (``EmotionModel.analyse``, its CPU default),

alternating the five on chunks of clips (the machine may be shared), checks that the
transcripts are identical to funasr's, and prints seconds per second of speech, the ratio
transcription / emotion (target <= 0.60) and peak RSS.

    python benchmarks/transcribe_speed.py            # 12 clips
    python benchmarks/transcribe_speed.py --quick    # 4 clips
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from emotion_speed import cut_segments  # noqa: E402 (the same clips as the emotion benchmark's)
DATA = ROOT.parent / "shared" / "data" / "librispeech"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build_models(sv_dir: Path, em_dir: Path) -> None:
    """The random full-size SenseVoiceSmall and emotion2vec_plus_large-size directories."""
    from tasks.models.testmodels import build_emotion2vec_dir
    from tasks.transcription.testmodel import build_sensevoice_dir

    build_sensevoice_dir(sv_dir, size="small", seed=0)
    build_emotion2vec_dir(em_dir, size="large", seed=0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=12, help="number of clips (default 12)")
    ap.add_argument("--quick", action="store_true", help="4 clips")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads for every side (0: torch's default)")
    ap.add_argument("--batch-seconds", type=float, default=60.0,
                    help="padded audio per forward for the batched transcription run (default 60)")
    ap.add_argument("--chunk", type=int, default=4, help="clips per alternation between the sides")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="emoflow-transcribe-bench-") as tmp:
        return run(args, Path(tmp))


def run(args: argparse.Namespace, work: Path) -> int:
    """Build the models under ``work``, time the four sides, print the results.

    Returns
    -------
    int
        0 when every transcript equals funasr's (and the batched ones the unbatched ones), else 1.
    """
    n = 4 if args.quick else args.n
    os.environ.setdefault("EMOFLOW_MODEL_DIR", str(work / "model-cache"))

    import torch

    from tasks.core.config import EmotionConfig
    from tasks.emotion.model import load_emotion_model
    from tasks.models.hub import resolve
    from tasks.transcription.sensevoice import (default_batch_seconds, load_sensevoice, transcribe_clips,
                                                transcript_from_result)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    sv_dir, em_dir = work / "sensevoice_small_random", work / "emotion2vec_large_random"
    # built in a child process: the peak RSS measured here is the engines', not the builders'
    child = multiprocessing.get_context("spawn").Process(target=build_models, args=(sv_dir, em_dir))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"building the test models failed (exit code {child.exitcode})")
    print(f"built random SenseVoiceSmall (small) and emotion2vec (large) TEST MODELS in "
          f"{time.perf_counter() - t0:.1f} s (temporary directory)")
    print("models: RANDOMLY INITIALISED (published sizes); transcripts and scores are meaningless")

    clips = cut_segments(n, args.seed, min_s=3.0)
    total_s = sum(c.size for c in clips) / 16000
    print(f"clips: {len(clips)}, {total_s:.1f} s of speech (LibriSpeech, "
          f"{min(c.size for c in clips) / 16000:.1f}-{max(c.size for c in clips) / 16000:.1f} s), "
          f"torch threads: {threads}, cpu count: {os.cpu_count()}", flush=True)

    # -- load one at a time, recording the peak after each (load + warm-up on the longest clip)
    longest = [max(clips, key=len)]
    sv = load_sensevoice(sv_dir)
    transcribe_clips(sv, longest)
    rss_sv = peak_rss_mb()
    em = load_emotion_model(EmotionConfig(model=str(em_dir), device="cpu", threads=threads),
                            resolved=resolve(str(em_dir)))
    em.analyse(longest)
    rss_em = peak_rss_mb()
    from funasr import AutoModel

    am = AutoModel(model=str(sv_dir), disable_update=True, device="cpu", log_level="ERROR",
                   disable_log=True, disable_pbar=True, ncpu=threads)  # funasr's default is ncpu=4
    torch.set_num_threads(threads)
    am.generate(input=longest[0], language="auto", use_itn=True, output_timestamp=True)

    ref: list = [None] * len(clips)
    ours: list = [None] * len(clips)
    batched: list = [None] * len(clips)

    def run_funasr(idx: list[int]) -> None:
        for i in idx:
            torch.manual_seed(0)  # the dither noise of transcribe_clips(seed=0)
            ref[i] = transcript_from_result(
                am.generate(input=clips[i], language="auto", use_itn=True, output_timestamp=True)[0])

    def run_ours(idx: list[int]) -> None:
        for i, t in zip(idx, transcribe_clips(sv, [clips[i] for i in idx], batch_seconds=0)):
            ours[i] = t

    def run_batched(idx: list[int]) -> None:
        for i, t in zip(idx, transcribe_clips(sv, [clips[i] for i in idx], batch_seconds=args.batch_seconds)):
            batched[i] = t

    from tasks.core.config import TranscribeConfig
    from tasks.models.devices import cpu_workers, torch_threads

    stage_cfg = TranscribeConfig()  # the stage's defaults: threads 1 per pass, workers from the cores
    workers = cpu_workers(stage_cfg.workers, threads=stage_cfg.threads, device="cpu")
    parallel: list = [None] * len(clips)

    def run_stage_default(idx: list[int]) -> None:
        with torch_threads(stage_cfg.threads):
            for i, t in zip(idx, transcribe_clips(sv, [clips[i] for i in idx], workers=workers)):
                parallel[i] = t

    def run_emotion(idx: list[int]) -> None:
        em.analyse([clips[i] for i in idx])

    sides = [("funasr", run_funasr), ("ours", run_ours), ("ours_batched", run_batched),
             ("stage", run_stage_default), ("emotion", run_emotion)]
    wall = {name: 0.0 for name, _ in sides}
    cpu = {name: 0.0 for name, _ in sides}
    chunks = [list(range(i, min(i + args.chunk, len(clips)))) for i in range(0, len(clips), args.chunk)]
    for k, idx in enumerate(chunks):
        order = sides[k % len(sides):] + sides[: k % len(sides)]  # rotate who goes first
        for name, fn in order:
            t1, c1 = time.perf_counter(), time.process_time()
            fn(idx)
            wall[name] += time.perf_counter() - t1
            cpu[name] += time.process_time() - c1
    rss = peak_rss_mb()

    labels = {"funasr": "funasr AutoModel.generate loop", "ours": "transcribe_clips, batch_seconds=0",
              "ours_batched": f"transcribe_clips, batch_seconds={args.batch_seconds:g}",
              "stage": f"transcribe stage default: {stage_cfg.threads} thread x {workers} workers",
              "emotion": "emotion engine analyse (CPU default)"}
    print(f"{'side':<44} {'wall s':>8} {'CPU s':>8} {'wall s/s':>9} {'CPU s/s':>8}")
    for name, _ in sides:
        print(f"{labels[name]:<44} {wall[name]:8.2f} {cpu[name]:8.2f} {wall[name] / total_s:9.3f} "
              f"{cpu[name] / total_s:8.3f}")
    default = "ours" if default_batch_seconds(sv.device) == 0 else "ours_batched"
    print(f"transcribe_clips default at {threads} thread(s): {labels[default]}")
    print(f"ratio transcription (default) / emotion: {wall[default] / wall['emotion']:.2f} wall, "
          f"{cpu[default] / cpu['emotion']:.2f} CPU (target <= 0.60)")
    print(f"speed-up over funasr's loop: {wall['funasr'] / wall[default]:.2f}x wall, "
          f"{cpu['funasr'] / cpu[default]:.2f}x CPU; batched / one-per-forward: "
          f"{wall['ours_batched'] / wall['ours']:.2f} wall, {cpu['ours_batched'] / cpu['ours']:.2f} CPU")
    print(f"ratio transcribe stage default ({stage_cfg.threads} torch thread x {workers} passes at once) / emotion "
          f"({threads} threads): {wall['stage'] / wall['emotion']:.2f} wall, {cpu['stage'] / cpu['emotion']:.2f} CPU "
          "(target <= 0.60)")
    same = sum(a == b for a, b in zip(ours, ref))
    same_b = sum(a == b for a, b in zip(ours, batched))
    same_p = sum(a == b for a, b in zip(ours, parallel))
    n_words = sum(len(t.words) for t in ours)
    print(f"identical to funasr (raw text, words, word times): {same}/{len(clips)} clips; "
          f"batched identical: {same_b}/{len(clips)}; stage default identical: {same_p}/{len(clips)}; "
          f"{n_words} words in all")
    print(f"peak RSS: SenseVoice alone {rss_sv:.0f} MB; + emotion engine {rss_em:.0f} MB; "
          f"+ funasr AutoModel, whole run {rss:.0f} MB")
    return 0 if same == len(clips) == same_b == same_p else 1


if __name__ == "__main__":
    raise SystemExit(main())
