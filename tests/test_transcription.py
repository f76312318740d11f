"""SenseVoice transcription (tasks.transcription): exact against funasr, rich tags, captions,
safe loading. A tiny randomly initialised SenseVoiceSmall is built once per session."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.models.checkpoints import UnsafeCheckpointError
from tasks.models.hub import ModelUnavailableError
from tasks.transcription import captions
from tasks.transcription.captions import to_srt, to_vtt
from tasks.transcription.sensevoice import (
    DEFAULT_BATCH_SECONDS,
    SINGLE_THREAD_BATCH_SECONDS,
    ClipTooShortError,
    ClipTranscript,
    SenseVoiceCheckpointError,
    SenseVoiceFilesError,
    batches,
    default_batch_seconds,
    load_sensevoice,
    parse_rich_text,
    plan_passes,
    transcribe_clips,
    transcript_from_result,
)
from tasks.transcription.testmodel import BPE_FILE, VOCAB_SIZE, pinned_token_ids

LANG_ITN = [("auto", True), ("auto", False), ("en", True), ("en", False)]


# ---------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """The tiny model's ops are small: on a shared 2-core machine one thread is several times
    faster than two (no thread hand-offs). Restored after this module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def sv_dir(tiny_sensevoice_dir: Path) -> Path:
    return tiny_sensevoice_dir


@pytest.fixture(scope="session")
def sv(sv_dir: Path):
    return load_sensevoice(sv_dir)


@pytest.fixture(scope="session")
def auto_model(sv_dir: Path):
    """funasr's own AutoModel on the same directory (the reference)."""
    from funasr import AutoModel

    return AutoModel(model=str(sv_dir), disable_update=True, disable_pbar=True, device="cpu",
                     ncpu=1, log_level="ERROR")  # funasr sets torch's threads to ncpu (default 4) on every call


@pytest.fixture(scope="session")
def clips(shared_data: Path) -> list[np.ndarray]:
    """Three LibriSpeech utterances cut to 2.5, 5 and 8 s, and 3 s of real background noise."""
    import soundfile as sf

    root = shared_data / "librispeech" / "test-other"
    files = [root / "1688" / "1688-142285-0000.flac", root / "2609" / "2609-156975-0002.flac",
             root / "3080" / "3080-5032-0002.flac"]
    out = []
    for f, seconds in zip(files, (2.5, 5.0, 8.0)):
        audio, sr = sf.read(f, dtype="float32")
        assert sr == 16000 and audio.size >= seconds * sr
        out.append(audio[: int(seconds * sr)])
    noise, sr = sf.read(shared_data / "noise" / "speech-commands" / "running_tap.wav", dtype="float32")
    out.append(noise[5 * sr: 8 * sr])
    return out


def funasr_reference(auto_model, clip: np.ndarray, *, language: str, itn: bool, seed: int | None = 0) -> dict:
    if seed is not None:
        torch.manual_seed(seed)
    res = auto_model.generate(input=clip, language=language, use_itn=itn, output_timestamp=True)
    assert len(res) == 1
    return res[0]


# ---------------------------------------------------------------------------------------
# (a) exactly funasr's output
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("language,itn", LANG_ITN)
def test_transcripts_equal_funasr_generate(sv, auto_model, clips, language, itn):
    ours = transcribe_clips(sv, clips, language=language, itn=itn)
    assert len(ours) == len(clips)
    for clip, got in zip(clips, ours):
        ref = funasr_reference(auto_model, clip, language=language, itn=itn)
        assert got.raw == ref["text"]
        assert [w for w, _, _ in got.words] == list(ref.get("words", []))
        assert [(s, e) for _, s, e in got.words] == [(s / 1000, e / 1000) for s, e in ref.get("timestamp", [])]
        lang, emo, events, text = parse_rich_text(ref["text"])
        assert (got.language, got.emotion, got.events, got.text) == (lang, emo, events, text)
    # the comparison is not vacuous: on speech the random model says things, with several tags
    # and timed words (on the noise clip it says little or nothing)
    assert all(t.text and len(t.words) >= 3 and t.raw.count("<|") >= 3 for t in ours[:3])
    assert sum(len(t.events) for t in ours) >= 2
    assert any(t.emotion for t in ours)
    for t in ours:
        times = [x for _, s, e in t.words for x in (s, e)]
        assert times == sorted(times) and all(0.0 <= x <= 8.0 for x in times)


def test_word_times_are_seconds_on_the_60ms_grid(sv, clips):
    (t,) = transcribe_clips(sv, clips[1:2])
    for _, start, end in t.words:
        assert 0.0 <= start < end <= 5.0
        assert abs((start * 1000 + 30) / 60 - round((start * 1000 + 30) / 60)) < 0.05 or start == 0.0


def test_dither_seed_per_clip(sv, auto_model, clips):
    """Each clip's dither noise is seeded alone: order and batch do not matter, the caller's
    random state is untouched, and seed=None follows torch's global generator like funasr."""
    torch.manual_seed(123)
    state = torch.get_rng_state()
    forward = transcribe_clips(sv, clips[:3], seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    backward = transcribe_clips(sv, clips[:3][::-1], seed=7)
    assert forward == backward[::-1]
    torch.manual_seed(5)
    ours = transcribe_clips(sv, clips[:2], seed=None)
    torch.manual_seed(5)
    refs = [funasr_reference(auto_model, c, language="auto", itn=True, seed=None) for c in clips[:2]]
    assert [t.raw for t in ours] == [r["text"] for r in refs]
    assert [[w for w, _, _ in t.words] for t in ours] == [r["words"] for r in refs]


# ---------------------------------------------------------------------------------------
# (b) batches
# ---------------------------------------------------------------------------------------


def test_batches_group_by_padded_duration():
    lengths = [16000 * s for s in (2, 8, 5, 3)]
    assert batches(lengths, batch_seconds=None) == [[0], [1], [2], [3]]
    assert batches(lengths, batch_seconds=0) == [[0], [1], [2], [3]]
    assert batches(lengths, batch_seconds=16) == [[1, 2], [3, 0]]
    assert batches(lengths, batch_seconds=4) == [[1], [2], [3], [0]]
    assert sorted(i for b in batches(lengths, batch_seconds=100) for i in b) == [0, 1, 2, 3]


def test_single_thread_budget_pairs_only_clips_of_like_length():
    # the one-thread CPU default: short clips of like length share a pass, a long clip stays alone,
    # and a short clip never pads up to a long one
    lengths = [int(16000 * s) for s in (9.0, 1.6, 5.0, 1.9, 2.5, 3.0, 1.7)]
    groups = batches(lengths, batch_seconds=SINGLE_THREAD_BATCH_SECONDS)
    assert SINGLE_THREAD_BATCH_SECONDS == 12.0
    assert groups == [[0], [2, 5], [4, 3, 6, 1]]
    for g in groups:
        assert len(g) == 1 or len(g) * max(lengths[i] for i in g) <= SINGLE_THREAD_BATCH_SECONDS * 16000


def test_plan_passes_deals_every_worker_a_like_share():
    lengths = [int(16000 * s) for s in (9.0, 1.6, 5.0, 1.9, 2.5, 3.0, 1.7, 4.0, 0.3)]
    assert plan_passes(lengths, batch_seconds=12, workers=1) == [batches(lengths, batch_seconds=12)]
    assert plan_passes([], batch_seconds=12, workers=2) == []
    assert plan_passes([16000], batch_seconds=12, workers=2) == [[[0]]]
    plans = plan_passes(lengths, batch_seconds=12, workers=2)
    assert len(plans) == 2
    dealt = [sorted(i for group in plan for i in group) for plan in plans]
    assert sorted(dealt[0] + dealt[1]) == list(range(len(lengths)))  # every clip exactly once
    loads = [sum(lengths[i] for i in idx) for idx in dealt]
    assert abs(loads[0] - loads[1]) <= max(lengths)  # no worker holds more than one clip's audio over the other
    # longest first to the lighter worker: 9 | 5, 4 | 3 (a tie: the first) | 2.5, 1.9 | 1.7 | 1.6 | 0.3 -> 14.0 s and 15.0 s
    assert dealt == [[0, 5, 6, 8], [1, 2, 3, 4, 7]]
    for plan in plans:
        for group in plan:
            assert len(group) == 1 or len(group) * max(lengths[i] for i in group) <= 12 * 16000
    # more workers than clips: the idle ones get nothing; one clip per pass when no budget
    assert plan_passes(lengths[:2], batch_seconds=0, workers=4) == [[[0]], [[1]]]


def test_a_failing_pass_stops_the_workers_and_is_raised(sv, clips, monkeypatch):
    from tasks.transcription import sensevoice

    calls = []

    def broken(model, feats, **kw):
        calls.append(len(feats))
        raise RuntimeError("pass failed")

    monkeypatch.setattr(sensevoice, "_infer", broken)
    with pytest.raises(RuntimeError, match="pass failed"):
        transcribe_clips(sv, clips * 3, batch_seconds=0, workers=2)
    assert 1 <= len(calls) < len(clips) * 3  # the others stopped after their current pass
    assert all("forward" not in vars(m) for m in sv.model.modules()) and "log_softmax" not in vars(sv.model.ctc)


def test_default_batching_follows_the_thread_count():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert default_batch_seconds("cpu") == SINGLE_THREAD_BATCH_SECONDS
        assert default_batch_seconds("cuda") == DEFAULT_BATCH_SECONDS
        torch.set_num_threads(2)
        assert default_batch_seconds("cpu") == DEFAULT_BATCH_SECONDS
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("language,itn", [("auto", True), ("en", False)])
def test_batched_equals_one_clip_per_forward(sv, clips, language, itn, monkeypatch):
    calls = []
    infer = sv.model.inference
    monkeypatch.setattr(sv.model, "inference", lambda **kw: calls.append(kw["data_in"].shape[0]) or infer(**kw))
    single = transcribe_clips(sv, clips, language=language, itn=itn, batch_seconds=0)
    assert calls == [1, 1, 1, 1]
    calls.clear()
    batched = transcribe_clips(sv, clips, language=language, itn=itn, batch_seconds=40)
    assert calls == [4]
    assert batched == single


def test_padded_batches_compute_only_real_frames_and_stay_bit_identical(sv, clips, monkeypatch):
    """In a batch of unlike lengths the linear layers compute only the real frames; the CTC
    log-probabilities of every clip's real frames are bit-identical to one clip per pass and to
    the same batch computed with its padding."""
    import contextlib

    import torch.nn.functional as F

    from tasks.transcription import sensevoice
    from tasks.transcription.sensevoice import QUERY_FRAMES, clip_features

    frames = [int(clip_features(sv, c, seed=0)[1]) + QUERY_FRAMES for c in clips]
    assert len(set(frames)) > 1
    outputs, rows = [], []
    compute = type(sv.model.ctc).log_softmax
    monkeypatch.setattr(type(sv.model.ctc), "log_softmax", lambda self, x: outputs.append(compute(self, x)) or outputs[-1])
    linear = F.linear
    monkeypatch.setattr(F, "linear", lambda x, w, b=None: rows.append(x.numel() // x.shape[-1]) or linear(x, w, b))

    def real_logprobs(batch_seconds):
        outputs.clear()
        rows.clear()
        out = transcribe_clips(sv, clips, batch_seconds=batch_seconds)
        if batch_seconds:
            (lp,) = outputs
            (order,) = batches([c.size for c in clips], batch_seconds=batch_seconds)  # longest first
            return out, [lp[order.index(i), :n] for i, n in enumerate(frames)]
        return out, [lp[0, :n] for lp, n in zip(outputs, frames)]

    single, single_lp = real_logprobs(0)
    packed, packed_lp = real_logprobs(40)
    assert max(rows) == sum(frames)  # the packed layers saw the real frames only
    with monkeypatch.context() as m:
        m.setattr(sensevoice, "packed_linears", lambda model: contextlib.nullcontext())
        padded, padded_lp = real_logprobs(40)
        assert max(rows) == len(clips) * max(frames)
    assert packed == single == padded
    for a, b, c in zip(single_lp, packed_lp, padded_lp):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert all("forward" not in vars(m) for m in sv.model.modules())  # the layers are restored


def test_parallel_forwards_equal_one_at_a_time(sv, clips, monkeypatch):
    """Passes run in several threads (one torch thread each) give the transcripts of one pass
    at a time, in input order, with progress to the end; the CTC output layer still runs once
    per pass."""
    from tasks.models.devices import cpu_workers, torch_threads

    with torch_threads(1):
        single = transcribe_clips(sv, clips, batch_seconds=0)
        calls = []
        compute = type(sv.model.ctc).log_softmax
        monkeypatch.setattr(type(sv.model.ctc), "log_softmax", lambda self, x: calls.append(1) or compute(self, x))
        seen = []
        parallel = transcribe_clips(sv, clips, batch_seconds=0, workers=3, progress=lambda d, t: seen.append((d, t)))
    assert parallel == single
    assert len(calls) == len(clips)  # once per pass, not once per pass and per clip
    assert seen[0][0] == 0.0 and seen[-1][0] == pytest.approx(seen[-1][1]) and len(seen) == len(clips) + 1
    assert "log_softmax" not in vars(sv.model.ctc)
    assert cpu_workers(3, threads=1, device="cpu") == 3 and cpu_workers(0, threads=1, device="cuda") == 1
    assert 1 <= cpu_workers(0, threads=1, device="cpu") <= 4 and cpu_workers(0, threads=64, device="cpu") == 1


# ---------------------------------------------------------------------------------------
# (c) rich tags
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("tag,code", [("zh", "zh"), ("en", "en"), ("yue", "yue"), ("ja", "ja"), ("ko", "ko"),
                                      ("nospeech", ""), ("de", "de")])
def test_parse_language(tag, code):
    assert parse_rich_text(f"<|{tag}|><|NEUTRAL|><|Speech|><|woitn|>hello") == (code, "neutral", (), "hello")


@pytest.mark.parametrize("tag,word", [("HAPPY", "happy"), ("SAD", "sad"), ("ANGRY", "angry"), ("NEUTRAL", "neutral"),
                                      ("FEARFUL", "fearful"), ("DISGUSTED", "disgusted"),
                                      ("SURPRISED", "surprised"), ("EMO_UNKNOWN", "")])
def test_parse_emotion(tag, word):
    assert parse_rich_text(f"<|en|><|{tag}|><|Speech|><|withitn|>Hi.") == ("en", word, (), "Hi.")


@pytest.mark.parametrize("tag,event", [("Speech", None), ("BGM", "music"), ("Applause", "applause"),
                                       ("Laughter", "laughter"), ("Cry", "crying"), ("Sneeze", "sneeze"),
                                       ("Breath", "breath"), ("Cough", "cough"), ("Sing", "singing"),
                                       ("Speech_Noise", "noise"), ("Event_UNK", None), ("GBG", None)])
def test_parse_event(tag, event):
    got = parse_rich_text(f"<|zh|><|HAPPY|><|{tag}|><|withitn|>你好。")
    assert got == ("zh", "happy", (event,) if event else (), "你好。")


def test_parse_several_events_none_and_tags_in_the_text():
    raw = "<|en|><|SAD|><|Laughter|><|woitn|>ha <|Cough|> ha<|Laughter|> <|BGM|>la  la"
    assert parse_rich_text(raw) == ("en", "sad", ("laughter", "cough", "music"), "ha ha la la")
    assert parse_rich_text("plain words only") == ("", "", (), "plain words only")
    assert parse_rich_text("") == ("", "", (), "")
    assert parse_rich_text("<|nospeech|><|EMO_UNKNOWN|><|Event_UNK|><|woitn|>") == ("", "", (), "")
    # the first tag of a kind decides; later ones of that kind do not override it
    assert parse_rich_text("<|ja|><|ANGRY|>x<|ko|><|HAPPY|>y")[:2] == ("ja", "angry")
    # unknown well-formed tags are dropped from the text and read as nothing
    assert parse_rich_text("<|SPECIAL_25008|>a<|withitn|> b") == ("", "", (), "a b")


@pytest.mark.parametrize("raw,text", [
    ("<|en hello", "<|en hello"),
    ("HAPPY|> hi", "HAPPY|> hi"),
    ("<||> hi", "<||> hi"),
    ("<| en |> hi", "<| en |> hi"),
    ("<|HAPPY|", "<|HAPPY|"),
    ("<|<|en|>x", "<|x"),
    ("a < b | c > d", "a < b | c > d"),
])
def test_parse_malformed_tags_stay_text(raw, text):
    got = parse_rich_text(raw)
    assert got.text == text
    assert got.emotion == "" and got.events == ()
    assert got.language == ("en" if "<|en|>" in raw else "")


def test_transcript_from_result_and_clean_words():
    t = transcript_from_result({"text": "<|en|><|HAPPY|><|Cough|><|woitn|>hi there<|GBG|>",
                                "words": ["▁hi", "there", "<|GBG|>"], "timestamp": [[0, 270], [270, 509], [509, 570]]})
    assert t == ClipTranscript(text="hi there", language="en", emotion="happy", events=("cough",),
                               words=(("▁hi", 0.0, 0.27), ("there", 0.27, 0.509), ("<|GBG|>", 0.509, 0.57)),
                               raw="<|en|><|HAPPY|><|Cough|><|woitn|>hi there<|GBG|>")
    assert t.clean_words == (("hi", 0.0, 0.27), ("there", 0.27, 0.509))
    assert transcript_from_result({"text": "<|en|>"}).words == ()
    with pytest.raises(ValueError, match="2 words but 1 timestamps"):
        transcript_from_result({"text": "x", "words": ["a", "b"], "timestamp": [[0, 1]]})


# ---------------------------------------------------------------------------------------
# (d) crafted CTC logits, end to end
# ---------------------------------------------------------------------------------------


class CraftedHead(torch.nn.Module):
    """A CTC output layer that emits ``plan`` (frame → token id) and blank elsewhere."""

    def __init__(self, plan: dict[int, int], vocab: int):
        super().__init__()
        self.plan, self.vocab = plan, vocab

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], x.shape[1], self.vocab)
        out[:, :, 0] = 30.0
        for frame, token in self.plan.items():
            if frame < x.shape[1]:
                out[:, frame, 0] = 0.0
                out[:, frame, token] = 30.0
        return out


@pytest.mark.parametrize("lang,emo,event,lang_out,emo_out,events_out", [
    ("ja", "SAD", "Laughter", "ja", "sad", ("laughter", "cough")),
    ("nospeech", "EMO_UNKNOWN", "Speech", "", "", ("cough",)),
    ("yue", "SURPRISED", "BGM", "yue", "surprised", ("music", "cough")),
])
def test_crafted_logits_end_to_end(sv, auto_model, clips, monkeypatch, lang, emo, event, lang_out, emo_out, events_out):
    tok = sv.tokenizer.sp
    pieces = [f"<|{lang}|>", f"<|{emo}|>", f"<|{event}|>", "<|withitn|>", "▁babe", "▁kozo", "s", "<|Cough|>", "▁mimi"]
    ids = [tok.piece_to_id(p) for p in pieces]
    assert 0 not in ids and len(set(ids)) == len(ids)
    frames = [0, 1, 2, 3, 10, 20, 21, 30, 40]
    plan = dict(zip(frames, ids))
    # (setitem on _modules: monkeypatch.setattr cannot restore a torch submodule)
    monkeypatch.setitem(sv.model.ctc._modules, "ctc_lo", CraftedHead(plan, VOCAB_SIZE))
    monkeypatch.setitem(auto_model.model.ctc._modules, "ctc_lo", CraftedHead(plan, VOCAB_SIZE))
    (got,) = transcribe_clips(sv, clips[2:3], language="auto", itn=True)
    assert got.raw == "".join(pieces).replace("▁", " ")
    assert (got.language, got.emotion, got.events) == (lang_out, emo_out, events_out)
    assert got.text == "babe kozos mimi"
    ref = funasr_reference(auto_model, clips[2], language="auto", itn=True)
    assert got.raw == ref["text"] and [w for w, _, _ in got.words] == ref["words"]
    assert [w for w, _, _ in got.words] == ["▁babe", "kozos", "<|Cough|>", "mimi"]
    assert [w for w, _, _ in got.clean_words] == ["babe", "kozos", "mimi"]
    # speech frame f (after the 4 query frames) spans ((f - 4) * 60 - 30, (f - 3) * 60 - 30) ms;
    # "kozos" spans its two pieces' frames 20 and 21
    expect = [(0.33, 0.39), (0.93, 1.05), (1.53, 1.59), (2.13, 2.19)]
    for (_, s, e), (s0, e0) in zip(got.words, expect):
        assert s == pytest.approx(s0, abs=0.0011) and e == pytest.approx(e0, abs=0.0011)


# ---------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------


def test_input_checks(sv, clips):
    with pytest.raises(ValueError, match="language must be one of"):
        transcribe_clips(sv, clips[:1], language="english")
    with pytest.raises(ClipTooShortError, match="clip 1: 399 samples"):
        transcribe_clips(sv, [clips[0], np.zeros(399, np.float32)])
    with pytest.raises(ValueError, match="1-D"):
        transcribe_clips(sv, [np.zeros((2, 8000), np.float32)])
    bad = clips[0].copy()
    bad[10] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        transcribe_clips(sv, [bad])
    assert transcribe_clips(sv, []) == []
    (t,) = transcribe_clips(sv, [np.zeros(400, np.float32)])
    assert isinstance(t, ClipTranscript)


# ---------------------------------------------------------------------------------------
# (f) loading: safe, strict, one-line errors; the test model's tokenizer
# ---------------------------------------------------------------------------------------


def test_test_model_tokenizer_puts_special_tokens_where_funasr_expects(sv, sv_dir):
    assert sv.tokenizer.get_vocab_size() == VOCAB_SIZE
    for token, token_id in pinned_token_ids().items():
        assert sv.tokenizer.encode(token) == [token_id]
    assert sv.model.lid_int_dict[sv.tokenizer.encode("<|en|>")[0]] == sv.model.lid_dict["en"]
    assert sv.is_test_model and (sv_dir / "EMOFLOW_TEST_MODEL").is_file()
    assert sv.model.encoder.output_size() == 32 and sv.frontend.output_size() == 560


def _copy_dir(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


class RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_in_model_pt_is_refused(sv_dir, tmp_path):
    d = _copy_dir(sv_dir, tmp_path / "evil")
    marker = tmp_path / "pwned"
    payload = RunsCode()
    payload.marker = marker
    state = torch.load(d / "model.pt", weights_only=True)
    torch.save({"state_dict": state, "extra": payload}, d / "model.pt")
    with pytest.raises(UnsafeCheckpointError) as err:
        load_sensevoice(d)
    assert "model.pt" in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["config.yaml", BPE_FILE, "am.mvn", "model.pt"])
def test_missing_file_is_one_line(sv_dir, tmp_path, name):
    d = _copy_dir(sv_dir, tmp_path / "m")
    (d / name).unlink()
    with pytest.raises(SenseVoiceFilesError) as err:
        load_sensevoice(d)
    msg = str(err.value)
    assert isinstance(err.value, ModelUnavailableError)
    assert "\n" not in msg and f"missing {name}" in msg and str(d) in msg


def test_unusable_files_are_one_line(sv_dir, tmp_path):
    d = _copy_dir(sv_dir, tmp_path / "u")
    (d / "am.mvn").write_text("<Nnet>\n</Nnet>\n")
    with pytest.raises(SenseVoiceFilesError, match=r"am\.mvn: holds \(2, 0\)") as err:
        load_sensevoice(d)
    assert "\n" not in str(err.value)
    shutil.copy(sv_dir / "am.mvn", d / "am.mvn")
    (d / BPE_FILE).write_bytes(b"not a model")
    with pytest.raises(SenseVoiceFilesError, match="not a sentencepiece model"):
        load_sensevoice(d)
    shutil.copy(sv_dir / BPE_FILE, d / BPE_FILE)
    (d / "config.yaml").write_text((sv_dir / "config.yaml").read_text().replace("SenseVoiceSmall", "Paraformer"))
    with pytest.raises(SenseVoiceFilesError, match="'Paraformer' is not SenseVoiceSmall"):
        load_sensevoice(d)


def test_checkpoint_must_fit_strictly(sv_dir, tmp_path):
    d = _copy_dir(sv_dir, tmp_path / "s")
    state = torch.load(sv_dir / "model.pt", weights_only=True)
    state.pop("ctc.ctc_lo.bias")
    state["extra.weight"] = torch.zeros(1)
    state["embed.weight"] = torch.zeros(3, 3)
    torch.save(state, d / "model.pt")
    with pytest.raises(SenseVoiceCheckpointError) as err:
        load_sensevoice(d)
    msg = str(err.value)
    assert "\n" not in msg and str(d / "model.pt") in msg
    assert "1 missing keys (e.g. ctc.ctc_lo.bias)" in msg and "extra.weight" not in msg
    assert "embed.weight (3, 3) != (16, 560)" in msg


def test_tensors_the_model_does_not_use_are_left_out(sv, sv_dir, tmp_path, clips):
    """A published checkpoint may carry training-time extras: funasr ignores them, so do we."""
    d = _copy_dir(sv_dir, tmp_path / "extra")
    state = torch.load(sv_dir / "model.pt", weights_only=True)
    state["criterion_att.extra"] = torch.zeros(2)
    torch.save(state, d / "model.pt")
    (got,) = transcribe_clips(load_sensevoice(d), [clips[0]])
    (want,) = transcribe_clips(sv, [clips[0]])
    assert got == want


def test_safetensors_preferred_and_module_prefix(sv, sv_dir, tmp_path, clips):
    from safetensors.torch import save_file

    d = _copy_dir(sv_dir, tmp_path / "st")
    state = torch.load(sv_dir / "model.pt", weights_only=True)
    save_file({f"module.{k}": v.contiguous() for k, v in state.items()}, d / "model.safetensors")
    (d / "model.pt").write_bytes(pickle.dumps("not used"))
    other = load_sensevoice(d)
    assert other.checkpoint.name == "model.safetensors"
    assert transcribe_clips(other, clips[:2]) == transcribe_clips(sv, clips[:2])


# ---------------------------------------------------------------------------------------
# (e) captions
# ---------------------------------------------------------------------------------------


def test_srt_format():
    cues = [(3.0, 4.25, "SPEAKER_01", "second", ""),
            (0.5, 1.5, "SPEAKER_00", "hello  world\n", "happy"),
            (2.0, 2.5, "SPEAKER_00", "  \n\t", "sad"),  # empty: left out
            (3661.0005, 3662.0, "", "a --> b <i>", "neutral")]
    assert to_srt(cues) == (
        "1\n00:00:00,500 --> 00:00:01,500\nSPEAKER_00: [happy] hello world\n\n"
        "2\n00:00:03,000 --> 00:00:04,250\nSPEAKER_01: second\n\n"
        "3\n01:01:01,000 --> 01:01:02,000\n[neutral] a -> b <i>\n"
    )
    assert to_srt([]) == ""


def test_vtt_format_and_escaping():
    cues = [(0.0, 1.5, "A&B", "x < y & z --> w", "angry"),
            (1.5, 1.5004, "C", "tiny\x00\x07 cue\x1b", "")]
    assert to_vtt(cues) == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:01.500\nA&amp;B: [angry] x &lt; y &amp; z --&gt; w\n\n"
        "00:00:01.500 --> 00:00:01.501\nC: tiny cue\n"
    )
    assert to_vtt([]) == "WEBVTT\n"


def test_cues_are_checked_and_objects_accepted():
    class Cue:
        start, end, speaker, text, emotion = 1.0, 2.0, "S", "hi", "fearful"

    assert to_vtt([Cue()]).endswith("00:00:01.000 --> 00:00:02.000\nS: [fearful] hi\n")
    for bad in [(2.0, 1.0, "S", "x", ""), (1.0, 1.0, "S", "x", ""), (-1.0, 1.0, "S", "x", ""),
                (0.0, float("inf"), "S", "x", "")]:
        with pytest.raises(ValueError):
            to_srt([bad])
    assert captions.format_timestamp(360000.0, decimal=",") == "100:00:00,000"
    assert captions.clean_caption_text("a\u0085b\r\nc") == "ab c"
