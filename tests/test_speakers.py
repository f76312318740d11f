"""Known speakers and cross-recording links (tasks/speakers/voiceprints.py, `emoflow speakers ...`) with the
real CAM++ weights and real LibriSpeech voices."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from pyannote.core import Annotation, Segment
from typer.testing import CliRunner

from flows.cli import app
from tasks.core.config import DiarizationConfig
from tasks.speakers.voiceprints import (
    SpeakerError,
    check_name,
    current_model,
    embed_speech,
    enroll,
    link_speakers,
    list_voiceprints,
    load_voiceprints,
    name_speakers,
    remove,
    speaker_centroids,
)

SR = 16000
runner = CliRunner()
KNOWN = DiarizationConfig().known_threshold
LINK = DiarizationConfig().link_threshold



def _read(path: Path) -> np.ndarray:
    x, _ = sf.read(path, dtype="float32")
    return x


@pytest.fixture(scope="session")
def embedder():
    from tasks.speakers.campplus import load_embedding_model

    return load_embedding_model("iic/speech_campplus_sv_zh_en_16k-common_advanced", "cpu")


@pytest.fixture(scope="module")
def voices(librispeech_voices: list[list[Path]]) -> list[list[Path]]:
    return librispeech_voices


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, voices, embedder) -> Path:
    """Voices 0 and 1 enrolled from their utterances 0-1."""
    root = tmp_path_factory.mktemp("speakers")
    for name, v in (("Alice", 0), ("Bob", 1)):
        enroll(name, voices[v][0:2], store=root, embedder=embedder)
    return root


@pytest.fixture(scope="module")
def centroid(voices, embedder):
    """centroid(voice, utterance): the vector of one whole utterance (not used for enrolment)."""
    cache: dict[tuple[int, int], np.ndarray] = {}

    def get(v: int, u: int) -> np.ndarray:
        if (v, u) not in cache:
            x = _read(voices[v][u])
            cache[(v, u)], _ = embed_speech(x, regions=[(0.0, x.size / SR)], embedder=embedder)
        return cache[(v, u)]

    return get


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "a\\b", "-rf", ".hidden", " Alice", "x\x00y", "tab\tname",
                                 "SPEAKER_01", "G03", "CH0", "x" * 101])
def test_hostile_names_are_refused(bad: str) -> None:
    with pytest.raises(SpeakerError, match="not a valid speaker name"):
        check_name(bad)


def test_names_in_any_language() -> None:
    assert check_name("José Müller") == "José Müller"
    assert check_name("山田 太郎") == "山田 太郎"
    assert check_name("Jose\u0301") == "Jos\u00e9"  # NFC


def test_enrol_stores_vector_model_and_sources(store: Path, voices) -> None:
    facts = json.loads((store / "Alice.json").read_text())
    vec = np.load(store / "Alice.npy", allow_pickle=False)
    assert vec.shape == (192,) and vec.dtype == np.float32 and abs(np.linalg.norm(vec) - 1) < 1e-5
    assert facts["model"]["sha256"] == current_model()[1]
    assert [s["sha256"] for s in facts["sources"]] == [
        __import__("hashlib").sha256(p.read_bytes()).hexdigest() for p in voices[0][0:2]]
    assert facts["speech_s"] > 5 and facts["created"].endswith("Z")
    assert not list(store.glob(".*"))  # no temporary files left
    assert [vp.name for vp in list_voiceprints(store=store)] == ["Alice", "Bob"]


def test_voiceprints_of_another_model_are_refused(store: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    for f in ("Alice.json", "Alice.npy"):
        (other / f).write_bytes((store / f).read_bytes())
    facts = json.loads((other / "Alice.json").read_text())
    facts["model"]["sha256"] = "0" * 64
    (other / "Alice.json").write_text(json.dumps(facts))
    with pytest.raises(SpeakerError) as err:
        load_voiceprints(store=other, model_sha256=current_model()[1])
    msg = str(err.value)
    assert "\n" not in msg and "another speaker model" in msg and "emoflow speakers enroll Alice" in msg
    assert set(load_voiceprints(store=store, model_sha256=current_model()[1])) == {"Alice", "Bob"}
    listed = runner.invoke(app, ["speakers", "list", "--speakers", str(other)])
    assert listed.exit_code == 0 and "made with another speaker model: enrol again" in listed.output


def test_known_voices_are_named_and_strangers_are_not(store: Path, centroid) -> None:
    prints = load_voiceprints(store=store, model_sha256=current_model()[1])
    cents = {"SPEAKER_00": centroid(1, 5), "SPEAKER_01": centroid(0, 6), "SPEAKER_02": centroid(2, 5)}
    named = name_speakers(cents, prints, threshold=KNOWN)
    assert named == {"SPEAKER_00": "Bob", "SPEAKER_01": "Alice", "SPEAKER_02": "SPEAKER_02"}


def test_two_speakers_never_share_a_name(store: Path, centroid) -> None:
    """Two diarized speakers that both sound like Alice (e.g. one person split in two): only the
    closer one is Alice; the other keeps its label (Bob does not fit it)."""
    prints = load_voiceprints(store=store, model_sha256=current_model()[1])
    cents = {"SPEAKER_00": centroid(0, 5), "SPEAKER_01": centroid(0, 7)}
    named = name_speakers(cents, prints, threshold=KNOWN)
    assert sorted(named.values()).count("Alice") == 1
    assert "Bob" not in named.values()


def test_centroids_use_each_speakers_exclusive_speech(voices, embedder, centroid) -> None:
    a, b = _read(voices[3][2]), _read(voices[4][2])
    mix = np.concatenate([a, b]) * 0.5
    ann = Annotation()
    ann[Segment(0, a.size / SR)] = "SPEAKER_00"
    ann[Segment(a.size / SR, (a.size + b.size) / SR)] = "SPEAKER_01"
    cents = speaker_centroids(mix, ann, embedder=embedder)
    assert float(np.dot(cents["SPEAKER_00"], centroid(3, 4))) > 0.5
    assert float(np.dot(cents["SPEAKER_01"], centroid(4, 4))) > 0.5
    assert float(np.dot(cents["SPEAKER_00"], centroid(4, 4))) < 0.45
    # split channels: each label embedded from its own row
    stereo = np.stack([np.concatenate([a, np.zeros_like(b)]), np.concatenate([np.zeros_like(a), b])])
    split = speaker_centroids(stereo, ann, embedder=embedder, channel_of={"SPEAKER_00": 0, "SPEAKER_01": 1})
    assert float(np.dot(split["SPEAKER_01"], cents["SPEAKER_01"])) > 0.95


def test_link_speakers_across_recordings(centroid) -> None:
    """Four voices in four recordings of two speakers each: the same voice gets one global id,
    two speakers of one recording never do, ids are stable, enrolled names are kept."""
    recs = {
        "r1": {"SPEAKER_00": centroid(5, 2), "SPEAKER_01": centroid(6, 2)},
        "r2": {"SPEAKER_00": centroid(6, 3), "SPEAKER_01": centroid(7, 2)},
        "r3": {"SPEAKER_00": centroid(7, 3), "SPEAKER_01": centroid(5, 3)},
        "r4": {"CH0": centroid(8, 2), "CH1": centroid(5, 4)},
    }
    gid = link_speakers(recs, threshold=LINK)
    assert gid[("r1", "SPEAKER_00")] == gid[("r3", "SPEAKER_01")] == gid[("r4", "CH1")] == "G00"
    assert gid[("r1", "SPEAKER_01")] == gid[("r2", "SPEAKER_00")] == "G01"
    assert gid[("r2", "SPEAKER_01")] == gid[("r3", "SPEAKER_00")] == "G02"
    assert gid[("r4", "CH0")] == "G03"
    assert link_speakers(recs, threshold=LINK) == gid
    # cannot-link: a recording whose two speakers are one voice keeps them apart
    twin = {"r5": {"SPEAKER_00": centroid(5, 5), "SPEAKER_01": centroid(5, 6)}}
    g2 = link_speakers({**recs, **twin}, threshold=LINK)
    assert g2[("r5", "SPEAKER_00")] != g2[("r5", "SPEAKER_01")]
    named = link_speakers(recs, threshold=LINK, names={("r2", "SPEAKER_00"): "Carol"})
    assert named[("r1", "SPEAKER_01")] == "Carol" and named[("r1", "SPEAKER_00")] == "G00"


# --------------------------------------------------------------------------- CLI
def test_cli_enroll_list_remove(tmp_path: Path, voices) -> None:
    d = tmp_path / "spk"
    res = runner.invoke(app, ["speakers", "enroll", "Dana Ó", str(voices[9][0]), str(voices[9][1]), "--speakers", str(d)])
    assert res.exit_code == 0, res.output
    assert "Dana Ó: enrolled from 2 file(s)" in res.output
    res = runner.invoke(app, ["speakers", "list", "--speakers", str(d)])
    assert res.exit_code == 0 and res.output.startswith("Dana Ó\t")
    res = runner.invoke(app, ["speakers", "remove", "Dana Ó", "--speakers", str(d)])
    assert res.exit_code == 0 and not list(d.iterdir())
    res = runner.invoke(app, ["speakers", "list", "--speakers", str(d)])
    assert res.exit_code == 0 and "no speakers enrolled" in res.output


def test_cli_wrong_inputs_are_one_line(tmp_path: Path, voices) -> None:
    d = tmp_path / "spk"
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all\n" * 20)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(SR * 2, np.float32), SR)
    wav = str(voices[9][0])
    cases = [
        (["speakers", "enroll", "Eve", str(tmp_path / "missing.wav"), "--speakers", str(d)], "no such file"),
        (["speakers", "enroll", "Eve", str(text), "--speakers", str(d)], "not an audio file"),
        (["speakers", "enroll", "Eve", str(silence), "--speakers", str(d)], "too little speech"),
        (["speakers", "enroll", "../evil", wav, "--speakers", str(d)], "not a valid speaker name"),
        (["speakers", "enroll", "SPEAKER_00", wav, "--speakers", str(d)], "reserved"),
        (["speakers", "enroll", "Eve", wav, "--speakers", str(a_file)], "not a speakers directory"),
        (["speakers", "remove", "Nobody", "--speakers", str(d)], "no such speaker"),
        (["speakers", "remove", "a/b", "--speakers", str(d)], "not a valid speaker name"),
        (["speakers", "list", "--speakers", str(a_file)], "not a speakers directory"),
    ]
    for args, text_ in cases:
        res = runner.invoke(app, args)
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert res.exit_code == 2, (args, res.output)
        assert len(lines) == 1 and lines[0].startswith("emoflow: error: ") and text_ in lines[0], (args, res.output)
    assert not d.exists() or not list(d.iterdir())


def test_one_piece_embedding_and_one_centroid_rule(voices, embedder) -> None:
    """Every speaker vector comes from embed_pieces (unit rows, NaN for a piece too short) and
    every centroid from unit_centroids (finite rows only, weighted or not, NaN for no rows)."""
    from tasks.speakers.campplus import embed_pieces
    from tasks.speakers.vectors import unit_centroids

    x = _read(voices[0][0])
    emb = embed_pieces(x, [(0, SR), (SR, SR + 100), (SR, 3 * SR)], embedder=embedder, min_samples=SR // 2)
    assert emb.shape == (3, 192) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb[[0, 2]], axis=1), 1.0, atol=1e-5) and np.isnan(emb[1]).all()
    c = unit_centroids(emb, owner=np.array([0, 0, 0]), count=2)
    assert np.allclose(c[0], (emb[0] + emb[2]) / np.linalg.norm(emb[0] + emb[2])) and np.isnan(c[1]).all()
    w = unit_centroids(emb, owner=np.zeros(3), count=1, weights=np.array([1.0, 5.0, 3.0]))[0]
    assert np.allclose(w, (emb[0] + 3 * emb[2]) / np.linalg.norm(emb[0] + 3 * emb[2]))
    # a voiceprint is the weighted centroid of its pieces
    vector, seconds = embed_speech(x, regions=[(0.0, 3.0)], embedder=embedder, window_s=1.5)
    pieces = embed_pieces(x, [(0, 24000), (24000, 48000)], embedder=embedder, min_samples=8000)
    assert seconds == 3.0 and np.allclose(vector, unit_centroids(pieces, owner=np.zeros(2), count=1)[0], atol=1e-6)
