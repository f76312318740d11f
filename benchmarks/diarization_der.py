"""Diarization error rate and real-time factor of the diarization stage.

Data (read from ``../shared/data`` relative to the project root):

* AMI: ``ami/debug.train.*`` (10 × 30 s, for tuning) and ``ami/debug.development.*``
  (2 × 30 s, held out), with their RTTM references and UEMs;
* LibriSpeech mixtures built here from ``librispeech/test-other`` speakers (held out: never
  used to choose a setting): 2–4 speakers, one utterance per turn, gaps of 0.2–1.2 s; an
  ``-ov`` variant of each where some turns start 0.3–1.0 s before the previous one ends.
  Pause-aware reference: 10 ms frames of each clean single-speaker source that hold speech by
  energy (within 40 dB of its loudest frame and 8 dB above the noise floor of the untrimmed
  file), pauses >= ``PAUSE_S`` (0.2 s) cut out, shorter ones kept as speech; so filled gaps and
  late onsets are punished as in the AMI references. The old figure (one whole trimmed
  utterance per turn, pauses count as speech) is printed beside it. The detector is energy,
  independent of both speech detectors the pipeline uses.
* ``--ablation`` also scores ``train-clean-100`` mixtures (other voices, other seed: the
  material the refinement settings were chosen on, with AMI debug.train), each refinement
  step on its own, and how the two kinds of reference treat a speaker's pauses
  (``reference_conventions``: AMI's bridge pauses under 0.84 s, the mixtures' cut those >= 0.2 s).

DER: ``pyannote.metrics`` DiarizationErrorRate, collar 0, overlap scored (skip_overlap=False),
UEM given (AMI) or the whole mixture. RTF = diarization seconds / audio seconds with the models
already loaded (first pass over each file, segmentation + embeddings + clustering).

Tuning (``--tune``) sweeps the agglomerative clustering threshold and min_cluster_size on
debug.train only (then min_duration_off, then the threshold again): segmentation and
embeddings are computed once per file (pyannote's training cache) and only clustering and
reconstruction are rerun for each value.

    python benchmarks/diarization_der.py                 # evaluate config defaults
    python benchmarks/diarization_der.py --tune          # sweep on train, then evaluate best
    python benchmarks/diarization_der.py --threshold 0.7 --min-cluster-size 6
    python benchmarks/diarization_der.py --ablation      # + each refinement step, train and held out
    python benchmarks/diarization_der.py --segmentation-model /tmp/ft/sim/step900  # another segmentation model
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from tasks.core.config import DiarizationConfig  # noqa: E402
from tasks.diarization import pipeline as D  # noqa: E402
from tasks.diarization import rttm  # noqa: E402

warnings.filterwarnings("ignore")
SR = 16000


# --------------------------------------------------------------------------- data
def load_ami(split: str) -> list[dict]:
    from pyannote.core import Segment, Timeline

    ami = DATA / "ami"
    refs = rttm.read_rttm(ami / f"debug.{split}.rttm")
    uems: dict[str, Timeline] = {}
    for line in (ami / f"debug.{split}.uem").read_text().splitlines():
        p = line.split()
        if len(p) >= 4:
            uems.setdefault(p[0], Timeline(uri=p[0])).add(Segment(float(p[2]), float(p[3])))
    files = []
    for uri in (ami / f"debug.{split}.lst").read_text().split():
        audio, sr = sf.read(ami / f"{uri}.flac", dtype="float32")
        assert sr == SR, (uri, sr)
        files.append({"uri": uri, "audio": audio, "reference": refs[uri], "uem": uems.get(uri)})
    return files


def _frame_energy_db(x: np.ndarray, *, hop: int, n: int | None = None) -> np.ndarray:
    """Mean energy (dB) of ``n`` frames of ``hop`` samples of ``x`` (default: its whole frames,
    at least one); a short last frame is zero-padded."""
    n = max(1, len(x) // hop) if n is None else n
    frames = np.pad(x[: n * hop], (0, max(0, n * hop - len(x))))
    return 10 * np.log10(np.mean(frames.reshape(n, hop) ** 2, axis=1) + 1e-10)


def _speech_frames(x: np.ndarray, hop: int = 320, floor_of: np.ndarray | None = None) -> np.ndarray:
    """Frames (``hop`` samples) of a clean utterance that hold speech: within 40 dB of its
    loudest frame and 8 dB above its noise floor (10th percentile of the frame energies of
    ``floor_of``, default ``x``; test-other files have audible noise)."""
    energy = _frame_energy_db(x, hop=hop)
    floor = np.percentile(_frame_energy_db(x if floor_of is None else floor_of, hop=hop), 10)
    return energy > max(energy.max() - 40.0, floor + 8.0)


def _trim(x: np.ndarray) -> np.ndarray:
    """Cut leading/trailing non-speech (see ``_speech_frames``)."""
    hop = 320
    on = np.where(_speech_frames(x, hop))[0]
    return x[on[0] * hop : (on[-1] + 1) * hop]


def _speech_runs(x: np.ndarray, *, min_pause: float = 0.3, hop: int = 320,
                 floor_of: np.ndarray | None = None) -> list[tuple[float, float]]:
    """Speech stretches (s) of a clean utterance (``_speech_frames`` on ``hop``-sample frames),
    pauses shorter than ``min_pause`` kept as speech."""
    on = _speech_frames(x, hop, floor_of)
    runs, start = [], None
    for i, v in enumerate(list(on) + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            runs.append([start * hop / SR, i * hop / SR])
            start = None
    merged: list[list[float]] = []
    for a, b in runs:
        if merged and a - merged[-1][1] < min_pause:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


PAUSE_S = 0.2
"""Pauses at least this long inside an utterance are non-speech in the pause-aware reference."""


def load_mixtures(seed: int = 7, n_per_k: int = 2, turns_per_speaker: int = 3,
                  folder: str = "test-other", name: str = "mix") -> list[dict]:
    """LibriSpeech conversations with exact references (see module doc): ``reference`` is
    pause-aware (10 ms frames of each clean source, pauses >= ``PAUSE_S`` cut out),
    ``reference_turns`` one whole trimmed utterance per turn."""
    from pyannote.core import Annotation, Segment

    lib = DATA / "librispeech" / folder
    by_spk: dict[str, list[Path]] = {}
    with open(lib / "speakers.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            by_spk.setdefault(row["speaker_id"], []).append(lib / row["file"])
    speakers = sorted(by_spk)
    rng = np.random.default_rng(seed)
    files = []
    for k in (2, 3, 4):
        for m in range(n_per_k):
            chosen = list(rng.choice(speakers, size=k, replace=False))
            utts = {s: list(rng.permutation(by_spk[s]))[:turns_per_speaker] for s in chosen}
            order = [s for _ in range(turns_per_speaker) for s in rng.permutation(chosen)]
            raws = [(s, sf.read(utts[s].pop(), dtype="float32")[0][: 12 * SR]) for s in order]
            clips = [(s, _trim(raw), raw) for s, raw in raws]
            gaps = rng.uniform(0.2, 1.2, size=len(clips))
            overlaps = rng.uniform(0.3, 1.0, size=len(clips)) * (rng.random(len(clips)) < 0.4)
            for variant in ("", "-ov"):
                t, placed = 0.5, []
                for i, (s, clip, raw) in enumerate(clips):
                    if i > 0:
                        prev_s = placed[-1]
                        start = prev_s[2] - overlaps[i] if (variant and prev_s[0] != s and overlaps[i] > 0) else prev_s[2] + gaps[i]
                    else:
                        start = t
                    placed.append((s, start, start + len(clip) / SR, clip, raw))
                total = max(p[2] for p in placed) + 0.5
                audio = np.zeros(int(total * SR) + 1, dtype=np.float32)
                ref = Annotation(uri=f"{name}{k}spk{m}{variant}")
                ref_turns = Annotation(uri=ref.uri)
                for s, start, end, clip, raw in placed:
                    i0 = int(round(start * SR))
                    audio[i0 : i0 + len(clip)] += clip
                    turn = Segment(i0 / SR, (i0 + len(clip)) / SR)
                    ref_turns[turn, ref_turns.new_track(turn)] = s
                    for a, b in _speech_runs(clip, min_pause=PAUSE_S, hop=SR // 100, floor_of=raw):
                        seg = Segment(i0 / SR + a, i0 / SR + b)
                        ref[seg, ref.new_track(seg)] = s
                files.append({"uri": ref.uri, "audio": audio, "reference": ref, "reference_turns": ref_turns,
                              "uem": None})
    return files


def load_train_mixtures() -> list[dict]:
    """Conversations for tuning only: train-clean-100 voices (none of them in the evaluated
    test-other mixtures), one utterance per speaker, another seed."""
    return load_mixtures(seed=11, n_per_k=3, turns_per_speaker=1, folder="train-clean-100", name="trn")


# --------------------------------------------------------------------------- scoring
def params_for(threshold: float, min_cluster_size: int, min_duration_off: float = 0.0) -> dict:
    return {
        "clustering": {"method": "centroid", "threshold": float(threshold), "min_cluster_size": int(min_cluster_size)},
        "segmentation": {"min_duration_off": float(min_duration_off)},
    }


def run_file(pipeline, f: dict, cfg: DiarizationConfig):
    """Diarize one benchmark file; the pipeline's training cache keeps segmentation/embeddings."""
    if "file" not in f:
        f["file"] = {"waveform": torch.from_numpy(f["audio"])[None], "sample_rate": SR, "uri": f["uri"]}
    kwargs = {k: v for k, v in (("num_speakers", cfg.num_speakers), ("min_speakers", cfg.min_speakers),
                                 ("max_speakers", cfg.max_speakers)) if v is not None}
    with torch.inference_mode():
        out = pipeline(f["file"], **kwargs)
    return out.speaker_diarization


def make_metric():
    """The DER metric every benchmark here uses: collar 0, overlapped speech scored."""
    from pyannote.metrics.diarization import DiarizationErrorRate

    return DiarizationErrorRate(collar=0.0, skip_overlap=False)


def score(files: list[dict], hyps: dict[str, object], *, verbose: bool = False, title: str = "",
          key: str = "reference") -> float:
    metric = make_metric()
    if verbose:
        print(f"\n== {title}")
        print(f"{'file':<14}{'spk ref/hyp':>12}{'DER%':>8}{'miss%':>8}{'FA%':>8}{'conf%':>8}{'RTF':>7}")
    for f in files:
        d = metric(f[key], hyps[f["uri"]], uem=f["uem"], detailed=True)
        if verbose:
            tot = d["total"] or 1.0
            rtf = f.get("rtf")
            print(f"{f['uri']:<14}{len(f['reference'].labels()):>6}/{len(hyps[f['uri']].labels()):<5}"
                  f"{100 * d['diarization error rate']:>8.1f}{100 * d['missed detection'] / tot:>8.1f}"
                  f"{100 * d['false alarm'] / tot:>8.1f}{100 * d['confusion'] / tot:>8.1f}"
                  f"{(f'{rtf:.3f}' if rtf is not None else '-'):>7}")
    overall = abs(metric)
    if verbose:
        tot = sum(metric[k] for k in ("total",)) or 1.0
        print(f"{'OVERALL':<14}{'':>12}{100 * overall:>8.1f}{100 * metric['missed detection'] / tot:>8.1f}"
              f"{100 * metric['false alarm'] / tot:>8.1f}{100 * metric['confusion'] / tot:>8.1f}")
        rtfs = [f for f in files if f.get("rtf") is not None]
        if rtfs:
            secs = sum(f["seconds"] for f in rtfs)
            dur = sum(len(f["audio"]) / SR for f in rtfs)
            print(f"RTF {secs / dur:.3f} ({secs:.1f} s for {dur:.0f} s of audio, models loaded)")
    return overall


def first_pass(pipeline, files: list[dict], cfg: DiarizationConfig) -> dict:
    hyps = {}
    for f in files:
        t0 = time.perf_counter()
        hyps[f["uri"]] = run_file(pipeline, f, cfg)
        f["seconds"] = time.perf_counter() - t0
        f["rtf"] = f["seconds"] / (len(f["audio"]) / SR)
    return hyps


def ablation(pipeline, cfg: DiarizationConfig, sets: dict[str, list[dict]]) -> None:
    """DER / miss / FA / confusion of each refinement step added alone to pyannote's output
    (``diarization.speech_detector`` none), then all of them (the config's defaults), then the
    defaults without the embedding resegmentation (``resegment_window_s`` 0)."""
    full = D.refine_settings(cfg)
    none = dict(full, detector="none")
    recover = full["max_distance"] or 0.5  # off by default: show what it would do
    plain = dict(full, shift_s=0.0, pause_s=0.0, max_distance=0.0, pad_onset_s=0.0, pad_offset_s=0.0)
    steps = [
        ("without refinement", none),
        ("+ edges moved", dict(plain, shift_s=full["shift_s"])),
        ("+ pauses cut", dict(plain, pause_s=full["pause_s"])),
        ("+ pads", dict(plain, pad_onset_s=full["pad_onset_s"], pad_offset_s=full["pad_offset_s"])),
        (f"+ recovered ({recover})", dict(plain, max_distance=recover)),
        ("all (defaults)", full),
        ("defaults, cut all pauses", dict(full, min_heard=0.0)),
        ("defaults, no reseg.", full),
    ]
    saved, saved_window = dict(pipeline.refine), pipeline.resegment_window_s
    print(f"\n== ablation (DER / miss / FA / confusion %, collar 0, overlap scored; mixtures pause-aware)")
    print(f"{'':<22}" + "".join(f"{name:>26}" for name in sets))
    for label, settings in steps:
        pipeline.refine = settings
        pipeline.resegment_window_s = 0.0 if label.endswith("no reseg.") else saved_window
        cells = []
        for files in sets.values():
            metric = make_metric()
            for f in files:
                metric(f["reference"], run_file(pipeline, f, cfg), uem=f["uem"])
            tot = metric["total"] or 1.0
            cells.append(f"{100 * abs(metric):.1f}/{100 * metric['missed detection'] / tot:.1f}/"
                         f"{100 * metric['false alarm'] / tot:.1f}/{100 * metric['confusion'] / tot:.1f}")
        print(f"{label:<22}" + "".join(f"{c:>26}" for c in cells))
    pipeline.refine, pipeline.resegment_window_s = saved, saved_window


def silent_stretches(pipeline, cfg: DiarizationConfig, files: list[dict], *, min_s: float = PAUSE_S) -> dict:
    """Silero-silent stretches (>= ``min_s``, hysteresis of the config) strictly inside the
    single-speaker turns of the unrefined diarization, and how much of them the reference calls
    speech. ``dip``: median energy of the stretch below the 90th percentile of its turn's 10 ms
    frame energies (dB): a real pause is deep, an unheard quiet voice shallow."""
    from tasks.diarization.refine import FRAME_S, runs, speech_frames, to_frames
    from tasks.audio.vad import speech_probability

    saved = dict(pipeline.refine)
    pipeline.refine = dict(saved, detector="none")
    total = reference_speech = 0.0
    dips: list[float] = []
    try:
        for f in files:
            hyp = run_file(pipeline, f, cfg)
            labels = [str(x) for x in hyp.labels()]
            n = int(np.ceil(len(f["audio"]) / SR / FRAME_S - 1e-9))
            if not labels or n == 0:
                continue
            turns = to_frames(hyp, labels, n)
            single = turns.sum(axis=1) == 1
            ref = to_frames(f["reference"], [str(x) for x in f["reference"].labels()], n).any(axis=1)
            scored = np.ones(n, bool)
            if f["uem"] is not None:  # only the scored region counts
                scored[:] = False
                for seg in f["uem"]:
                    scored[int(round(seg.start / FRAME_S)) : int(round(seg.end / FRAME_S))] = True
            probs, _, step = speech_probability(f["audio"], detector="silero")
            speech = speech_frames(probs, frame_step=step, n=n, onset=cfg.vad_onset, offset=cfg.vad_offset)
            energy = _frame_energy_db(f["audio"].astype(np.float64), hop=int(round(FRAME_S * SR)), n=n)
            for k in range(len(labels)):
                for a, b in runs(turns[:, k]):
                    for p, q in runs(~speech[a:b]):
                        lo, hi = a + p, a + q
                        if (q - p) * FRAME_S < min_s or p == 0 or q == b - a:
                            continue
                        if single[lo:hi].mean() < 0.5 or not scored[lo:hi].all():
                            continue
                        total += (hi - lo) * FRAME_S
                        reference_speech += ref[lo:hi].sum() * FRAME_S
                        dips.append(float(np.percentile(energy[a:b], 90) - np.median(energy[lo:hi])))
    finally:
        pipeline.refine = saved
    return {"stretches": len(dips), "seconds": total, "reference_speech": reference_speech,
            "dip_db": float(np.median(dips)) if dips else float("nan")}


def reference_conventions(pipeline, cfg: DiarizationConfig, ami: list[dict], train_mixtures: list[dict],
                          test_mixtures: list[dict]) -> None:
    """Why one default cannot meet the AMI and the pause-aware LibriSpeech targets together:
    the AMI references bridge a speaker's pauses, the mixtures' references cut them."""
    print("\n== reference conventions (pauses inside a speaker's turn)")
    gaps = []
    for f in ami:
        for label in f["reference"].labels():
            segs = list(f["reference"].label_timeline(label).support())
            gaps += [b.start - a.end for a, b in zip(segs, segs[1:])]
    if gaps:
        print(f"AMI references: {len(gaps)} gaps between one speaker's turns, shortest {min(gaps):.2f} s, "
              f"10th percentile {np.percentile(gaps, 10):.2f} s: shorter pauses are speech there")
    for name, files in (("train mixtures", train_mixtures), ("test mixtures", test_mixtures)):
        if not files:
            continue
        cells = []
        for gap in (0.3, 0.5, 0.84):
            metric = make_metric()
            for f in files:
                metric(f["reference"], f["reference"].support(collar=gap), uem=f["uem"])  # pauses < gap bridged
            cells.append(f"< {gap} s: {100 * abs(metric):.1f}")
        print(f"{name}: DER of a perfect diarizer that bridges each speaker's pauses " + ", ".join(cells) + " %")
    for name, files in (("AMI (train + development)", ami), ("train mixtures", train_mixtures)):
        if files:
            r = silent_stretches(pipeline, cfg, files)
            share = 100 * r["reference_speech"] / r["seconds"] if r["seconds"] else float("nan")
            print(f"{name}: {r['stretches']} Silero-silent stretches >= {PAUSE_S} s inside single-speaker turns, "
                  f"{r['seconds']:.1f} s, {share:.0f} % of it reference speech; median energy dip {r['dip_db']:.0f} dB")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tune", action="store_true", help="sweep threshold × min_cluster_size on AMI debug.train")
    ap.add_argument("--threshold", type=float, default=None, help="clustering threshold (default: config default)")
    ap.add_argument("--min-cluster-size", type=int, default=None)
    ap.add_argument("--thresholds", default="0.45:1.0:0.025", help="sweep range start:stop:step")
    ap.add_argument("--min-cluster-sizes", default="1,2,4,8,12")
    ap.add_argument("--min-duration-off", type=float, default=None)
    ap.add_argument("--min-durations-off", default="0,0.1,0.2,0.3,0.5,0.8")
    ap.add_argument("--skip-mixtures", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 avoids oversubscription on a shared CPU)")
    ap.add_argument("--step", type=float, default=None, help="segmentation step (share of the 10 s window)")
    ap.add_argument("--skip-dev", action="store_true")
    ap.add_argument("--segmentation-model", default=None,
                    help="segmentation model reference or local directory (default: config default); "
                         "e.g. a fine-tuned copy from benchmarks/finetune_segmentation.py")
    ap.add_argument("--ablation", action="store_true",
                    help="also score each refinement component (speech detector) on its own, train and held out")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    base = DiarizationConfig(device=args.device)
    if args.segmentation_model is not None:
        base = base.model_copy(update={"segmentation_model": args.segmentation_model})
    if args.step is not None:
        base = base.model_copy(update={"segmentation_step": args.step})
    thr = base.clustering_threshold if args.threshold is None else args.threshold
    mcs = base.min_cluster_size if args.min_cluster_size is None else args.min_cluster_size
    mdo = base.min_duration_off if args.min_duration_off is None else args.min_duration_off
    cfg = base.model_copy(update={"clustering_threshold": thr, "min_cluster_size": mcs, "min_duration_off": mdo})

    t0 = time.perf_counter()
    pipeline = D.load_diarization_pipeline(cfg)
    print(f"models loaded in {time.perf_counter() - t0:.1f} s; torch threads {torch.get_num_threads()}; "
          f"segmentation model {cfg.segmentation_model}, step {cfg.segmentation_step}")
    pipeline.training = True  # cache segmentation + embeddings inside each file dict

    train, dev = load_ami("train"), ([] if args.skip_dev else load_ami("development"))
    mixtures = [] if args.skip_mixtures else load_mixtures()

    # first pass with the starting values: real-time factor (nothing cached yet)
    first = {}
    for files in (train, dev, mixtures):
        first.update(first_pass(pipeline, files, cfg))

    if args.tune:
        start, stop, step = (float(x) for x in args.thresholds.split(":"))
        grid_t = [float(t) for t in np.round(np.arange(start, stop + 1e-9, step), 4)]
        grid_m = [int(x) for x in args.min_cluster_sizes.split(",")]
        grid_d = [float(x) for x in args.min_durations_off.split(",")]

        def train_der(t: float, m: int, d: float) -> float:
            pipeline.instantiate(params_for(t, m, d))
            return score(train, {f["uri"]: run_file(pipeline, f, cfg) for f in train})

        # lowest DER; ties -> threshold nearest 0.75, then the LARGER min_cluster_size (30 s files
        # cannot tell sizes apart: pyannote caps it at 10 % of the embeddings; on long recordings a
        # larger size keeps tiny spurious clusters from becoming speakers), then smaller gap filling
        def pick(results):
            return min(results, key=lambda r: (round(r[0], 4), abs(r[1] - 0.75), -r[2], r[3]))

        # 1) threshold x min_cluster_size at min_duration_off=0
        results = []
        print("thresholds:                       " + " ".join(f"{t:5.3f}"[:5] for t in grid_t))
        for m in grid_m:
            row = [train_der(t, m, 0.0) for t in grid_t]
            results += [(der, t, m, 0.0) for der, t in zip(row, grid_t)]
            print(f"train DER% min_cluster_size={m:>2}: " + " ".join(f"{100 * d:5.1f}" for d in row))
        _, thr, mcs, _ = pick(results)
        # 2) min_duration_off at that point
        results2 = [(train_der(thr, mcs, d), thr, mcs, d) for d in grid_d]
        print(f"train DER% min_duration_off (t={thr}, m={mcs}): "
              + " ".join(f"{d}:{100 * r[0]:.1f}" for d, r in zip(grid_d, results2)))
        _, _, _, mdo = pick(results2)
        # 3) threshold again at that min_duration_off
        results3 = [(train_der(t, mcs, mdo), t, mcs, mdo) for t in grid_t]
        print(f"train DER% min_duration_off={mdo}, m={mcs}:  " + " ".join(f"{100 * r[0]:5.1f}" for r in results3))
        best = pick(results + results2 + results3)
        print(f"best on train: threshold={best[1]} min_cluster_size={best[2]} min_duration_off={best[3]} "
              f"DER={100 * best[0]:.1f}%")
        _, thr, mcs, mdo = best
        cfg = cfg.model_copy(update={"clustering_threshold": thr, "min_cluster_size": mcs, "min_duration_off": mdo})

    pipeline.instantiate(params_for(thr, mcs, mdo))
    print(f"\nevaluating threshold={thr} min_cluster_size={mcs} min_duration_off={mdo} "
          f"segmentation_step={cfg.segmentation_step} (centroid linkage, cosine, CAM++)")
    for name, files in (("AMI debug.train", train), ("AMI debug.development", dev)):
        if files:
            score(files, {f["uri"]: run_file(pipeline, f, cfg) for f in files}, verbose=True, title=name)
    if mixtures:
        clean = [f for f in mixtures if not f["uri"].endswith("-ov")]
        over = [f for f in mixtures if f["uri"].endswith("-ov")]
        for name, group in (("no overlap", clean), ("some overlap", over), ("all", mixtures)):
            hyps = {f["uri"]: run_file(pipeline, f, cfg) for f in group}
            score(group, hyps, verbose=True,
                  title=f"LibriSpeech mixtures, {name} (pause-aware reference: 10 ms frames, pauses >= {PAUSE_S} s cut)")
            old = score(group, hyps, key="reference_turns")
            print(f"same against the old reference (whole trimmed utterances, pauses count as speech): DER {100 * old:.1f}%")
    if args.ablation:
        train_mixtures = load_train_mixtures()
        ablation(pipeline, cfg, {"AMI debug.train": train, "train mixtures": train_mixtures,
                                 "AMI debug.development": dev, "test mixtures": mixtures})
        reference_conventions(pipeline, cfg, train + dev, train_mixtures, mixtures)
    ami = train + dev
    secs = sum(f["seconds"] for f in ami)
    dur = sum(len(f["audio"]) / SR for f in ami)
    print(f"\nAMI (12 files) first-pass RTF {secs / dur:.3f} on this CPU ({secs:.1f} s / {dur:.0f} s), models loaded")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
