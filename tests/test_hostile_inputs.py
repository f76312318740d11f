"""Nothing silently wrong (issue 23): hostile file names, samples, headers, names and options
give one clear line or a correct result, never shifted tables, erased speech or a traceback.

Classes, each with several instances: control characters in names (ids, CSV quoting), formula
cells (CSV injection), non-finite samples, truncated containers, an input changed while it is
read, channel names with spaces, non-UTF-8 file names, option mistakes, wrong causes and
unchecked config values."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.core.config import ConfigError, load_config
from tasks.core.csvsafe import FORMULA_PREFIXES, csv_text, guard, read_csv, unguard
from tasks.core.records import (EmotionResult, Recording, Segment, assign_recording_ids, make_recording_id,
                                printable, segment_id)

SR = 16000
NEVER = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs")


def _tone(seconds: float, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


# --------------------------------------------------------------------------- 1. control characters in ids

CONTROL_NAMES = ["a\rb", "a\nb", "tab\there", "nul\x00x", "line\u2028sep", "para\u2029sep", "bidi\u202eevil",
                 "zero\u200bwidth", "bom\ufeffx", "nel\x85x", "fs\x1cx", "bad\udcffbyte", "\r\n", "\u200e"]


@pytest.mark.parametrize("name", CONTROL_NAMES)
def test_ids_never_hold_control_format_or_separator_characters(name: str) -> None:
    for rid in (make_recording_id(name), *assign_recording_ids([f"d/{name}.wav", f"e/{name}.wav", f"{name}.wav"])):
        assert rid and not any(unicodedata.category(ch) in NEVER for ch in rid), repr(rid)
        assert rid.encode("utf-8")  # never a lone surrogate
        assert not rid.startswith(FORMULA_PREFIXES)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=16))
def test_one_line_never_splits_or_restyles_a_line(text: str) -> None:
    from tasks.core.records import one_line

    shown = one_line(text)
    assert len(shown.splitlines()) <= 1
    shown.encode("utf-8")  # never a lone surrogate
    assert all(ch.isprintable() or ch == " " for ch in shown)
    assert one_line(shown) == shown
    if all((ch.isprintable() or ch == " ") and not 0xD800 <= ord(ch) < 0xE000 for ch in text):
        assert shown == text


@pytest.mark.parametrize("name", [n for n in CONTROL_NAMES if "\x00" not in n] + ["esc\x1b[2Jclear", "del\x7fx"])
def test_an_error_naming_a_hostile_file_is_one_whole_line(tmp_path: Path, name: str) -> None:
    """A corrupt file whose name holds a line break, an escape sequence or a bidi control: the
    message, the failures row and the run's summary keep the cause on one line (a name cut at
    its line break used to leave only the folder as the cause)."""
    from flows.pipeline import _failure_row
    from tasks.audio.decode import AudioError, load_audio
    from tasks.run.finalize import RunSummary
    from tasks.run.inputs import input_failure

    raw = os.fsencode(tmp_path) + b"/" + os.fsencode(name) + b".wav"
    try:
        with open(raw, "wb") as fh:
            fh.write(b"RIFF\x00\x00\x00\x00WAVEjunk" * 40)
    except OSError:
        pytest.skip("the file system refuses this name")
    path = os.fsdecode(raw)
    with pytest.raises(AudioError) as err:
        load_audio(path)
    message = str(err.value)
    assert len(message.splitlines()) == 1 and "truncated or corrupt audio" in message, repr(message)
    assert all(ch.isprintable() or ch == " " for ch in message), repr(message)
    job = _jobs(tmp_path / "out", [Path(path)])[0]
    row = _failure_row(job, "load", err.value)
    assert row["input"] == job.source_path  # the table keeps the name itself (quoted CSV)
    assert len(row["message"].splitlines()) == 1 and "truncated or corrupt audio" in row["message"]
    assert row["message"].count(": truncated") == 1  # named once
    gone = input_failure(path + ".gone", "no such file")
    assert len(gone["message"].splitlines()) == 1 and gone["message"].endswith(": no such file")
    summary = RunSummary(out_dir=tmp_path / "out", recordings=0, failed=[row, gone], segments=0, drilled=0)
    assert len(summary.describe().splitlines()) == 3


def test_expected_task_failures_are_logged_without_a_traceback() -> None:
    """Prefect logs a failed task run with its traceback: for bad input the one line is all."""
    import sys

    from flows.pipeline import _NoTracebackForExpectedFailures
    from tasks.audio.decode import CorruptAudioError

    records = []
    for exc in (CorruptAudioError("a\nb.wav", "truncated"), ZeroDivisionError("a bug")):
        try:
            raise exc
        except Exception:
            records.append(logging.LogRecord("prefect.task_runs", logging.ERROR, __file__, 1,
                                             f"Task run failed with exception: {exc!r}", None, sys.exc_info()))
    flt = _NoTracebackForExpectedFailures()
    assert all(flt.filter(r) for r in records)
    assert records[0].exc_info is None and records[1].exc_info is not None  # a bug keeps its traceback
    assert any(isinstance(f, _NoTracebackForExpectedFailures) for f in logging.getLogger("prefect.task_runs").filters)


# --------------------------------------------------------------------------- 1 + 5. the CSV tables

HOSTILE_SOURCES = ["in/a\rb.wav", "in/x\ny.wav", "in/tab\tname.wav", "=HYPERLINK(\"http://evil\",\"x\").wav",
                   "+1+1.wav", "-rf.wav", "@SUM(A1).wav", "'quoted.wav", "a,b\"c.wav", "line\u2028sep.wav",
                   "\tlead.wav", "\rlead.wav", "＝fullwidth.wav", "plain.wav"]
HOSTILE_SPEAKERS = ["=cmd|' /C calc'!A0", "-2+3", "call agent", "+A", "@x", "'q", "SPEAKER_00"]


def _export_run(out: Path, sources: list[str], speakers: list[str]) -> list[Recording]:
    """Each source as one recording with one segment per speaker, exported and gathered."""
    from tasks.core.config import ExportConfig
    from tasks.output.export import export_recording, write_run_tables

    ids = assign_recording_ids(sources)
    recs = [Recording(rid, src, "0" * 64) for rid, src in zip(ids, sources)]
    for rec in recs:
        segs = [Segment(segment_id(rec.recording_id, i), rec.recording_id, spk, 2.0 * i, 2.0 * i + 1.5)
                for i, spk in enumerate(speakers)]
        scores = (0.05,) * 8 + (0.6,)
        folder = out / "recordings" / rec.recording_id
        export_recording(recording=rec, folder=folder, rttm="", segments=segs,
                         results={i: EmotionResult(s.segment_id, scores) for i, s in enumerate(segs)},
                         curves={}, embeddings=lambda pos: np.full(4, pos, np.float32),
                         snr={"snr_before_db": -3.5, "snr_after_db": 12.25}, model={"sha256": "ab" * 32},
                         config=ExportConfig(embeddings="all"), threshold=0.5, hop_s=0.02)
    write_run_tables(out, ids, csv_too=True)
    return recs


def test_hostile_names_round_trip_through_every_segments_table(tmp_path: Path) -> None:
    from tasks.output.export import RECORDING_TABLE_COLUMNS, TABLE_COLUMNS, read_table_csv

    recs = _export_run(tmp_path, HOSTILE_SOURCES, HOSTILE_SPEAKERS)
    n = len(HOSTILE_SOURCES) * len(HOSTILE_SPEAKERS)
    expected_src = sorted(r.source_path for r in recs for _ in HOSTILE_SPEAKERS)
    tables = [(tmp_path / "segments.csv", TABLE_COLUMNS, n)]
    tables += [(tmp_path / "recordings" / r.recording_id / "segments.csv", RECORDING_TABLE_COLUMNS,
                len(HOSTILE_SPEAKERS)) for r in recs]
    for path, columns, rows in tables:
        plain = pd.read_csv(path, dtype=str, keep_default_na=False)  # pandas: same rows and columns
        assert list(plain.columns) == columns and len(plain) == rows, path
        with open(path, newline="", encoding="utf-8") as fh:  # the csv module: same
            raw = list(csv.reader(fh))
        assert raw[0] == columns and len(raw) == rows + 1 and {len(r) for r in raw} == {len(columns)}, path
        back = read_table_csv(path)  # emoflow's reader: the raw values
        assert set(back["source_path"]) <= set(HOSTILE_SOURCES) and set(back["speaker"]) == set(HOSTILE_SPEAKERS)
        # formula cells are guarded; numbers in numeric columns are not
        col = columns.index("speaker")
        assert all(not r[col].startswith(FORMULA_PREFIXES[:-1]) for r in raw[1:]), path
        assert {r[columns.index("snr_before_db")] for r in raw[1:]} == {"-3.5"}
        assert plain["snr_before_db"].astype(float).eq(-3.5).all()
    back = read_table_csv(tmp_path / "segments.csv")
    assert sorted(back["source_path"]) == expected_src
    parquet = pd.read_parquet(tmp_path / "segments.parquet")  # Parquet keeps raw values
    assert sorted(parquet["source_path"]) == expected_src and set(parquet["speaker"]) == set(HOSTILE_SPEAKERS)
    assert parquet["snr_before_db"].eq(-3.5).all()
    # the embeddings index: one row per exported embedding, rows are numbers
    index = pd.read_csv(tmp_path / "embeddings_index.csv", dtype={"segment_id": str})
    assert len(index) == n and index["row"].dtype.kind == "i"
    # nothing but the recordings' own folders
    assert {p.name for p in (tmp_path / "recordings").iterdir()} == {r.recording_id for r in recs}


def test_failures_csv_keeps_hostile_inputs_on_one_row(tmp_path: Path) -> None:
    from tasks.output.export import FAILURE_COLUMNS, write_failures

    rows = [{"input": src, "stage": "load", "error": "CorruptAudioError", "message": f"{src}: bad\nsecond line"}
            for src in HOSTILE_SOURCES]
    rows.append({"input": "caf\udce9.wav", "stage": "load", "error": "X", "message": "caf\udce9.wav: bad"})
    write_failures(tmp_path, rows)
    text = (tmp_path / "failures.csv").read_text(encoding="utf-8")  # valid UTF-8 (undecodable bytes as \xNN)
    with open(tmp_path / "failures.csv", newline="", encoding="utf-8") as fh:
        raw = list(csv.reader(fh))
    assert raw[0] == FAILURE_COLUMNS and len(raw) == len(rows) + 1 and {len(r) for r in raw} == {4}
    back = read_csv(tmp_path / "failures.csv")
    assert list(back["input"]) == HOSTILE_SOURCES + ["caf\\xe9.wav"]
    assert all("\n" not in m and "\r" not in m.replace(m.split(": ")[0], "") for m in back["message"])
    assert "caf\\xe9.wav" in text
    assert all(not r[0].startswith(FORMULA_PREFIXES[:-1]) for r in raw[1:])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=12))
def test_the_guard_is_reversible_and_always_defuses(text: str) -> None:
    shown = printable(text)
    cell = guard(text)
    assert unguard(cell) == shown
    assert not cell.startswith(FORMULA_PREFIXES) or cell.startswith("'")


def test_only_text_columns_are_guarded() -> None:
    frame = pd.DataFrame({"speaker": ["-x", "=1+2", "ok"], "pc1": [-3.5, -0.0, 1e-9], "cluster": [-1, 0, 2],
                          "flag": [True, False, True], "maybe": [None, -2.5, "=x"]})
    text = csv_text(frame)
    rows = list(csv.reader(io.StringIO(text)))
    assert [r[0] for r in rows[1:]] == ["'-x", "'=1+2", "ok"]
    assert [r[1] for r in rows[1:]] == ["-3.5", "-0.0", "1e-09"] and [r[2] for r in rows[1:]] == ["-1", "0", "2"]
    assert [r[4] for r in rows[1:]] == ["", "-2.5", "'=x"]  # numbers in a text column stay numbers
    back = pd.read_csv(io.StringIO(text))
    assert back["pc1"].tolist() == [-3.5, -0.0, 1e-9] and back["cluster"].tolist() == [-1, 0, 2]


# --------------------------------------------------------------------------- 2. non-finite samples

@pytest.mark.parametrize(("sr", "channels", "bad"), [(16000, 1, [10, 500, 501]), (44100, 2, [0, 7, 30000]),
                                                     (8000, 1, "all")])
def test_non_finite_samples_are_zeroed_and_counted(tmp_path: Path, sr: int, channels: int, bad) -> None:
    from tasks.audio.decode import load_audio, load_channels

    x = np.stack([_tone(2.0, sr)] * channels, axis=1)
    if bad == "all":
        x[:] = np.nan
    else:
        for k, i in enumerate(bad):
            x[i, :] = (np.nan, np.inf, -np.inf)[k % 3]
    path = tmp_path / "nan.wav"
    sf.write(path, x, sr, subtype="FLOAT")
    count = x.size if bad == "all" else len(bad) * channels
    for loader in (load_audio, load_channels):
        audio, info = loader(path)
        assert np.isfinite(audio).all()
        notes = [w for w in info.warnings if "non-finite" in w]
        assert notes and notes[0].startswith(f"{count} non-finite sample(s)"), info.warnings
    if bad != "all":  # the speech around them survives
        assert np.abs(load_audio(path)[0]).max() > 0.1
    else:
        assert any(w.startswith("silent") for w in info.warnings)


@pytest.mark.parametrize(("subtype", "amplitude"), [("FLOAT", 1.5), ("FLOAT", 32767.0), ("DOUBLE", 1e30),
                                                   ("FLOAT", 1.0), ("PCM_16", 1.0)])
def test_samples_beyond_full_scale_are_clipped_with_a_warning(tmp_path: Path, subtype: str, amplitude: float) -> None:
    """A float file at the wrong scale (int16 values stored as float, a gain bug) is clipped to
    a square wave: never silently. Full scale itself (float or integer PCM) is no warning."""
    from tasks.audio.decode import load_audio, load_channels

    x = _tone(2.0) / 0.2 * amplitude
    path = tmp_path / "loud.wav"
    sf.write(path, x, SR, subtype=subtype)
    for loader in (load_audio, load_channels):
        audio, info = loader(path)
        assert np.abs(audio).max() <= 1.0 and np.isfinite(audio).all()
        notes = [w for w in info.warnings if "beyond full scale" in w]
        if amplitude > 1.0:
            assert len(notes) == 1 and "clipped" in notes[0] and f"peak {amplitude:.4g}" in notes[0], info.warnings
            assert int(notes[0].split()[0]) > len(x) // 4
        else:
            assert not notes, info.warnings


def test_the_load_stage_reports_and_logs_non_finite_samples(tmp_path: Path, caplog) -> None:
    from tasks.pipeline.runner import run_stage

    x = _tone(2.0)
    x[[3, 99, 1000, 1001]] = np.nan
    sf.write(tmp_path / "in.wav", x, SR, subtype="FLOAT")
    job = _jobs(tmp_path, [tmp_path / "in.wav"])[0]
    with caplog.at_level(logging.WARNING):
        facts = run_stage(job, "load").facts
    assert any(w.startswith("4 non-finite sample(s)") for w in facts["warnings"]), facts
    assert any("4 non-finite sample(s)" in r.getMessage() and "in.wav" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- 3. truncated containers

def _make(tmp: Path, kind: str) -> Path:
    """6 s of tone in container ``kind``."""
    src = tmp / "src.wav"
    sf.write(src, _tone(6.0), SR, subtype="PCM_16")
    if kind == "wav16":
        return src
    if kind == "wavfloat":
        sf.write(tmp / "f.wav", _tone(6.0), SR, subtype="FLOAT")
        return tmp / "f.wav"
    target, args = {"rf64": ("r.wav", ["-rf64", "always"]), "w64": ("w.w64", []), "caf": ("c.caf", []),
                    "flac": ("f.flac", []), "aiff": ("a.aiff", []), "au": ("u.au", []),
                    # raw streams that declare no duration: only their framing tells a cut end
                    "mp3": ("m.mp3", ["-c:a", "libmp3lame", "-write_xing", "0"]), "adts": ("a.aac", ["-c:a", "aac"]),
                    "ogg": ("v.ogg", ["-c:a", "libvorbis"]), "opus": ("o.opus", ["-c:a", "libopus"]),
                    "oga": ("f.oga", ["-c:a", "flac"])}[kind]
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), *args, str(tmp / target)], check=True)
    return tmp / target


@pytest.mark.parametrize("kind", ["wav16", "wavfloat", "rf64", "w64", "caf", "flac", "aiff", "au", "mp3", "adts",
                                  "ogg", "opus", "oga"])
def test_a_truncated_file_is_refused_or_warned(tmp_path: Path, kind: str) -> None:
    from tasks.audio.decode import CorruptAudioError, declared_duration, load_audio
    from tasks.core.config import AudioConfig

    full = _make(tmp_path, kind)
    _, info = load_audio(full)
    assert not info.truncated and abs(info.duration - 6.0) < 0.1 and not info.warnings
    data = full.read_bytes()
    cut = tmp_path / f"cut{full.suffix}"
    # a raw stream cut at its middle may leave too little to probe (refused even with "warn")
    cut.write_bytes(data[: len(data) * 3 // 4 if kind in ("mp3", "adts", "ogg", "opus", "oga") else len(data) // 2])
    if kind in ("wav16", "wavfloat", "rf64", "w64", "caf"):
        assert declared_duration(cut) == pytest.approx(6.0, abs=0.01)
    with pytest.raises(CorruptAudioError, match="truncated") as err:
        load_audio(cut, config=AudioConfig(on_truncated="error"))
    assert str(err.value).startswith(f"{cut}: ") and "\n" not in str(err.value)
    _, info = load_audio(cut, config=AudioConfig(on_truncated="warn"))
    assert info.truncated and any(w.startswith("truncated") for w in info.warnings)


def test_stream_cut_finds_every_cut_end_but_a_frame_boundary(tmp_path: Path) -> None:
    """MP3 (with an ID3v2 tag, no Xing header), ADTS AAC and Ogg cut at every byte of their last
    part: a cut inside a frame or page is found; only an MP3/ADTS cut exactly between two frames
    is not (Ogg's missing end-of-stream page gives that one away)."""
    from tasks.audio.framing import stream_cut

    src = tmp_path / "src.wav"
    sf.write(src, _tone(1.0), SR, subtype="PCM_16")
    for name, args, boundaries in (("m.mp3", ["-c:a", "libmp3lame", "-write_xing", "0"], True),
                                   ("a.aac", ["-c:a", "aac"], True), ("v.ogg", ["-c:a", "libvorbis"], False),
                                   ("o.opus", ["-c:a", "libopus"], False)):
        full = tmp_path / name
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), *args, str(full)], check=True)
        assert stream_cut(full) is None, name
        data = full.read_bytes()
        cut = tmp_path / f"cut-{name}"
        missed = []
        for n in range(len(data) - 1500, len(data)):
            cut.write_bytes(data[:n])
            why = stream_cut(cut)
            if why is None:
                missed.append(n)
            else:
                assert "cut" in why and "\n" not in why
        assert len(missed) <= (1500 // 40 if boundaries else 0), (name, missed)
    with_tag = tmp_path / "m.mp3"
    with_tag.write_bytes(with_tag.read_bytes() + b"TAG" + bytes(125))  # an ID3v1 tag after the last frame
    assert stream_cut(with_tag) is None
    assert stream_cut(src) is None  # other containers: not this check's question


@pytest.mark.parametrize(("fmt", "args"), [("flac", []), ("webm", ["-c:a", "libopus"]), ("wav", []),
                                           ("mp4", ["-c:a", "aac", "-movflags", "frag_keyframe+empty_moov"])])
def test_a_streamed_file_cut_mid_frame_is_truncated(tmp_path: Path, fmt: str, args: list[str]) -> None:
    """Written to a pipe, these declare no length (a FLAC without a sample count, a WAV whose
    size is unknown, WebM, fragmented MP4): cut mid-frame or mid-sample, only the decoder's
    "ran out of data" tells it. It was a warning with the shorter audio kept, even with
    ``on_truncated: error``."""
    from tasks.audio.decode import CorruptAudioError, load_audio
    from tasks.core.config import AudioConfig

    src = tmp_path / "src.wav"
    sf.write(src, _tone(6.0), SR, subtype="PCM_16")
    data = subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), *args, "-f", fmt, "-"], check=True,
                          capture_output=True).stdout
    full = tmp_path / f"full.{fmt}"
    full.write_bytes(data)
    _, info = load_audio(full, config=AudioConfig(on_truncated="error"))
    assert not info.truncated and not info.warnings and abs(info.duration - 6.0) < 0.1
    cut = tmp_path / f"cut.{fmt}"
    cut.write_bytes(data[: len(data) * 3 // 4 | 1])  # an odd length: mid-sample for 16-bit PCM
    with pytest.raises(CorruptAudioError, match="truncated") as err:
        load_audio(cut, config=AudioConfig(on_truncated="error"))
    assert str(err.value).startswith(f"{cut}: ") and len(str(err.value).splitlines()) == 1
    _, info = load_audio(cut, config=AudioConfig(on_truncated="warn"))
    assert info.truncated and any(w.startswith("truncated") for w in info.warnings), info.warnings


def test_streamed_headers_without_a_size_are_not_truncated(tmp_path: Path) -> None:
    from tasks.audio.decode import declared_duration, load_audio

    path = tmp_path / "stream.wav"
    sf.write(path, _tone(2.0), SR, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    at = data.index(b"data")
    data[at + 4: at + 8] = b"\xff\xff\xff\xff"  # what a writer that could not seek leaves
    path.write_bytes(bytes(data))
    assert declared_duration(path) is None
    assert not load_audio(path)[1].truncated


# --------------------------------------------------------------------------- 4. an input changed while read

def _jobs(out: Path, files: list[Path], sets: list[str] = ()):
    from tasks.run.plan import prepare_run

    cfg = load_config(None, list(sets))
    jobs, _ = prepare_run([str(f) for f in files], config=cfg, out_dir=out,
                          plan={"files": files, "failures": [], "models": {}})
    return jobs


def test_a_file_replaced_before_loading_fails_and_stores_nothing(tmp_path: Path) -> None:
    from tasks.audio.decode import ChangedInputError
    from tasks.pipeline.runner import run_stage

    path = tmp_path / "in.wav"
    sf.write(path, _tone(2.0), SR)
    out = tmp_path / "out"
    job = _jobs(out, [path])[0]
    sf.write(path, _tone(3.0), SR)  # replaced after the run hashed it
    with pytest.raises(ChangedInputError) as err:
        run_stage(job, "load")
    assert str(err.value) == f"{path}: changed while it was read; run again"
    assert job.store.get("load", job.keys["load"]) is None
    assert not list((out / ".emoflow" / "artefacts").glob("load/*/audio.npy"))
    again = _jobs(out, [path])[0]  # a rerun hashes the new content and processes it
    assert again.keys["load"] != job.keys["load"]
    assert run_stage(again, "load").facts["duration"] == pytest.approx(3.0, abs=0.01)


@pytest.mark.parametrize("change", ["rewrite", "append", "delete"])
def test_a_file_changed_while_decoding_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str) -> None:
    import tasks.audio.decode as decode
    from tasks.pipeline.runner import run_stage

    path = tmp_path / "in.wav"
    sf.write(path, _tone(2.0), SR)
    job = _jobs(tmp_path / "out", [path])[0]
    real = decode.load_channels

    def racing(p, **kw):  # type: ignore[no-untyped-def]
        result = real(p, **kw)
        if change == "rewrite":
            sf.write(path, -_tone(2.0), SR)  # same size, other bytes
        elif change == "append":
            with open(path, "ab") as fh:
                fh.write(b"\0" * 64)
        else:
            path.unlink()
        return result

    monkeypatch.setattr(decode, "load_channels", racing)
    with pytest.raises(decode.ChangedInputError, match="changed while it was read; run again"):
        run_stage(job, "load")
    assert job.store.get("load", job.keys["load"]) is None


# --------------------------------------------------------------------------- 6. channel names

@pytest.mark.parametrize("names", [["call agent", "customer"], ["日本 語", "client"], ["=cmd", "-x"],
                                   ["a%20b", "a b"], ["Ann\u00a0Lee", "B"]])
def test_channel_names_with_spaces_are_accepted_and_survive_rttm(names: list[str]) -> None:
    from pyannote.core import Annotation, Segment as PSegment

    from tasks.diarization.rttm import parse_rttm, to_rttm

    cfg = load_config(None, [f"diarization.channel_names={json.dumps(names, ensure_ascii=False)}"])
    assert cfg.diarization.channel_names == [unicodedata.normalize("NFC", n) for n in names]
    ann = Annotation(uri="r")
    for i, name in enumerate(names):
        ann[PSegment(i, i + 0.5)] = name
    text = to_rttm(ann, uri="r")
    assert all(len(line.split()) == 10 for line in text.splitlines())
    assert sorted(parse_rttm(text)["r"].labels()) == sorted(names)


@pytest.mark.parametrize(("names", "why"), [('["a\\nb", "c"]', "control character"), ('["a\\tb", "c"]', "control"),
                                            ('["a\\u2028b", "c"]', "line break"), ('[" a", "b"]', "space"),
                                            ('["a+b", "c"]', "'+'"), ('["x", "x"]', "repeats"), ('[]', "at least"),
                                            ('["", "b"]', "empty"), ('["Agent", "agent"]', "repeats"),
                                            ('["Stra\u00dfe", "STRASSE"]', "differ only in case"),
                                            ('["Jos\u00e9", "JOSE\u0301"]', "repeats"),
                                            ('["SPEAKER_01", "b"]', "own label"), ('["a", "G00"]', "own label"),
                                            ('["CH1", "CH0"]', "own label"), ('["a\u200bb", "c"]', "control"),
                                            ('["a\u202eb", "c"]', "control"), ('["a\\x1b[2Jb", "c"]', "control")])
def test_bad_channel_names_are_refused_in_one_line(names: str, why: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"diarization.channel_names={names}"])
    assert why in str(err.value) and "\n" not in str(err.value)


def test_channel_names_that_are_fine() -> None:
    for names in (["CH0", "CH1"], ["call agent", "customer"], ["a\u00a0b", "c"], ["\u5ba2\u670d", "\u5ba2\u6237"],
                  ["=agent", "@customer"]):
        assert load_config(None, [f"diarization.channel_names={json.dumps(names)}"]).diarization.channel_names == names


def test_a_stereo_call_with_spaced_channel_names_runs_end_to_end(librispeech_voices, tiny_model_dir: Path,
                                                                 tmp_path: Path) -> None:
    """The class of `KeyError 'call_agent'`: labels with spaces through channels, diarize (RTTM),
    voices, segments, emotion and export."""
    from tasks.output.export import read_table_csv
    from tasks.pipeline.runner import run_stages
    from tasks.run.plan import prepare_run

    v = librispeech_voices
    left, right = [], []
    for k, f in enumerate([v[0][0], v[3][0], v[0][1]]):
        x, _ = sf.read(f, dtype="float32")
        x = x[: 4 * SR] * (0.05 / np.sqrt(np.mean(x[: 4 * SR] ** 2)))
        pause = np.zeros(SR // 2, np.float32)
        own, quiet = np.concatenate([x, pause]), np.zeros(x.size + pause.size, np.float32)
        left.append(own if k % 2 == 0 else quiet)
        right.append(quiet if k % 2 == 0 else own)
    sf.write(tmp_path / "call.wav", np.stack([np.concatenate(left), np.concatenate(right)], axis=1), SR)
    names = ["call agent", "日本 語 client"]
    cfg = load_config(None, [f"emotion.model={tiny_model_dir}", "diarization.channels=split",
                             f"diarization.channel_names={json.dumps(names, ensure_ascii=False)}"])
    jobs, _ = prepare_run([str(tmp_path / "call.wav")], config=cfg, out_dir=tmp_path / "out")
    reports = run_stages(jobs[0])
    assert sorted(reports["diarize"].facts["speakers"]) == sorted(names)
    folder = tmp_path / "out" / "recordings" / "call"
    table = read_table_csv(folder / "segments.csv")
    assert set(table["speaker"]) <= set(names) and len(table) >= 2
    rttm = (folder / "diarization.rttm").read_text(encoding="utf-8")
    assert "call%20agent" in rttm and all(len(line.split()) == 10 for line in rttm.splitlines())


# --------------------------------------------------------------------------- 7. non-UTF-8 file names

def test_a_non_utf8_file_name_is_processed_and_shown_escaped(tmp_path: Path) -> None:
    from tasks.output.export import write_failures
    from tasks.pipeline.runner import run_stage
    from tasks.run.inputs import discover_inputs

    folder = tmp_path / "in"
    folder.mkdir()
    raw = os.fsencode(folder) + b"/caf\xe9 \xff.wav"
    try:
        with open(raw, "wb") as fh:
            sf.write(fh, _tone(1.0), SR, format="WAV")
    except OSError:
        pytest.skip("the file system refuses non-UTF-8 names")
    (folder / "ok.wav").write_bytes(Path(os.fsdecode(raw)).read_bytes())
    with open(os.fsencode(folder) + b"/junk\xfe.wav", "wb") as fh:
        fh.write(b"not audio at all")
    files, failures = discover_inputs([str(folder), os.fsdecode(os.fsencode(folder) + b"/gone\xfd.wav")],
                                      extensions=[".wav"])
    assert len(files) == 3
    assert failures and failures[0]["input"].endswith("gone\\xfd.wav")
    jobs = _jobs(tmp_path / "out", files)
    by_name = {Path(j.source_path).name: j for j in jobs}
    job = by_name["caf\\xe9 \\xff.wav"]
    assert job.recording_id == "caf" and job.source_path.encode("utf-8")
    json.dumps(job.recording.to_dict(), ensure_ascii=False).encode("utf-8")  # manifest-safe
    assert run_stage(job, "load").facts["duration"] == pytest.approx(1.0, abs=0.01)
    from tasks.audio.decode import AudioError

    with pytest.raises(AudioError) as err:
        run_stage(by_name["junk\\xfe.wav"], "load")
    message = str(err.value)
    assert message.encode("utf-8") and "junk\\xfe.wav" in message
    write_failures(tmp_path, [*failures, {"input": by_name["junk\\xfe.wav"].source_path, "stage": "load",
                                          "error": type(err.value).__name__, "message": message}])
    assert "junk\\xfe.wav" in (tmp_path / "failures.csv").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- 8. option mistakes

def _main(argv: list[str], capsys, monkeypatch) -> tuple[int, str]:
    from flows import cli

    monkeypatch.setattr(sys, "argv", ["emoflow", *argv])
    with pytest.raises(SystemExit) as ended:
        cli.main()
    captured = capsys.readouterr()
    return int(ended.value.code or 0), captured.err + captured.out


@pytest.mark.parametrize("argv", [["run", "x.wav", "--bogus"], ["--bogus"], ["run"], ["config", "--set"],
                                  ["evaluate", "diarization"], ["evaluate", "diarization", "r", "--reference"],
                                  ["similar", "r", "s", "--top", "x"], ["speakers", "enroll"],
                                  ["models", "pull", "--hub"], ["report", "a", "b"], ["cluster", "r", "--nope"],
                                  ["nosuchcommand"]])
def test_option_mistakes_are_one_line_exit_2(argv: list[str], capsys, monkeypatch) -> None:
    code, out = _main(argv, capsys, monkeypatch)
    lines = out.strip().splitlines()
    assert code == 2, out
    assert lines[0].startswith("emoflow: error: ") and len(lines) <= 2, out
    assert "Usage" not in out and "╭" not in out and "Traceback" not in out


def test_a_run_folder_whose_path_is_not_utf8_is_refused_in_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    """Prefect's records are UTF-8: an --out (or serve's --inbox/--out, or the current folder
    they are relative to) that is not valid UTF-8 is refused before anything runs (it was an
    internal error whose own log could not be written, with a traceback)."""
    bad = os.fsdecode(os.fsencode(tmp_path) + b"/out\xfe")
    for argv in (["run", "x.wav", "--out", bad], ["run", "x.wav", "--out", bad + "\nx"], ["serve", "--inbox", bad],
                 ["serve", "--inbox", str(tmp_path), "--out", bad]):
        code, out = _main(argv, capsys, monkeypatch)
        lines = out.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("emoflow: error: "), out
        assert "not valid UTF-8" in lines[0] and "out\\xfe" in lines[0]
        lines[0].encode("utf-8")


def test_the_internal_error_log_survives_any_name(tmp_path: Path, monkeypatch) -> None:
    from flows import cli

    monkeypatch.setenv("EMOFLOW_LOG_DIR", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["emoflow", "run", "caf\udce9\n.wav"])
    log = cli._log_internal_error(ValueError("caf\udce9.wav: boom"))
    assert log is not None and "caf\\udce9" in log.read_text(encoding="utf-8")


def test_help_still_works(capsys, monkeypatch) -> None:
    code, out = _main(["run", "--help"], capsys, monkeypatch)
    assert code == 0 and "Usage" in out


# --------------------------------------------------------------------------- 9. wrong causes, unchecked inputs

def test_symlink_loops_are_called_symlink_loops(tmp_path: Path) -> None:
    from tasks.audio.decode import UnreadableInputError, probe
    from tasks.run.inputs import discover_inputs

    (tmp_path / "a.wav").symlink_to("b.wav")
    (tmp_path / "b.wav").symlink_to("a.wav")
    (tmp_path / "self.wav").symlink_to("self.wav")
    (tmp_path / "gone.wav").symlink_to("nowhere.wav")
    _, failures = discover_inputs([str(tmp_path / "a.wav"), str(tmp_path)], extensions=[".wav"])
    messages = {Path(f["input"]).name: f["message"] for f in failures}
    assert "symlink loop" in messages["a.wav"] and "symlink loop" in messages["self.wav"]
    assert "broken symbolic link" in messages["gone.wav"]
    assert len(failures) == 4  # a.wav named once although given twice
    with pytest.raises(UnreadableInputError, match="symlink loop"):
        probe(tmp_path / "self.wav")


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    rec = tmp_path / "run" / "recordings" / "r1"
    rec.mkdir(parents=True)
    (rec / "diarization.rttm").write_text("SPEAKER r1 1 0.000 2.000 <NA> <NA> A <NA> <NA>\n")
    return tmp_path / "run"


@pytest.mark.parametrize("line", ["SPEAKER r1 1 0.0 -2.0 <NA> <NA> A <NA> <NA>",
                                  "SPEAKER r1 1 0.0 nan <NA> <NA> A <NA> <NA>",
                                  "SPEAKER r1 1 0.0 inf <NA> <NA> A <NA> <NA>",
                                  "SPEAKER r1 1 -1.0 2.0 <NA> <NA> A <NA> <NA>",
                                  "SPEAKER r1 1 0.0 two <NA> <NA> A <NA> <NA>"])
def test_a_reference_with_a_bad_duration_is_refused_naming_the_line(run_dir: Path, line: str) -> None:
    from tasks.output.evaluate import EvaluationError, evaluate_diarization

    ref = run_dir.parent / "ref.rttm"
    ref.write_text("SPEAKER r1 1 0.0 1.0 <NA> <NA> B <NA> <NA>\n" + line + "\n")
    with pytest.raises(EvaluationError) as err:
        evaluate_diarization(run_dir, ref)
    assert f"{ref}:2:" in str(err.value) and "\n" not in str(err.value)


def test_a_reference_that_is_not_a_file_says_so(run_dir: Path, tmp_path: Path) -> None:
    from tasks.output.evaluate import EvaluationError, evaluate_diarization

    (tmp_path / "loop.rttm").symlink_to("loop.rttm")
    cases = {"/dev/zero": "not a regular file", str(tmp_path): "a folder", str(tmp_path / "loop.rttm"): "symlink loop",
             str(tmp_path / "none.rttm"): "RTTM file not found"}
    for ref, why in cases.items():
        with pytest.raises(EvaluationError, match=why):
            evaluate_diarization(run_dir, ref)
    with pytest.raises(EvaluationError, match="not a regular file"):
        evaluate_diarization(run_dir, run_dir / "recordings" / "r1" / "diarization.rttm", uem="/dev/null")


def test_cli_refuses_empty_paths_and_devices(run_dir: Path, capsys, monkeypatch) -> None:
    for argv, needle in ((["run", ""], "empty input path"), (["run", "x.wav", "--out", ""], "--out"),
                         (["evaluate", "diarization", str(run_dir), "--reference", "/dev/zero"], "not a regular file"),
                         (["evaluate", "diarization", str(run_dir), "--reference", ""], "empty path")):
        code, out = _main(argv, capsys, monkeypatch)
        lines = out.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("emoflow: error: ") and needle in lines[0], out


@pytest.mark.parametrize("override", ["screen.threshold=True", "screen.threshold=false",
                                      "diarization.num_speakers=true", "segmentation.min_s=yes", "denoise.n_fft=True",
                                      "report.lowest_confidence_rows=false", "runner.retries=true"])
def test_booleans_are_not_numbers(override: str) -> None:
    with pytest.raises(ConfigError, match="expected a number"):
        load_config(None, [override])


@pytest.mark.parametrize("override", ["runner.retry_delay_s=.inf", "audio.max_duration_s=1e999",
                                      "audio.silence_dbfs=-.inf", "drilldown.frame_hop_s=.inf", "emotion.batch_seconds=.inf",
                                      "segmentation.max_s=.inf", "denoise.min_noise_s=.nan", "screen.threshold=.nan"])
def test_infinite_and_nan_numbers_are_refused(override: str) -> None:
    """``.inf`` passed every lower bound: a retry that waits forever, an overflow when the
    duration limit becomes a sample count, a Prefect parameter that JSON cannot carry."""
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert override.split("=")[0] in str(err.value) and "\n" not in str(err.value)


def test_numbers_still_parse() -> None:
    cfg = load_config(None, ["screen.threshold=1", "denoise.min_noise_s=1e-3", "diarization.num_speakers=null"])
    assert cfg.screen.threshold == 1.0 and cfg.denoise.min_noise_s == 0.001


@pytest.mark.parametrize("overrides", [["segmentation.min_s=5", "segmentation.max_s=4"],
                                       ["audio.min_duration_s=10", "audio.max_duration_s=5"],
                                       ["diarization.min_speakers=3", "diarization.max_speakers=2"],
                                       ["diarization.num_speakers=5", "diarization.max_speakers=2"],
                                       ["diarization.num_speakers=1", "diarization.min_speakers=2"],
                                       ["diarization.vad_onset=0.3", "diarization.vad_offset=0.6"]])
def test_a_lower_bound_above_its_upper_bound_is_refused(overrides: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert "greater than" in str(err.value) or "less than" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("override", ["diarization.known_speakers=/tmp/sp\udcff", "emotion.model=/m\udcfe",
                                      "diarization.channel_names=[\"a\udcff\", \"b\"]"])
def test_a_config_value_that_is_not_utf8_is_refused(override: str) -> None:
    """Undecodable bytes typed on the command line would reach config.yaml and Prefect's
    records (an internal error there): refused in one UTF-8 line naming the override."""
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    message = str(err.value)
    assert "not valid UTF-8" in message and ("\\xff" in message or "\\xfe" in message)
    message.encode("utf-8")
    assert "\n" not in message


def test_config_errors_stay_one_line_whatever_was_typed() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["screen.threshold=\n\r0.5\u2028x"])
    assert "\n" not in str(err.value) and "\r" not in str(err.value) and "\u2028" not in str(err.value)


# --------------------------------------------------------------------------- one real run of them all

def test_one_run_of_hostile_inputs_goes_on_and_says_what_it_did(prefect_harness, shared_data: Path,
                                                                tiny_model_dir: Path, tmp_path: Path) -> None:
    """Through the Prefect flow: a non-UTF-8 name, a carriage return and a formula in names,
    NaN samples, a truncated WAV, a cut Ogg (no declared duration) and junk under a name with a
    line break: each bad one is one failures row whose message keeps its cause on one line, the
    others are processed, and every table, the manifest and the report agree."""
    from flows.pipeline import run_pipeline
    from tasks.output.export import read_table_csv

    src = sorted((shared_data / "librispeech" / "test-other").rglob("*.flac"))[0]
    speech, sr = sf.read(src, dtype="float32")
    speech = speech[: 4 * sr]
    inbox = tmp_path / "in"
    inbox.mkdir()
    names = {b"caf\xe9.wav": speech, b"a\rb.wav": speech, b"=HYPERLINK(1).wav": speech}
    nan = speech.copy()
    nan[[5, 50, 500]] = np.nan
    names[b"nan.wav"] = nan
    for name, x in names.items():
        with open(os.fsencode(inbox) + b"/" + name, "wb") as fh:
            sf.write(fh, x, sr, format="WAV", subtype="FLOAT")
    sf.write(inbox / "cut.wav", speech, sr, subtype="PCM_16")
    data = (inbox / "cut.wav").read_bytes()
    (inbox / "cut.wav").write_bytes(data[: len(data) // 2])
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-c:a", "libvorbis", str(tmp_path / "v.ogg")],
                   check=True)
    ogg = (tmp_path / "v.ogg").read_bytes()
    (inbox / "trunc\u202e.ogg").write_bytes(ogg[: len(ogg) * 3 // 4])
    with open(os.fsencode(inbox) + b"/bad\nname.wav", "wb") as fh:
        fh.write(b"RIFF\x00\x00\x00\x00WAVEjunk" * 50)
    cfg = load_config(None, [f"emotion.model={tiny_model_dir}", "runner.retries=0", "screen.threshold=0.5"])
    out = tmp_path / "out"
    summary = run_pipeline([str(inbox)], config=cfg, out_dir=out)
    assert summary.recordings == 4, summary.failed
    failed = {f["input"]: f["message"] for f in summary.failed}
    assert set(failed) == {str(inbox / "cut.wav"), str(inbox / "trunc\u202e.ogg"), str(inbox / "bad\nname.wav")}
    assert failed[str(inbox / "cut.wav")].startswith(f"{inbox / 'cut.wav'}: ") and "truncated" in failed[str(inbox / "cut.wav")]
    assert "the last Ogg page is cut" in failed[str(inbox / "trunc\u202e.ogg")]
    assert failed[str(inbox / "bad\nname.wav")].startswith(f"{inbox}/bad\\nname.wav: truncated or corrupt audio")
    assert all(len(m.splitlines()) == 1 for m in failed.values()) and len(summary.describe().splitlines()) == 4
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    paths = {i["recording_id"]: i for i in manifest["inputs"]}
    assert set(paths) >= {"caf", "a-b", "HYPERLINK-1", "nan", "cut"} and len(paths) == 7
    assert paths["caf"]["path"].endswith("caf\\xe9.wav")
    assert any(w.startswith("3 non-finite sample(s)") for w in paths["nan"]["warnings"])
    table = read_table_csv(out / "segments.csv")
    parquet = pd.read_parquet(out / "segments.parquet")
    assert list(table["source_path"]) == list(parquet["source_path"])
    assert set(table["recording_id"]) == {"caf", "a-b", "HYPERLINK-1", "nan"}
    assert str(inbox / "a\rb.wav") in set(table["source_path"])
    assert {p.name for p in (out / "recordings").iterdir()} == {"caf", "a-b", "HYPERLINK-1", "nan"}
    failures = read_csv(out / "failures.csv")
    assert sorted(failures["input"]) == sorted(failed)
