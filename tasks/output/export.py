"""Export: the run directory of the output contract (DESIGN.md).

Per recording, :func:`export_recording` writes ``recordings/<id>/`` (RTTM, one JSON per
screened segment, frame curves of drilled segments, embeddings, optionally the denoised audio,
and ``segments.csv`` with every segment of the recording). It builds the directory aside and
swaps it in, so a killed export never leaves a half directory that a rerun trusts.

Per run, :func:`write_run_tables` gathers those into ``segments.parquet`` / ``.csv``,
``embeddings.npy`` + ``embeddings_index.csv``; :func:`write_failures` writes ``failures.csv``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from dataclasses import replace
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from tasks.core.config import ExportConfig
from tasks.core.csvsafe import unguard, write_csv, write_rows
from tasks.core.records import EMOTIONS, EmotionResult, Recording, Segment
from tasks.core.storage import atomic_write_with

SCORE_COLUMNS = [f"score_{e}" for e in EMOTIONS]
TABLE_COLUMNS = [
    "recording_id", "source_path", "segment_id", "speaker", "start", "end", "duration", "label", "confidence",
    *SCORE_COLUMNS, "drilled", "embedding_row", "model_sha256",
    # Extensions of the contract (appended, so readers of the contract columns are unaffected):
    "status", "snr_before_db", "snr_after_db", "global_speaker",
    # what was said (transcribe stage): text on every row ("" where nothing was said)
    "text", "language", "events", "sv_emotion", "emotion_agree",
]
FAILURE_COLUMNS = ["input", "stage", "error", "message"]
STRING_COLUMNS = ["recording_id", "source_path", "segment_id", "speaker", "label", "model_sha256", "status",
                  "global_speaker", "text", "language", "events", "sv_emotion"]
"""Ids, names and labels: strings whatever they look like (``0001``, ``nan``, ``1e3``)."""
NULL_WHEN_EMPTY = ("label", "language", "events", "sv_emotion")
"""String columns whose empty value means "none" (null in Parquet, empty in CSV); ``text`` is a
string on every row."""
SHARED_EMOTIONS = ("angry", "happy", "neutral", "sad")
"""The classes emotion2vec+ and SenseVoice both have (``emotion_agree`` compares only these)."""
TRANSCRIPT_WORD_COLUMNS = ["recording_id", "segment_id", "speaker", "start", "end", "word", "emotion", "sv_emotion"]
"""``transcripts.csv``: one row per transcribed word, in recording seconds."""
FLOAT_COLUMNS = ["start", "end", "duration", "confidence", *SCORE_COLUMNS, "snr_before_db", "snr_after_db"]
RUN_ONLY_COLUMNS = ("embedding_row", "global_speaker")
"""Columns known only once every recording is done (embedding rows, links across recordings)."""
RECORDING_TABLE_COLUMNS = [c for c in TABLE_COLUMNS if c not in RUN_ONLY_COLUMNS] + ["embedding_exported"]


def table_schema(columns: list[str] = TABLE_COLUMNS) -> "pa.Schema":
    """The Arrow schema of ``segments.parquet``: strings are strings, never inferred."""
    import pyarrow as pa

    types = {**{c: pa.string() for c in STRING_COLUMNS}, **{c: pa.float64() for c in FLOAT_COLUMNS},
             "drilled": pa.bool_(), "embedding_exported": pa.bool_(), "embedding_row": pa.int64(),
             "emotion_agree": pa.bool_()}
    return pa.schema([(c, types[c]) for c in columns])


def coerce_table(table: pd.DataFrame) -> pd.DataFrame:
    """Give a segments table its column types: pandas ``string`` for ids and labels (an
    unscored row's label is NA), float64 for times and scores, bool flags, nullable int rows."""
    out = table.copy()
    for c in out.columns:
        if c in STRING_COLUMNS:
            col = out[c].astype("string")
            out[c] = col.mask(col == "") if c in NULL_WHEN_EMPTY else (col.fillna("") if c == "text" else col)
        elif c in FLOAT_COLUMNS:
            out[c] = pd.to_numeric(out[c], errors="coerce").astype("float64")
        elif c in ("drilled", "embedding_exported"):
            out[c] = out[c].map(lambda v: str(v).strip().lower() in ("true", "1")).astype(bool)
        elif c == "embedding_row":
            out[c] = pd.to_numeric(out[c], errors="coerce").astype("Int64")
        elif c == "emotion_agree":
            out[c] = pd.array([None if str(v).strip().lower() not in ("true", "false") else
                               str(v).strip().lower() == "true" for v in out[c]], dtype="boolean")
    return out


def read_table_csv(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a segments CSV back with its types (ids never parsed as numbers or NaN; the
    formula guard of text cells removed, :mod:`tasks.core.csvsafe`)."""
    return coerce_table(_read_table_text(path))


def _read_table_text(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A segments CSV as written (every cell a string, the formula guard removed), before
    :func:`coerce_table`."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    for c in table.columns:
        if c in STRING_COLUMNS:
            table[c] = table[c].map(unguard)
    return table


def wants_embedding(policy: str, *, confidence: float, threshold: float) -> bool:
    """Whether a screened segment's embedding is exported under ``export.embeddings``."""
    if policy == "all":
        return True
    if policy == "high_confidence":
        return confidence >= threshold
    return False


def emotion_agree(label: str | None, sv_emotion: str | None) -> bool | None:
    """Whether emotion2vec+'s label and SenseVoice's agree, on the classes both have
    (:data:`SHARED_EMOTIONS`); None when either is missing or outside them."""
    if label in SHARED_EMOTIONS and sv_emotion in SHARED_EMOTIONS:
        return label == sv_emotion
    return None


def segment_json(*, result: EmotionResult, segment: Segment, model: dict[str, Any], hop_s: float | None,
                 frames_file: str | None = None, transcript: dict[str, Any] | None = None) -> dict[str, Any]:
    """The segment result JSON (compatible with the Emotion2Vec+ WebUI's ``result.json``).

    ``frames`` points to ``frames_file`` (default ``frames/<segment_id>.npy``) for a drilled
    segment and is null otherwise; the UI writes the same document.
    """
    out: dict[str, Any] = {
        "segment_id": segment.segment_id,
        "recording_id": segment.recording_id,
        "speaker": segment.speaker,
        "start": round(segment.start, 3),
        "end": round(segment.end, 3),
        "granularity": "utterance",
        "emotion": result.label,
        "confidence": round(result.confidence, 6),
        "scores": {e: round(float(s), 6) for e, s in zip(EMOTIONS, result.scores)},
        "frames": ({"hop_s": hop_s, "file": frames_file or f"frames/{segment.segment_id}.npy"}
                   if result.drilled else None),
        "model": {"id": model.get("id"), "sha256": model.get("sha256")},
        "drilled": result.drilled,
    }
    if result.drilldown:
        out["drilldown"] = result.drilldown
    t = transcript or {}
    out["text"] = t.get("text", "")
    out["words"] = [{"text": w, "start": a, "end": b} for w, a, b in t.get("words", [])]
    out["events"] = list(t.get("events", []))
    if t:
        out["language"] = t.get("language") or None
        out["sv_emotion"] = t.get("emotion") or None
    if model.get("is_test_model"):
        out["model"]["test_model"] = True
        out["warning"] = "scores from a randomly initialised TEST model: meaningless"
    return out


def table_row(*, recording: Recording, segment: Segment, result: EmotionResult | None, model_sha256: str,
              snr: dict[str, Any], transcript: dict[str, Any] | None = None) -> dict[str, Any]:
    """A segment's row of ``segments.csv`` (unscored: label, confidence and scores null; not
    transcribed: text empty, language, events, sv_emotion and emotion_agree null)."""
    t = transcript or {}
    row: dict[str, Any] = {
        "recording_id": recording.recording_id, "source_path": recording.source_path,
        "segment_id": segment.segment_id, "speaker": segment.speaker, "start": round(segment.start, 3),
        "end": round(segment.end, 3), "duration": round(segment.end - segment.start, 3), "label": None,
        "confidence": np.nan, **{c: np.nan for c in SCORE_COLUMNS}, "drilled": False,
        "embedding_exported": False, "model_sha256": model_sha256, "status": segment.status,
        "snr_before_db": snr.get("snr_before_db"), "snr_after_db": snr.get("snr_after_db"),
        "text": t.get("text", ""), "language": t.get("language") or None,
        "events": ";".join(t.get("events", [])) or None, "sv_emotion": t.get("emotion") or None,
    }
    if result is not None:
        row.update({"label": result.label, "confidence": result.confidence, "drilled": result.drilled,
                    **dict(zip(SCORE_COLUMNS, result.scores))})
    row["emotion_agree"] = emotion_agree(row["label"], row["sv_emotion"])
    return row


def export_recording(
    *,
    recording: Recording,
    folder: Path,
    rttm: str,
    segments: Sequence[Segment],
    results: dict[int, EmotionResult],
    curves: dict[int, np.ndarray],
    embeddings: Callable[[int], np.ndarray | None],
    snr: dict[str, Any],
    model: dict[str, Any],
    config: ExportConfig,
    threshold: float,
    hop_s: float,
    denoised: Callable[[], np.ndarray] | None = None,
    speaker_names: Mapping[str, str] | None = None,
    transcripts: Mapping[int, dict[str, Any]] | None = None,
    transcribe_model: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``folder`` (``recordings/<id>/``) for one recording from plain records.

    A pure writer: it decides nothing about the results (``drilled`` and labels come with
    ``results``), it only lays them out as the output contract says, into an empty ``folder``
    (the runner builds it aside and swaps it in for ``recordings/<id>/``).

    Parameters
    ----------
    recording : Recording
        Id and source path (the names the exported files carry).
    folder : Path
        An empty folder that becomes ``<out>/recordings/<recording_id>``.
    rttm : str
        The diarization RTTM (any uri: it is rewritten to the recording's id).
    segments : sequence of Segment
        Every segment of the recording, named.
    results, curves : dict
        By segment position: the screened results, and the frame curves of drilled segments.
    embeddings : callable
        ``embeddings(position)``: the segment's embedding, or None when it was not scored.
    snr : dict
        The denoise stage's facts (``snr_before_db``, ``snr_after_db``).
    model : dict
        The emotion model's id, sha256 and whether it is a test model.
    config : ExportConfig
        Which embeddings, whether the denoised audio.
    threshold : float
        ``screen.threshold`` (``export.embeddings: high_confidence`` keeps those at or above it).
    hop_s : float
        Hop of the frame curves.
    denoised : callable, optional
        Gives the denoised audio, when ``config.denoised_audio`` asks for it.
    speaker_names : mapping, optional
        Diarized label → the name it is exported under (an enrolled voice's name); the voices
        stage decides them (:mod:`tasks.speakers.linking`).
    transcripts : mapping, optional
        By segment position: what was said (``text``, ``language``, ``emotion``, ``events``,
        ``words``), from the transcribe stage; None when transcription is off.
    transcribe_model : dict, optional
        The transcription model's id, sha256 and whether it is a test model.
    """
    from tasks.core.timebase import SAMPLE_RATE
    from tasks.audio.decode import write_wav
    from tasks.diarization.rttm import rename_rttm
    from tasks.speakers.linking import rename_speaker

    names = dict(speaker_names or {})
    segments = [replace(s, speaker=rename_speaker(s.speaker, names)) for s in segments]

    (folder / "segments").mkdir(parents=True)
    (folder / "diarization.rttm").write_text(rename_rttm(rttm, uri=recording.recording_id, speakers=names),
                                             encoding="utf-8")
    table: list[dict[str, Any]] = []
    n_frames = n_emb = 0
    for pos, seg in enumerate(segments):
        result = results.get(pos)
        said = (transcripts or {}).get(pos)
        rec = table_row(recording=recording, segment=seg, result=result, model_sha256=model.get("sha256", ""),
                        snr=snr, transcript=said)
        if result is not None:
            doc = segment_json(result=result, segment=seg, model=model, hop_s=hop_s if result.drilled else None,
                               transcript=said)
            (folder / "segments" / f"{seg.segment_id}.json").write_text(
                json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
            if result.drilled:
                (folder / "frames").mkdir(exist_ok=True)
                np.save(folder / "frames" / f"{seg.segment_id}.npy", np.asarray(curves[pos], np.float32))
                n_frames += 1
            vector = embeddings(pos)
            if vector is not None and wants_embedding(config.embeddings, confidence=result.confidence,
                                                      threshold=threshold):
                (folder / "embeddings").mkdir(exist_ok=True)
                np.save(folder / "embeddings" / f"{seg.segment_id}.npy", np.asarray(vector, np.float32))
                rec["embedding_exported"] = True
                n_emb += 1
        table.append(rec)
    write_csv(pd.DataFrame(table, columns=RECORDING_TABLE_COLUMNS), folder / "segments.csv",
              text_columns=[c for c in RECORDING_TABLE_COLUMNS if c in STRING_COLUMNS])
    if config.denoised_audio and denoised is not None:
        write_wav(folder / "denoised.wav", np.asarray(denoised(), np.float32), sample_rate=SAMPLE_RATE)
    facts = {"segments": len(table), "segment_json": len(results), "frames": n_frames, "embeddings": n_emb}
    if transcripts is not None:
        facts["transcript_words"] = write_transcript_files(folder, recording=recording, segments=segments,
                                                           rows=table, transcripts=transcripts,
                                                           model=transcribe_model or {})
    return facts


def write_transcript_files(folder: Path, *, recording: Recording, segments: Sequence[Segment],
                           rows: Sequence[dict[str, Any]], transcripts: Mapping[int, dict[str, Any]],
                           model: dict[str, Any]) -> int:
    """``transcript.json`` (every word with its speaker, times and its segment's emotion),
    ``transcript.srt`` and ``transcript.vtt`` (one cue per segment with something said or heard:
    ``SPEAKER: text [emotion]``); returns the number of words."""
    from tasks.transcription.captions import to_srt, to_vtt

    words, docs, cues = [], [], []
    for pos, (seg, row) in enumerate(zip(segments, rows)):
        said = transcripts.get(pos) or {"words": [], "events": []}
        label = row["label"]
        for w, a, b in said["words"]:
            words.append({"text": w, "start": a, "end": b, "speaker": seg.speaker, "segment_id": seg.segment_id,
                          "emotion": label})
        docs.append({"segment_id": seg.segment_id, "speaker": seg.speaker, "start": round(seg.start, 3),
                     "end": round(seg.end, 3), "status": seg.status, "text": row["text"],
                     "language": row["language"], "events": said["events"], "emotion": label,
                     "sv_emotion": row["sv_emotion"], "emotion_agree": row["emotion_agree"]})
        heard = " ".join([*(f"({e})" for e in said["events"]), row["text"]]).strip()
        if heard:  # one cue per segment with something said or heard
            cues.append((seg.start, seg.end, seg.speaker, heard, label or row["sv_emotion"] or ""))
    doc: dict[str, Any] = {"recording_id": recording.recording_id,
                           "model": {"id": model.get("id"), "sha256": model.get("sha256")},
                           "segments": docs, "words": words}
    if model.get("is_test_model"):
        doc["model"]["test_model"] = True
        doc["warning"] = "transcript from a randomly initialised TEST model: meaningless"
    (folder / "transcript.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False), encoding="utf-8")
    (folder / "transcript.srt").write_text(to_srt(cues), encoding="utf-8")
    (folder / "transcript.vtt").write_text(to_vtt(cues), encoding="utf-8")
    return len(words)


def write_run_tables(out_dir: Path, recording_ids: Iterable[str], *, csv_too: bool = True,
                     global_speakers: Mapping[tuple[str, str], str] | None = None) -> pd.DataFrame:
    """Gather the recordings' tables into ``segments.parquet`` (+ ``.csv``) and ``embeddings.npy``;
    ``global_speakers`` maps (recording id, speaker) to the voice's id across the run (an overlap
    row ``A+B`` gets ``GA+GB``; a speaker without one, null)."""
    frames = []
    for rid in recording_ids:
        path = out_dir / "recordings" / rid / "segments.csv"
        if path.is_file():
            frames.append(_read_table_text(path))
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
    links = dict(global_speakers or {})

    def global_of(rid: str, speaker: str) -> str | None:
        parts = [links.get((rid, p)) for p in str(speaker).split("+")]
        return "+".join(parts) if all(parts) else None  # type: ignore[arg-type]

    table["global_speaker"] = pd.array([global_of(r, s) for r, s in zip(table["recording_id"], table["speaker"])],
                                       dtype="string")
    table = table[TABLE_COLUMNS].sort_values(["recording_id", "start"], kind="stable").reset_index(drop=True)
    dim = vectors[0].shape[0] if vectors else 0
    emb = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, dim), np.float32)
    from tasks.core.storage import atomic_write_npy

    atomic_write_npy(out_dir / "embeddings.npy", emb)
    index = table.loc[table["embedding_row"].notna(), ["segment_id", "embedding_row"]].rename(
        columns={"embedding_row": "row"})
    write_csv(index, out_dir / "embeddings_index.csv", text_columns=["segment_id"])
    atomic_write_with(out_dir / "segments.parquet",
                      lambda tmp: table.to_parquet(tmp, index=False, schema=table_schema()))
    if csv_too:
        write_csv(table, out_dir / "segments.csv", text_columns=STRING_COLUMNS)
    write_run_transcripts(out_dir, recording_ids)
    return table


def write_run_transcripts(out_dir: Path, recording_ids: Iterable[str]) -> pd.DataFrame:
    """``transcripts.csv``: every transcribed word of the run's recordings (one row each, with its
    segment, speaker, times and the segment's emotion2vec+ and SenseVoice emotions); header only
    when nothing was transcribed."""
    rows = []
    for rid in recording_ids:
        path = out_dir / "recordings" / rid / "transcript.json"
        if not path.is_file():
            continue
        doc = json.loads(path.read_text(encoding="utf-8"))
        sv = {d["segment_id"]: d.get("sv_emotion") for d in doc["segments"]}
        rows += [{"recording_id": rid, "segment_id": w["segment_id"], "speaker": w["speaker"], "start": w["start"],
                  "end": w["end"], "word": w["text"], "emotion": w["emotion"], "sv_emotion": sv.get(w["segment_id"])}
                 for w in doc["words"]]
    table = pd.DataFrame(rows, columns=TRANSCRIPT_WORD_COLUMNS)
    write_csv(table, out_dir / "transcripts.csv", text_columns=["recording_id", "segment_id", "speaker", "word",
                                                               "emotion", "sv_emotion"])
    return table


def write_failures(out_dir: Path, failures: list[dict[str, str]]) -> Path:
    """``failures.csv``: input, stage, error, message (header only when nothing failed)."""
    return write_rows(out_dir / "failures.csv", FAILURE_COLUMNS,
                      ({**f, "message": " ".join(str(f.get("message", "")).splitlines())} for f in failures))
