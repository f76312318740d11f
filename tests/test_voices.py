"""Known speakers and one voice across recordings, through the whole flow, with real CAM++
weights and real LibriSpeech voices."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from tasks.core.config import load_config

SR = 16000



def _conversation(path: Path, turns: list[Path]) -> list[tuple[float, float]]:
    """Utterances one after another with 0.6 s pauses (a two-person exchange); their spans."""
    gap = np.zeros(int(0.6 * SR), np.float32)
    parts, spans, t = [], [], 0.0
    for f in turns:
        x, sr = sf.read(f, dtype="float32")
        assert sr == SR
        x = x[: 6 * SR]
        parts += [x, gap]
        spans.append((t, t + x.size / SR))
        t += (x.size + gap.size) / SR
    sf.write(path, np.concatenate(parts), SR)
    return spans


@pytest.fixture(scope="module")
def calls(tmp_path_factory: pytest.TempPathFactory, librispeech_voices: list[list[Path]]) -> dict[str, Path]:
    v = librispeech_voices
    a, b, c = v[0], v[1], v[5]
    d = tmp_path_factory.mktemp("calls")
    spans = _conversation(d / "monday.wav", [a[2], b[2], a[3], b[3], a[4], b[4]])
    _conversation(d / "tuesday.wav", [b[5], c[2], b[6], c[3], b[7], c[4]])
    store = d / "speakers"
    from tasks.speakers.voiceprints import enroll

    enroll("alice", a[0:2], store=store)  # utterances not used in the calls
    return {"monday": d / "monday.wav", "tuesday": d / "tuesday.wav", "store": store, "alice_turns": spans[0::2]}


def test_enrolled_voice_is_named_and_voices_are_linked_across_recordings(prefect_harness, calls, tiny_model_dir,
                                                                         tmp_path: Path) -> None:
    from flows.pipeline import run_pipeline

    cfg = load_config(None, [f"emotion.model={tiny_model_dir}", "denoise.enabled=false",
                             f"diarization.known_speakers={calls['store']}"])
    out = tmp_path / "run"
    summary = run_pipeline([str(calls["monday"]), str(calls["tuesday"])], config=cfg, out_dir=out)
    assert not summary.failed
    table = pd.read_parquet(out / "segments.parquet")
    assert str(table["global_speaker"].dtype) in ("string", "object")
    monday = table[table["recording_id"] == "monday"]
    tuesday = table[table["recording_id"] == "tuesday"]
    # the enrolled voice carries its name on monday, in the table, the RTTM and the segment JSON
    assert "alice" in set(monday["speaker"]) and "alice" not in set(tuesday["speaker"])
    rttm = (out / "recordings" / "monday" / "diarization.rttm").read_text()
    assert " alice " in rttm and all(line.split()[1] == "monday" for line in rttm.splitlines())
    named = monday[(monday["speaker"] == "alice") & (monday["status"] == "ok")]
    doc = json.loads((out / "recordings" / "monday" / "segments" / f"{named['segment_id'].iloc[0]}.json").read_text())
    assert doc["speaker"] == "alice"
    # alice speaks the 1st, 3rd and 5th turns of monday
    ok = monday[monday["status"] == "ok"]
    in_alice_turns = ok.apply(lambda r: any(s - 0.5 <= r["start"] and r["end"] <= e + 0.5
                                            for s, e in calls["alice_turns"]), axis=1)
    agree = ((ok["speaker"] == "alice") == in_alice_turns).mean()
    assert agree >= 0.9, ok[["speaker", "start", "end"]]
    # one voice, one global id: the speaker of both calls (b) is linked; alice's id is her name
    singles = table[~table["speaker"].str.contains("+", regex=False)]
    pairs = singles.groupby(["recording_id", "speaker"])["global_speaker"].agg(lambda s: set(s))
    assert all(len(g) == 1 for g in pairs)
    monday_ids = set(singles.loc[singles["recording_id"] == "monday", "global_speaker"])
    tuesday_ids = set(singles.loc[singles["recording_id"] == "tuesday", "global_speaker"])
    assert "alice" in monday_ids and len(monday_ids & tuesday_ids) == 1
    shared_id = (monday_ids & tuesday_ids).pop()
    assert shared_id.startswith("G") and len(tuesday_ids) == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["recordings"]["monday"]["global_speakers"]["alice"] == "alice"
    # the report shows each voice across recordings
    report = (out / "report.html").read_text()
    assert "Speakers across recordings" in report and shared_id in report


def test_naming_threshold_reruns_voices_not_diarization(prefect_harness, calls, tiny_model_dir, tmp_path: Path) -> None:
    from flows.pipeline import run_pipeline

    base = [f"emotion.model={tiny_model_dir}", "denoise.enabled=false", f"diarization.known_speakers={calls['store']}"]
    out = tmp_path / "run"
    run_pipeline([str(calls["monday"])], config=load_config(None, base), out_dir=out)
    run_pipeline([str(calls["monday"])], config=load_config(None, [*base, "diarization.known_threshold=0.99"]),
                 out_dir=out)
    stages = json.loads((out / "manifest.json").read_text())["recordings"]["monday"]["stages"]
    assert stages["diarize"]["status"] == "reused" and stages["emotion"]["status"] == "reused"
    assert stages["voices"]["status"] == "computed" and stages["export"]["status"] == "computed"
    table = pd.read_parquet(out / "segments.parquet")
    assert "alice" not in set(table["speaker"])  # nobody is that similar: SPEAKER_xx labels stay


def test_linking_handles_one_and_no_speakers() -> None:
    from tasks.speakers.linking import link_run_speakers

    v = np.ones(192, np.float32)
    assert link_run_speakers({"a": ({"SPEAKER_00": v}, {"SPEAKER_00": "SPEAKER_00"})}, threshold=0.5) == {
        ("a", "SPEAKER_00"): "G00"}
    assert link_run_speakers({"a": ({}, {"SPEAKER_00": "SPEAKER_00"})}, threshold=0.5) == {}
    assert link_run_speakers({}, threshold=0.5) == {}
