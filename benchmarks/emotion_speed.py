"""Emotion engine vs funasr's ``AutoModel.generate`` loop, measured side by side in one run.

Uses a RANDOMLY INITIALISED emotion2vec of the real emotion2vec_plus_large size (D=1024,
~160 M parameters): speed and memory are representative, the scores mean nothing.

    python benchmarks/emotion_speed.py            # 60 segments of 1.5-10 s from LibriSpeech
    python benchmarks/emotion_speed.py --n 12     # quick run

Prints: seconds for the funasr loop, seconds for the engine, their ratio, the max absolute
difference of utterance scores / embeddings, and peak RSS.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "librispeech"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cut_segments(n: int, seed: int, *, min_s: float = 1.5, max_s: float = 10.0) -> list[np.ndarray]:
    """``n`` segments of ``min_s``-``max_s`` seconds cut at random from the LibriSpeech utterances."""
    import soundfile as sf

    files = sorted(DATA.rglob("*.flac"))
    if not files:
        raise SystemExit(f"no LibriSpeech audio under {DATA}")
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    while len(out) < n:
        f = files[int(rng.integers(len(files)))]
        audio, sr = sf.read(str(f), dtype="float32")
        if sr != 16000 or audio.ndim != 1:
            continue
        want = int(rng.uniform(min_s, max_s) * sr)
        if audio.size < int(min_s * sr):
            continue
        want = min(want, audio.size)
        start = int(rng.integers(0, audio.size - want + 1))
        out.append(np.ascontiguousarray(audio[start:start + want]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=60, help="number of segments (default 60)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads for BOTH sides (0: torch's default)")
    ap.add_argument("--batch-seconds", type=float, default=None,
                    help="engine batch budget in seconds of padded audio (default: the engine's, which is "
                         "one clip per forward on CPU)")
    ap.add_argument("--model-dir", default=str(Path.home() / ".cache" / "emoflow" / "bench" / "emotion2vec_large_random"),
                    help="where the random large model is built (reused when present)")
    ap.add_argument("--chunk", type=int, default=6, help="clips per alternation between the two sides")
    ap.add_argument("--no-fast-path", action="store_true", help="engine without SDPA attention and time-major conv extractor")
    args = ap.parse_args(argv)

    import torch

    from funasr import AutoModel

    from tasks.core.config import EmotionConfig
    from tasks.emotion.model import load_emotion_model
    from tasks.models.hub import resolve
    from tasks.core.records import EMOTIONS
    from tasks.models.testmodels import build_emotion2vec_dir, is_test_model

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model_dir = Path(args.model_dir)
    if not (model_dir / "model.pt").is_file() or not is_test_model(model_dir):
        print(f"building random emotion2vec (large size) in {model_dir} ...", flush=True)
        build_emotion2vec_dir(model_dir, size="large", seed=0)

    clips = cut_segments(args.n, args.seed)
    total_s = sum(c.size for c in clips) / 16000
    print(f"segments: {len(clips)}, {total_s:.1f} s of speech (LibriSpeech), "
          f"torch threads: {torch.get_num_threads()}, cpu count: {os.cpu_count()}", flush=True)
    print("model: RANDOMLY INITIALISED emotion2vec_plus_large-size model (scores are meaningless)")

    # -- both sides, loaded up front --------------------------------------------------
    threads = torch.get_num_threads()
    # engine first, so its own peak (load + the longest clip) is measured before funasr loads
    cfg = EmotionConfig(model=str(model_dir), device="cpu", fast_path=not args.no_fast_path, threads=threads)
    em = load_emotion_model(cfg, resolved=resolve(str(model_dir)))
    bs = args.batch_seconds  # None: the engine's default (one clip per forward on CPU)
    em.analyse([max(clips, key=len)], batch_seconds=bs)  # warm-up
    rss_engine = peak_rss_mb()
    am = AutoModel(model=str(model_dir), disable_update=True, device="cpu", log_level="ERROR",
                   disable_log=True, disable_pbar=True, ncpu=threads)  # funasr's default is ncpu=4
    torch.set_num_threads(threads)
    am.generate(clips[0][:16000], granularity="utterance", disable_pbar=True)  # warm-up
    em.forward_calls = 0

    # The machine is shared: run the two sides alternately on chunks of clips (ABBA order), so
    # both see the same background load; report wall and process CPU seconds.
    ref_scores: list = [None] * len(clips)
    ref_emb: list = [None] * len(clips)
    res: list = [None] * len(clips)
    wall = {"funasr": 0.0, "engine": 0.0}
    cpu = {"funasr": 0.0, "engine": 0.0}

    def run_funasr(idx: list[int]) -> None:
        for i in idx:
            r = am.generate(clips[i], granularity="utterance", disable_pbar=True)[0]
            ref_scores[i], ref_emb[i] = r["scores"], r["feats"]
        run_funasr.labels = r["labels"]  # type: ignore[attr-defined]

    def run_engine(idx: list[int]) -> None:
        for i, r in zip(idx, em.analyse([clips[i] for i in idx], batch_seconds=bs)):  # noqa: B023
            res[i] = r

    chunks = [list(range(i, min(i + args.chunk, len(clips)))) for i in range(0, len(clips), args.chunk)]
    for k, idx in enumerate(chunks):
        order = [("funasr", run_funasr), ("engine", run_engine)]
        if k % 2:
            order.reverse()
        for name, fn in order:
            t0, c0 = time.perf_counter(), time.process_time()
            fn(idx)
            wall[name] += time.perf_counter() - t0
            cpu[name] += time.process_time() - c0
    rss = peak_rss_mb()
    labels = [lab.split("/")[-1].replace("<unk>", "unknown") for lab in run_funasr.labels]  # type: ignore[attr-defined]
    t_funasr, t_engine = wall["funasr"], wall["engine"]
    print(f"funasr AutoModel.generate loop (ncpu={threads}): {t_funasr:.2f} s wall, {cpu['funasr']:.2f} s CPU")
    print(f"engine analyse (batch_seconds={em.batch_seconds if bs is None else bs:g}, {em.forward_calls} forward calls, fast_path={cfg.fast_path}): "
          f"{t_engine:.2f} s wall, {cpu['engine']:.2f} s CPU")
    cols = [EMOTIONS.index(lab) for lab in labels]
    d_scores = max(float(np.abs(np.asarray(s) - r.scores[cols]).max()) for s, r in zip(ref_scores, res))
    d_emb = max(float(np.abs(e - r.embedding).max()) for e, r in zip(ref_emb, res))
    print(f"speed-up (funasr / engine): {t_funasr / t_engine:.2f}x wall, {cpu['funasr'] / cpu['engine']:.2f}x CPU")
    print(f"max |score difference|: {d_scores:.2e}   max |embedding difference|: {d_emb:.2e}")
    print(f"peak RSS: engine alone {rss_engine:.0f} MB (load + longest clip, before funasr was loaded); "
          f"whole process {rss:.0f} MB (both models side by side)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
