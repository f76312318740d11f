"""Export: the run directory of the output contract (DESIGN.md).

Per recording, :func:`export_recording` writes ``recordings/<id>/`` (RTTM, one JSON per
screened segment, frame curves of drilled segments, embeddings, optionally the denoised audio,
and ``segments.csv`` with every segment of the recording). It builds the directory aside and
swaps it in, so a killed export never leaves a half directory that a rerun trusts.

Per run, :func:`write_run_tables` gathers those into ``segments.parquet`` / ``.csv``,
``embeddings.npy`` + ``embeddings_index.csv``; :func:`write_failures` writes ``failures.csv``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import pandas as pd

from tasks.records import EMOTIONS
from tasks.storage import atomic_write_text, atomic_write_with

if TYPE_CHECKING:
    from flows.recording import RecordingJob

SCORE_COLUMNS = [f"score_{e}" for e in EMOTIONS]
TABLE_COLUMNS = [
    "recording_id", "source_path", "segment_id", "speaker", "start", "end", "duration", "label", "confidence",
    *SCORE_COLUMNS, "drilled", "embedding_row", "model_sha256",
    # Extensions of the contract (appended, so readers of the contract columns are unaffected):
    "status", "snr_before_db", "snr_after_db",
]
FAILURE_COLUMNS = ["input", "stage", "error", "message"]
STRING_COLUMNS = ["recording_id", "source_path", "segment_id", "speaker", "label", "model_sha256", "status"]
"""Ids, names and labels: strings whatever they look like (``0001``, ``nan``, ``1e3``)."""
FLOAT_COLUMNS = ["start", "end", "duration", "confidence", *SCORE_COLUMNS, "snr_before_db", "snr_after_db"]
RECORDING_TABLE_COLUMNS = [c for c in TABLE_COLUMNS if c != "embedding_row"] + ["embedding_exported"]


def table_schema(columns: list[str] = TABLE_COLUMNS) -> "pa.Schema":
    """The Arrow schema of ``segments.parquet``: strings are strings, never inferred."""
    import pyarrow as pa

    types = {**{c: pa.string() for c in STRING_COLUMNS}, **{c: pa.float64() for c in FLOAT_COLUMNS},
             "drilled": pa.bool_(), "embedding_exported": pa.bool_(), "embedding_row": pa.int64()}
    return pa.schema([(c, types[c]) for c in columns])


def coerce_table(table: pd.DataFrame) -> pd.DataFrame:
    """Give a segments table its column types: pandas ``string`` for ids and labels (an
    unscored row's label is NA), float64 for times and scores, bool flags, nullable int rows."""
    out = table.copy()
    for c in out.columns:
        if c in STRING_COLUMNS:
            col = out[c].astype("string")
            out[c] = col.mask(col == "") if c == "label" else col
        elif c in FLOAT_COLUMNS:
            out[c] = pd.to_numeric(out[c], errors="coerce").astype("float64")
        elif c in ("drilled", "embedding_exported"):
            out[c] = out[c].map(lambda v: str(v).strip().lower() in ("true", "1")).astype(bool)
        elif c == "embedding_row":
            out[c] = pd.to_numeric(out[c], errors="coerce").astype("Int64")
    return out


def read_table_csv(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a segments CSV back with its types (ids never parsed as numbers or NaN)."""
    return coerce_table(pd.read_csv(path, dtype=str, keep_default_na=False))


def wants_embedding(policy: str, *, confidence: float, threshold: float) -> bool:
    """Whether a screened segment's embedding is exported under ``export.embeddings``."""
    if policy == "all":
        return True
    if policy == "high_confidence":
        return confidence >= threshold
    return False


def segment_json(*, row: dict[str, Any], segment: Any, model: dict[str, Any], hop_s: float | None) -> dict[str, Any]:
    """The segment result JSON (compatible with the Emotion2Vec+ WebUI's ``result.json``)."""
    out: dict[str, Any] = {
        "segment_id": segment.segment_id,
        "recording_id": segment.recording_id,
        "speaker": segment.speaker,
        "start": round(segment.start, 3),
        "end": round(segment.end, 3),
        "granularity": "utterance",
        "emotion": row["label"],
        "confidence": round(row["confidence"], 6),
        "scores": {e: round(float(s), 6) for e, s in zip(EMOTIONS, row["scores"])},
        "frames": {"hop_s": hop_s, "file": f"frames/{segment.segment_id}.npy"} if row["drilled"] else None,
        "model": {"id": model.get("id"), "sha256": model.get("sha256")},
        "drilled": row["drilled"],
    }
    if row.get("drilldown"):
        out["drilldown"] = row["drilldown"]
    if model.get("is_test_model"):
        out["model"]["test_model"] = True
        out["warning"] = "scores from a randomly initialised TEST model: meaningless"
    return out


def export_recording(job: "RecordingJob") -> dict[str, Any]:
    """Write ``recordings/<id>/`` for one recording from its stage artefacts."""
    from flows.recording import load_denoised, read_segments
    from tasks.audio import write_wav
    from tasks.diarize import rename_rttm

    cfg = job.cfg
    final = job.recording_dir
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{job.recording_id}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    (tmp / "segments").mkdir(parents=True)
    try:
        model = job.models.get("emotion", {})
        denoise_facts = json.loads((job.artefact("denoise") / "meta.json").read_text())["facts"]
        rttm = (job.artefact("diarize") / "diarization.rttm").read_text(encoding="utf-8")
        (tmp / "diarization.rttm").write_text(rename_rttm(rttm, uri=job.recording_id), encoding="utf-8")
        screen_dir = job.artefact("screen")
        rows = {r["index"]: r for r in json.loads((screen_dir / "screen.json").read_text())}
        frames = np.load(screen_dir / "frames.npz") if (screen_dir / "frames.npz").is_file() else {}
        emb_dir = job.artefact("emotion")
        emb_positions = json.loads((emb_dir / "segment_index.json").read_text())
        embeddings = np.load(emb_dir / "embeddings.npy", mmap_mode="r")
        emb_row = {pos: i for i, pos in enumerate(emb_positions)}
        table: list[dict[str, Any]] = []
        n_frames = n_emb = 0
        for pos, seg in enumerate(read_segments(job)):
            rec: dict[str, Any] = {
                "recording_id": job.recording_id, "source_path": job.source_path, "segment_id": seg.segment_id,
                "speaker": seg.speaker, "start": round(seg.start, 3), "end": round(seg.end, 3),
                "duration": round(seg.end - seg.start, 3), "label": None, "confidence": np.nan,
                **{c: np.nan for c in SCORE_COLUMNS}, "drilled": False, "embedding_exported": False,
                "model_sha256": model.get("sha256", ""), "status": seg.status,
                "snr_before_db": denoise_facts.get("snr_before_db"), "snr_after_db": denoise_facts.get("snr_after_db"),
            }
            row = rows.get(pos)
            if row is not None:
                rec.update({"label": row["label"], "confidence": row["confidence"], "drilled": row["drilled"],
                            **dict(zip(SCORE_COLUMNS, row["scores"]))})
                doc = segment_json(row=row, segment=seg, model=model,
                                   hop_s=cfg.drilldown.frame_hop_s if row["drilled"] else None)
                (tmp / "segments" / f"{seg.segment_id}.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False))
                if row["drilled"]:
                    (tmp / "frames").mkdir(exist_ok=True)
                    np.save(tmp / "frames" / f"{seg.segment_id}.npy", np.asarray(frames[str(pos)], np.float32))
                    n_frames += 1
                if wants_embedding(cfg.export.embeddings, confidence=row["confidence"], threshold=cfg.screen.threshold):
                    (tmp / "embeddings").mkdir(exist_ok=True)
                    np.save(tmp / "embeddings" / f"{seg.segment_id}.npy",
                            np.asarray(embeddings[emb_row[pos]], np.float32))
                    rec["embedding_exported"] = True
                    n_emb += 1
            table.append(rec)
        pd.DataFrame(table, columns=RECORDING_TABLE_COLUMNS).to_csv(tmp / "segments.csv", index=False)
        if cfg.export.denoised_audio:
            write_wav(tmp / "denoised.wav", np.asarray(load_denoised(job), np.float32), sample_rate=cfg.audio.sample_rate)
        (tmp / ".export-key").write_text(job.export_marker + "\n")
        _swap_in(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return {"segments": len(table), "segment_json": len(rows), "frames": n_frames, "embeddings": n_emb}


def _swap_in(tmp: Path, final: Path) -> None:
    """Replace directory ``final`` by ``tmp`` (old one moved aside, then removed)."""
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(final, old)
    os.rename(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_run_tables(out_dir: Path, recording_ids: Iterable[str], *, csv_too: bool = True) -> pd.DataFrame:
    """Gather the recordings' tables into ``segments.parquet`` (+ ``.csv``) and ``embeddings.npy``."""
    frames = []
    for rid in recording_ids:
        path = out_dir / "recordings" / rid / "segments.csv"
        if path.is_file():
            frames.append(read_table_csv(path))
    table = coerce_table(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        {c: pd.Series(dtype=object) for c in RECORDING_TABLE_COLUMNS}))
    exported = table["embedding_exported"].to_numpy(dtype=bool)
    rows = np.full(len(table), -1, dtype=np.int64)
    vectors = []
    for i in np.flatnonzero(exported):
        rid, sid = table.at[i, "recording_id"], table.at[i, "segment_id"]
        vectors.append(np.load(out_dir / "recordings" / rid / "embeddings" / f"{sid}.npy"))
        rows[i] = len(vectors) - 1
    table["embedding_row"] = pd.array([r if r >= 0 else None for r in rows], dtype="Int64")
    table = table[TABLE_COLUMNS].sort_values(["recording_id", "start"], kind="stable").reset_index(drop=True)
    dim = vectors[0].shape[0] if vectors else 0
    emb = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, dim), np.float32)
    from tasks.storage import atomic_write_npy

    atomic_write_npy(out_dir / "embeddings.npy", emb)
    index = table.loc[table["embedding_row"].notna(), ["segment_id", "embedding_row"]].rename(
        columns={"embedding_row": "row"})
    atomic_write_text(out_dir / "embeddings_index.csv", index.to_csv(index=False))
    atomic_write_with(out_dir / "segments.parquet",
                      lambda tmp: table.to_parquet(tmp, index=False, schema=table_schema()))
    if csv_too:
        atomic_write_text(out_dir / "segments.csv", table.to_csv(index=False))
    return table


def write_failures(out_dir: Path, failures: list[dict[str, str]]) -> Path:
    """``failures.csv``: input, stage, error, message (header only when nothing failed)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FAILURE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for f in failures:
        writer.writerow({k: str(f.get(k, "")).replace("\n", " ") for k in FAILURE_COLUMNS})
    return atomic_write_text(out_dir / "failures.csv", buf.getvalue())
