"""Randomly initialised SenseVoiceSmall model directories for tests and benchmarks.

A directory built here has the published layout (``config.yaml``, ``model.pt``,
``chn_jpn_yue_eng_ko_spectok.bpe.model``, ``am.mvn``, ``configuration.json``) and loads both with
:func:`tasks.transcription.sensevoice.load_sensevoice` and with
``funasr.AutoModel(model=dir)``. Its weights are random: its transcripts mean nothing. Every
directory holds the ``EMOFLOW_TEST_MODEL`` marker of :mod:`tasks.testmodels`.

The tokenizer is a sentencepiece model trained when the directory is built, without
sentencepiece's dummy prefix: funasr's timestamp code drops the first four pieces of the
re-tokenised text as the four leading tags, and a dummy-prefix ``▁`` piece would be one of them
(the published tokenizer evidently works the same way). funasr's
``SenseVoiceSmall`` hard-codes the ids of some special tokens (the languages zh/en/yue/ja/ko and
nospeech, the emotions happy/sad/angry/neutral/unknown, and the text-normalisation pair
withitn/woitn): they are read from funasr's class itself and the trained tokenizer is checked to
put each token at that id. The vocabulary (25055 pieces, as published) is laid out as

* ids 0-2: ``<unk>`` (also the CTC blank), ``<s>``, ``</s>``;
* ids 3-24883: word-like filler pieces (``▁kabe``, ``do`` ...), user-defined symbols that stand
  in for the published model's BPE pieces;
* ids 24884-25017: the special tokens: languages (24884-24992), events (24993-25000), emotions
  (25001-25009), other event tags and placeholders, ``<|withitn|>`` / ``<|woitn|>`` (25016/25017).
  Only the ids funasr hard-codes and the published emotion ids are known; where the other tags
  sit in the published vocabulary is not, and they are placed in the free slots;
* ids 25018-25054: pieces learnt from a small English text (letters and a few merges).
"""

from __future__ import annotations

import copy
import io
import itertools
import json
from pathlib import Path
from typing import Any, Literal

import yaml

from tasks.models.testmodels import TEST_MODEL_MARKER

SHARED_CONFIG = Path(__file__).resolve().parents[3] / "shared" / "models" / "SenseVoiceSmall"
"""Where the published SenseVoiceSmall ``config.yaml`` lives (``../shared/models/SenseVoiceSmall``)."""

BPE_FILE = "chn_jpn_yue_eng_ko_spectok.bpe.model"
CMVN_FILE = "am.mvn"
VOCAB_SIZE = 25055
FIRST_SPECIAL_ID = 24884
FIRST_TRAINED_ID = 25018
BLANK_BIAS = 1.7
SPECIAL_BIAS = 0.9

TINY_ENCODER: dict[str, Any] = {
    "output_size": 32,
    "attention_heads": 2,
    "linear_units": 64,
    "num_blocks": 3,
    "tp_blocks": 1,
}

EVENT_TAGS = ("Speech", "BGM", "Applause", "Laughter", "Cry", "Sneeze", "Breath", "Cough")
EMOTION_TAGS = ("HAPPY", "SAD", "ANGRY", "NEUTRAL", "FEARFUL", "DISGUSTED", "SURPRISED")
OTHER_EVENT_TAGS = ("Sing", "Speech_Noise", "Event_UNK", "GBG")
OTHER_LANGUAGES = (
    "de es ru fr pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur hr bg lt "
    "la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si km sn "
    "yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt haw ln ha ba "
    "jw su ast ceb ckb fil ga ig ku ky"
).split()

CORPUS = (
    "the quick brown fox jumps over the lazy dog while the old man reads a letter by the window "
    "she sells sea shells on the shore and the shells she sells are surely sea shells "
    "we went to the market in the morning and bought bread milk and fresh fruit for the week "
    "a journey of a thousand miles begins with a single step taken in the right direction "
    "every voice in the room fell silent when the music started playing again"
)


def published_config(config_dir: str | Path | None = None) -> dict[str, Any]:
    """The published SenseVoiceSmall ``config.yaml`` as a dict."""
    src = Path(config_dir) if config_dir else SHARED_CONFIG
    return yaml.safe_load((src / "config.yaml").read_text(encoding="utf-8"))


def pinned_token_ids() -> dict[str, int]:
    """The special tokens whose ids funasr's ``SenseVoiceSmall`` hard-codes, read from the class.

    Returns
    -------
    dict
        Token text → id: the languages of ``lid_dict`` (via ``lid_int_dict``), the text
        normalisation tags (via ``textnorm_int_dict``) and the emotions of ``emo_dict``.
    """
    import torch
    from funasr.models.sense_voice.model import SenseVoiceSmall

    with torch.device("meta"):  # the tables are set in __init__; no weights needed
        m = SenseVoiceSmall(encoder="SenseVoiceEncoderSmall", encoder_conf=dict(TINY_ENCODER),
                            input_size=8, vocab_size=4)
    lid_ids = {idx: tid for tid, idx in m.lid_int_dict.items()}
    out = {f"<|{lang}|>": lid_ids[idx] for lang, idx in m.lid_dict.items() if lang != "auto"}
    norm_ids = {idx: tid for tid, idx in m.textnorm_int_dict.items()}
    out.update({f"<|{name}|>": norm_ids[idx] for name, idx in m.textnorm_dict.items()})
    out.update({f"<|{'EMO_UNKNOWN' if k == 'unk' else k.upper()}|>": v for k, v in m.emo_dict.items()})
    return out


def special_tokens() -> list[str]:
    """The special tokens at ids ``24884 .. 25017``, in id order (see the module docstring)."""
    pinned = pinned_token_ids()
    slots: dict[int, str] = {i: tok for tok, i in pinned.items()}
    nospeech, happy, unknown = pinned["<|nospeech|>"], pinned["<|HAPPY|>"], pinned["<|EMO_UNKNOWN|>"]

    def place(tags, start: int) -> None:
        free = (i for i in itertools.count(start) if i not in slots)
        for tag in tags:
            slots[next(free)] = f"<|{tag}|>"

    place([lang for lang in OTHER_LANGUAGES], FIRST_SPECIAL_ID)  # fills the slots before nospeech
    place(EVENT_TAGS, nospeech + 1)
    place([e for e in EMOTION_TAGS if f"<|{e}|>" not in pinned], happy)
    place(OTHER_EVENT_TAGS, unknown + 1)
    for i in range(FIRST_SPECIAL_ID, FIRST_TRAINED_ID):
        slots.setdefault(i, f"<|SPECIAL_{i}|>")
    assert max(slots) < FIRST_TRAINED_ID and slots[nospeech] == "<|nospeech|>", "special-token layout overflow"
    return [slots[i] for i in range(FIRST_SPECIAL_ID, FIRST_TRAINED_ID)]


def rich_tag_ids() -> list[int]:
    """Ids of the tags SenseVoice itself emits: its five languages and nospeech, the events,
    emotions and text-normalisation tags (not the other language codes or placeholders)."""
    pinned = set(pinned_token_ids())
    names = pinned | {f"<|{t}|>" for t in EVENT_TAGS + EMOTION_TAGS + OTHER_EVENT_TAGS}
    return [FIRST_SPECIAL_ID + k for k, tok in enumerate(special_tokens()) if tok in names]


def filler_pieces(count: int) -> list[str]:
    """``count`` distinct word-like pieces (consonant-vowel syllables), deterministic.

    Four in five start with ``▁`` (a word start, as in sentencepiece); the rest continue a word.
    """
    syllables = [c + v for c in "bdfghklmnprstvz" for v in "aeiou"]
    words = itertools.chain(
        syllables,
        ("".join(p) for p in itertools.product(syllables, repeat=2)),
        ("".join(p) for p in itertools.product(syllables, repeat=3)),
    )
    return [("" if k % 5 == 4 else "▁") + w for k, w in zip(range(count), words)]


def train_tokenizer(out_file: str | Path) -> Path:
    """Train the test sentencepiece model (see the module docstring) and write it.

    Raises
    ------
    AssertionError
        A special token is not at the id funasr's ``SenseVoiceSmall`` expects, or the
        vocabulary does not have 25055 pieces.
    """
    import sentencepiece as spm

    specials = special_tokens()
    user = filler_pieces(FIRST_SPECIAL_ID - 3) + specials
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS.split(" and ")), model_writer=buf, model_type="bpe",
        vocab_size=VOCAB_SIZE, user_defined_symbols=user, add_dummy_prefix=False,
        normalization_rule_name="identity", character_coverage=1.0, hard_vocab_limit=True,
        num_threads=1, minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    assert sp.get_piece_size() == VOCAB_SIZE, sp.get_piece_size()
    for tok, i in pinned_token_ids().items():
        assert sp.piece_to_id(tok) == i, f"{tok} at {sp.piece_to_id(tok)}, SenseVoiceSmall expects {i}"
    for k, tok in enumerate(specials):
        assert sp.piece_to_id(tok) == FIRST_SPECIAL_ID + k, tok
    out = Path(out_file)
    out.write_bytes(buf.getvalue())
    return out


def write_cmvn(out_file: str | Path, *, dim: int = 560, shift: float = -11.0, scale: float = 0.25) -> Path:
    """Write an ``am.mvn`` in Kaldi nnet text format (what funasr's ``load_cmvn`` reads).

    The frontend computes ``(x + shift) * scale`` per feature; the defaults roughly centre the
    log-mel features of speech at full scale (a plausible normaliser, not estimated from data).
    """
    shifts = " ".join([f"{shift:g}"] * dim)
    scales = " ".join([f"{scale:g}"] * dim)
    text = (f"<Nnet>\n<Splice> {dim} {dim}\n[ 0 ]\n<AddShift> {dim} {dim}\n"
            f"<LearnRateCoef> 0 [ {shifts} ]\n<Rescale> {dim} {dim}\n"
            f"<LearnRateCoef> 0 [ {scales} ]\n</Nnet>\n")
    out = Path(out_file)
    out.write_text(text, encoding="utf-8")
    return out


def configuration_json() -> dict[str, Any]:
    """The published ``configuration.json``: maps the folder's files into the config."""
    return {
        "framework": "pytorch",
        "task": "auto-speech-recognition",
        "model": {"type": "funasr"},
        "pipeline": {"type": "funasr-pipeline"},
        "file_path_metas": {
            "init_param": "model.pt",
            "config": "config.yaml",
            "tokenizer_conf": {"bpemodel": BPE_FILE},
            "frontend_conf": {"cmvn_file": CMVN_FILE},
        },
    }


def build_sensevoice_dir(
    out_dir: str | Path,
    *,
    size: Literal["tiny", "small"] = "tiny",
    seed: int = 0,
    config_dir: str | Path | None = None,
    logit_scale: float = 1.0,
    blank_bias: float = BLANK_BIAS,
    special_bias: float = SPECIAL_BIAS,
) -> Path:
    """Build a randomly initialised SenseVoiceSmall model directory.

    Parameters
    ----------
    out_dir : path-like
        Created if missing; receives ``config.yaml``, ``model.pt``, the sentencepiece model,
        ``am.mvn``, ``configuration.json`` and the ``EMOFLOW_TEST_MODEL`` marker.
    size : {"tiny", "small"}
        ``"small"`` keeps the published encoder (512-d, 50 + 20 blocks, ~234 M parameters) for
        benchmarks; ``"tiny"`` shrinks it (32-d, 2 heads, 3 + 1 blocks) for tests.
    seed : int
        Seed of the random initialisation (same seed, same weights).
    config_dir : path-like, optional
        Where the published ``config.yaml`` lives (default :data:`SHARED_CONFIG`).
    logit_scale : float
        Multiplies the CTC head's weights and bias.
    blank_bias, special_bias : float
        Added to the CTC head's bias for the blank (id 0) and for the rich tags
        (:func:`rich_tag_ids`). A freshly initialised head has logits of standard deviation ~0.6 and
        almost never picks the blank or a tag; the defaults make about half the frames blank
        and a fair share of the rest rich tags, so the (meaningless) output has the shape of a
        transcript: words, gaps and several tags.

    Returns
    -------
    Path
        ``out_dir``.
    """
    import torch
    from funasr.models.sense_voice.model import SenseVoiceSmall

    cfg = copy.deepcopy(published_config(config_dir))
    if size == "tiny":
        cfg["encoder_conf"].update(TINY_ENCODER)
    elif size != "small":
        raise ValueError(f"size must be 'tiny' or 'small', not {size!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_tokenizer(out / BPE_FILE)
    write_cmvn(out / CMVN_FILE)
    fe = cfg["frontend_conf"]
    torch.manual_seed(seed)
    model = SenseVoiceSmall(
        encoder=cfg["encoder"], encoder_conf=cfg["encoder_conf"], input_size=fe["n_mels"] * fe["lfr_m"],
        vocab_size=VOCAB_SIZE, **cfg.get("model_conf", {}),
    )
    with torch.no_grad():
        head = model.ctc.ctc_lo
        head.weight.mul_(logit_scale)
        head.bias.mul_(logit_scale)
        head.bias[0] += blank_bias
        head.bias[rich_tag_ids()] += special_bias
    (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")
    (out / "configuration.json").write_text(json.dumps(configuration_json(), indent=2) + "\n", encoding="utf-8")
    torch.save(model.state_dict(), out / "model.pt")
    (out / TEST_MODEL_MARKER).write_text(
        f"Randomly initialised SenseVoiceSmall ({size}, seed {seed}) built by emoflow for tests and "
        "benchmarks. Its transcripts are meaningless.\n",
        encoding="utf-8",
    )
    return out
