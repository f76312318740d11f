"""Write a small, contract-conformant run directory from a seeded rng (for tests).

The layout and columns follow the run directory contract of ``DESIGN.md``:
``manifest.json``, ``config.yaml``, ``segments.parquet`` (+ ``segments.csv``), ``failures.csv``,
``embeddings.npy`` + ``embeddings_index.csv`` and per recording ``diarization.rttm``,
``segments/<id>.json``, ``frames/<id>.npy`` (drilled segments) and ``embeddings/<id>.npy``.

Embeddings are planted around ``n_clusters`` well separated centres, so clustering can be checked
against the truth (:attr:`FakeRun.clusters`). Turns come either from a reference RTTM (e.g. the AMI
excerpts, so diarization can be evaluated against it) or are drawn at random.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.core.config import Config
from tasks.core.records import EMOTIONS, segment_id
from tasks.core.storage import atomic_write_json, atomic_write_npy, atomic_write_text

HOP_S = 0.02
# Each planted cluster has a "home" emotion, so labels and embeddings agree.
CLUSTER_EMOTIONS = ("happy", "sad", "angry", "neutral", "surprised", "fearful")


@dataclass
class FakeRun:
    path: Path
    segments: pd.DataFrame
    clusters: dict[str, int] = field(default_factory=dict)  # segment_id -> planted cluster
    recording_ids: list[str] = field(default_factory=list)


def _random_turns(rng: np.random.Generator, duration: float, speakers: list[str]) -> list[tuple[str, float, float]]:
    turns, t = [], float(rng.uniform(0.2, 1.0))
    while t < duration - 0.5:
        d = float(min(rng.choice([rng.uniform(0.6, 1.4), rng.uniform(1.8, 9.0)], p=[0.2, 0.8]), duration - t))
        turns.append((str(rng.choice(speakers)), round(t, 3), round(t + d, 3)))
        t += d + float(rng.uniform(-0.3, 0.8))  # small overlaps and gaps
    return turns


def _read_rttm(path: Path) -> dict[str, list[tuple[str, float, float]]]:
    out: dict[str, list[tuple[str, float, float]]] = {}
    for line in path.read_text().splitlines():
        f = line.split()
        if len(f) >= 8 and f[0] == "SPEAKER":
            start, dur = float(f[3]), float(f[4])
            out.setdefault(f[1], []).append((f[7], start, round(start + dur, 3)))
    return out


def _rttm_text(uri: str, turns: list[tuple[str, float, float]]) -> str:
    return "".join(
        f"SPEAKER {uri} 1 {s:.3f} {e - s:.3f} <NA> <NA> {spk} <NA> <NA>\n" for spk, s, e in sorted(turns, key=lambda x: x[1])
    )


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.exp(x - x.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


def make_run_dir(
    root: str | Path,
    *,
    seed: int = 0,
    n_recordings: int = 2,
    duration_s: float = 60.0,
    embed_dim: int = 32,
    n_clusters: int = 3,
    threshold: float = 0.7,
    drilldown: bool = True,
    test_model: bool = True,
    reference_rttm: str | Path | None = None,
    audio_dir: str | Path | None = None,
    run_id: str | None = None,
) -> FakeRun:
    """Write a run directory under ``root`` and describe what was planted.

    Parameters
    ----------
    reference_rttm : path, optional
        Take recordings and speaker turns from this RTTM (its ``diarization.rttm`` files then
        equal the reference, so DER against it is 0).
    drilldown : bool
        ``drilldown.enabled``: when False no segment is drilled (no frames), whatever its confidence.
    audio_dir : path, optional
        Where ``<recording_id>.flac``/``.wav`` sources live; when missing a short synthetic WAV is
        written under ``root/inputs`` so audio players have something to play.
    """
    rng = np.random.default_rng(seed)
    run = Path(root)
    run.mkdir(parents=True, exist_ok=True)
    cfg = Config()
    cfg.screen.threshold = threshold
    cfg.drilldown.enabled = drilldown
    cfg.export.embeddings = "all"
    if reference_rttm is not None:
        turns_by_rec = _read_rttm(Path(reference_rttm))
    else:
        turns_by_rec = {}
        for r in range(n_recordings):
            spk = [f"SPEAKER_{i:02d}" for i in range(int(rng.integers(2, 4)))]
            turns_by_rec[f"meeting{r + 1}"] = _random_turns(rng, duration_s, spk)

    centres = rng.normal(size=(n_clusters, embed_dim))
    centres *= 4.0 / np.linalg.norm(centres, axis=1, keepdims=True)
    model_sha = "0" * 63 + "1"
    rows: list[dict] = []
    clusters: dict[str, int] = {}
    emb_rows: list[np.ndarray] = []
    inputs = []
    for rid, turns in turns_by_rec.items():
        rec_dir = run / "recordings" / rid
        source = None
        for ext in (".flac", ".wav"):
            if audio_dir is not None and (Path(audio_dir) / f"{rid}{ext}").is_file():
                source = Path(audio_dir) / f"{rid}{ext}"
                break
        rec_end = max(e for _, _, e in turns) + 0.5
        if source is None:
            from tasks.audio.decode import write_wav

            t = np.arange(int(rec_end * 16000)) / 16000.0
            wave = 0.1 * np.sin(2 * np.pi * (180 + 40 * np.sin(t)) * t) + 0.01 * rng.normal(size=t.size)
            source = write_wav(run.parent / f"{run.name}-inputs" / f"{rid}.wav", wave.astype(np.float32))
        inputs.append({"path": str(source), "recording_id": rid, "sha256": "f" * 64, "duration": round(rec_end, 3)})
        atomic_write_text(rec_dir / "diarization.rttm", _rttm_text(rid, turns))
        # segments: split turns into pieces of at most 10 s, in time order
        pieces = []
        for spk, s, e in turns:
            n = max(1, int(np.ceil((e - s) / 10.0)))
            edges = np.linspace(s, e, n + 1)
            pieces += [(spk, float(a), float(b)) for a, b in zip(edges[:-1], edges[1:])]
        pieces.sort(key=lambda p: p[1])
        for i, (spk, s, e) in enumerate(pieces):
            sid = segment_id(rid, i)
            dur = e - s
            status = "too_short" if dur < 1.5 else ("overlap" if rng.random() < 0.08 else "ok")
            row = {
                "recording_id": rid, "source_path": str(source), "segment_id": sid, "speaker": spk,
                "start": round(s, 3), "end": round(e, 3), "duration": round(dur, 3), "status": status,
                "label": None, "confidence": np.nan, **{f"score_{k}": np.nan for k in EMOTIONS},
                "drilled": False, "embedding_row": pd.NA, "model_sha256": model_sha,
            }
            if status == "ok":
                c = int(rng.integers(n_clusters))
                clusters[sid] = c
                home = EMOTIONS.index(CLUSTER_EMOTIONS[c % len(CLUSTER_EMOTIONS)])
                logits = rng.normal(0, 0.6, size=9)
                logits[home] += float(rng.uniform(0.8, 4.0))
                scores = _softmax(logits)
                best = int(np.argmax(scores))
                row.update(label=EMOTIONS[best], confidence=float(scores[best]),
                           **{f"score_{k}": float(v) for k, v in zip(EMOTIONS, scores)})
                row["drilled"] = drilldown and bool(scores[best] < threshold)
                emb = (centres[c] + rng.normal(0, 0.5, size=embed_dim)).astype(np.float32)
                row["embedding_row"] = len(emb_rows)
                emb_rows.append(emb)
                atomic_write_npy(rec_dir / "embeddings" / f"{sid}.npy", emb)
                doc = {
                    "segment_id": sid, "recording_id": rid, "speaker": spk, "start": row["start"],
                    "end": row["end"], "granularity": "utterance", "emotion": EMOTIONS[best],
                    "confidence": round(float(scores[best]), 6),
                    "scores": {k: round(float(v), 6) for k, v in zip(EMOTIONS, scores)},
                    "frames": None, "model": {"id": "tiny-test-model", "sha256": model_sha},
                }
                if row["drilled"]:
                    n_frames = max(1, int(round(dur / HOP_S)))
                    drift = np.cumsum(rng.normal(0, 0.15, size=(n_frames, 9)), axis=0)
                    frames = _softmax(np.log(scores + 1e-9)[None, :] + drift).astype(np.float32)
                    atomic_write_npy(rec_dir / "frames" / f"{sid}.npy", frames)
                    doc["frames"] = {"hop_s": HOP_S, "file": f"frames/{sid}.npy"}
                atomic_write_json(rec_dir / "segments" / f"{sid}.json", doc)
            rows.append(row)

    seg = pd.DataFrame(rows)
    seg["embedding_row"] = seg["embedding_row"].astype("Int64")
    seg.to_parquet(run / "segments.parquet", index=False)
    atomic_write_text(run / "segments.csv", seg.to_csv(index=False))
    atomic_write_text(run / "failures.csv", "input,stage,error,message\n/data/broken.mp3,load,CorruptAudioError,"
                      "\"/data/broken.mp3: truncated or corrupt audio (header says 12.00 s, decoded 3.10 s)\"\n")
    emb = np.stack(emb_rows) if emb_rows else np.zeros((0, embed_dim), np.float32)
    atomic_write_npy(run / "embeddings.npy", emb)
    idx = seg.dropna(subset=["embedding_row"])[["segment_id", "embedding_row"]].rename(columns={"embedding_row": "row"})
    atomic_write_text(run / "embeddings_index.csv", idx.to_csv(index=False))
    atomic_write_text(run / "config.yaml", cfg.to_yaml())
    manifest = {
        "run_id": run_id or f"test-run-{seed}",
        "started": "2026-11-25T10:00:00+00:00",
        "finished": "2026-11-25T10:01:30+00:00",
        "emoflow_version": "0.1.0",
        "config": cfg.to_plain(),
        "config_sha256": cfg.sha256(),
        "models": {
            "emotion": {"id": "tiny-test-model" if test_model else "iic/emotion2vec_plus_large",
                        "path": "/tmp/models/emotion2vec_tiny", "sha256": model_sha,
                        "is_test_model": test_model, "embed_dim": embed_dim},
            "segmentation": {"id": "pyannote/segmentation-3.0", "sha256": "a" * 64},
        },
        "inputs": inputs,
        "recordings": {rid: {"stages": {"denoise": {"status": "computed", "seconds": 1.25},
                                        "diarize": {"status": "reused", "seconds": 0.01}}}
                       for rid in turns_by_rec},
    }
    atomic_write_json(run / "manifest.json", manifest)
    return FakeRun(path=run, segments=seg, clusters=clusters, recording_ids=list(turns_by_rec))


__all__ = ["FakeRun", "make_run_dir", "HOP_S"]
