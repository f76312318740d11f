"""The SenseVoice transcription engine: funasr's own ``SenseVoiceSmall``, exactly.

:func:`load_sensevoice` builds the model, tokenizer and feature frontend with funasr's classes
from a **local** directory (no hub access) and loads the weights without running code from the
checkpoint (:mod:`tasks.models.checkpoints`: safetensors or ``torch.load(weights_only=True)``), with a
strict key and shape check.

:func:`transcribe_clips` runs funasr's own ``SenseVoiceSmall.inference`` on precomputed
features, so for each clip its raw text, word list and word times are those of::

    torch.manual_seed(seed)
    AutoModel(model=dir, disable_update=True).generate(
        input=clip, language=language, use_itn=itn, output_timestamp=True)

token for token. The seed matters: SenseVoice's frontend adds dither noise (``dither=1.0``,
Kaldi fbank) drawn from torch's global random generator, so funasr's output for a clip depends
on what ran before it. Here every clip's noise is drawn from a generator freshly seeded with
``seed`` (inside ``torch.random.fork_rng``: the caller's random state is left untouched), so a
clip's transcript depends on the clip alone, not on its batch or on earlier clips.

funasr's result for a clip with ``output_timestamp=True`` holds ``text`` (the raw CTC output,
rich tags included: ``<|en|><|NEUTRAL|><|Speech|><|woitn|>hello world``), ``words`` (strings)
and ``timestamp`` (``[start_ms, end_ms]`` integer pairs, one per word). The words come from
re-tokenising the decoded text, dropping its first four pieces (the four tags the model emits
first), CTC forced alignment on 60 ms frames, and merging ASCII letter pieces into words. Two
quirks are funasr's and kept verbatim in :attr:`ClipTranscript.words`: the first word keeps
sentencepiece's ``▁`` word mark (so pieces after it are never merged into it), and tags the
model emits later in the text appear as words; :attr:`ClipTranscript.clean_words` drops the mark
and the tag words. A text that re-tokenises to nothing after the four tags has no
``timestamp`` key: no words. ``ban_emo_unk`` in ``config.yaml`` is honoured as AutoModel does.

:func:`parse_rich_text` splits the raw text into language, emotion, audio events and plain text.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from tasks.core.timebase import SAMPLE_RATE
from tasks.core.errors import first_line
from tasks.models.hub import ModelUnavailableError

log = logging.getLogger(__name__)

MIN_SAMPLES = 400  # one 25 ms analysis window
DEFAULT_BATCH_SECONDS = 60.0
SINGLE_THREAD_BATCH_SECONDS = 12.0  # short clips of like length share a pass; long ones stay alone
MODEL_CLASS = "SenseVoiceSmall"
DEFAULT_BPE_FILE = "chn_jpn_yue_eng_ko_spectok.bpe.model"
DEFAULT_CMVN_FILE = "am.mvn"
LANGUAGE_OPTIONS = ("auto", "zh", "en", "yue", "ja", "ko", "nospeech")
"""The ``language`` values SenseVoiceSmall accepts (its ``lid_dict``)."""

EMOTION_TAGS: dict[str, str] = {
    "HAPPY": "happy",
    "SAD": "sad",
    "ANGRY": "angry",
    "NEUTRAL": "neutral",
    "FEARFUL": "fearful",
    "DISGUSTED": "disgusted",
    "SURPRISED": "surprised",
    "EMO_UNKNOWN": "",
}
"""SenseVoice emotion tag → emotion word (``""``: the model does not know)."""

EVENT_TAGS: dict[str, str] = {
    "Speech": "",
    "BGM": "music",
    "Applause": "applause",
    "Laughter": "laughter",
    "Cry": "crying",
    "Sneeze": "sneeze",
    "Breath": "breath",
    "Cough": "cough",
    "Sing": "singing",
    "Speech_Noise": "noise",
    "Event_UNK": "",
    "GBG": "",
}
"""SenseVoice audio-event tag → event name (``""``: not reported: plain speech or unknown)."""

TEXT_NORM_TAGS = frozenset({"withitn", "woitn"})
TAG_RE = re.compile(r"<\|([A-Za-z0-9_]+)\|>")
"""A well-formed rich tag: ``<|name|>``, the name made of letters, digits and ``_``."""
LANGUAGE_CODE_RE = re.compile(r"[a-z]{2,3}")
"""Lower-case language codes (``en``, ``yue`` ...): SenseVoice's vocabulary holds ~100."""

SENTENCEPIECE_WORD_MARK = "▁"


class SenseVoiceFilesError(ModelUnavailableError):
    """A SenseVoice directory is missing a file or holds an unusable one (one-line message)."""


class SenseVoiceCheckpointError(ModelUnavailableError):
    """The checkpoint does not fit the model: missing, unexpected or mis-shaped tensors."""


class ClipTooShortError(ValueError):
    """A clip is shorter than one 25 ms analysis window (400 samples)."""


# ---------------------------------------------------------------------------------------
# Rich text
# ---------------------------------------------------------------------------------------


class RichText(NamedTuple):
    """What :func:`parse_rich_text` reads from SenseVoice's raw output."""

    language: str
    emotion: str
    events: tuple[str, ...]
    text: str


def _tag_kind(name: str) -> str:
    """``"language"``, ``"emotion"``, ``"event"``, ``"textnorm"`` or ``"unknown"`` for a tag name."""
    if name in EMOTION_TAGS:
        return "emotion"
    if name in EVENT_TAGS:
        return "event"
    if name in TEXT_NORM_TAGS:
        return "textnorm"
    if name == "nospeech" or LANGUAGE_CODE_RE.fullmatch(name):
        return "language"
    return "unknown"


def parse_rich_text(raw: str) -> RichText:
    """Split SenseVoice's raw output into language, emotion, events and plain text.

    Parameters
    ----------
    raw : str
        funasr's ``text``: tags such as ``<|en|><|HAPPY|><|Laughter|><|withitn|>`` (usually
        first, but any tag anywhere is read) followed by the transcript.

    Returns
    -------
    RichText
        ``language``: the first language tag's code (``"en"``, ``"zh"`` ...; any lower-case
        2-3 letter tag counts), ``""`` when there is none or it is ``nospeech``.
        ``emotion``: the first emotion tag as a lower-case word (:data:`EMOTION_TAGS`), ``""``
        when there is none or it is ``EMO_UNKNOWN``.
        ``events``: the event tags as names (:data:`EVENT_TAGS`), in order of first appearance,
        each once; ``Speech``, ``Event_UNK`` and ``GBG`` are not events.
        ``text``: the raw text without its well-formed tags (text-normalisation and unknown
        tags are dropped too), whitespace runs collapsed to one space, stripped.

    Notes
    -----
    Only ``<|name|>`` with a name of letters, digits and ``_`` is a tag. Anything else that
    looks like one (``<|en``, ``HAPPY|>``, ``<||>``, ``<| en |>``) is left in the text as
    written: it is not read as a tag, and it is not silently deleted either.
    """
    language = emotion = None
    events: list[str] = []
    for m in TAG_RE.finditer(raw):
        name = m.group(1)
        kind = _tag_kind(name)
        if kind == "language" and language is None:
            language = "" if name == "nospeech" else name
        elif kind == "emotion" and emotion is None:
            emotion = EMOTION_TAGS[name]
        elif kind == "event" and EVENT_TAGS[name] and EVENT_TAGS[name] not in events:
            events.append(EVENT_TAGS[name])
    text = " ".join(TAG_RE.sub("", raw).split())
    return RichText(language or "", emotion or "", tuple(events), text)


# ---------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipTranscript:
    """SenseVoice's transcript of one clip.

    Attributes
    ----------
    text : str
        The transcript without tags (:func:`parse_rich_text`).
    language : str
        ``"en"``, ``"zh"`` ..., ``""`` when the model says no speech (or names none).
    emotion : str
        ``happy``, ``sad``, ``angry``, ``neutral``, ``fearful``, ``disgusted``, ``surprised``,
        or ``""`` when unknown.
    events : tuple of str
        Audio events (``"laughter"``, ``"music"`` ...), in order of first appearance.
    words : tuple of (str, float, float)
        funasr's words with start and end in seconds from the clip start, verbatim (see the
        module docstring for the first word's ``▁`` and for tags among the words).
    raw : str
        funasr's raw text, tags included.
    """

    text: str
    language: str
    emotion: str
    events: tuple[str, ...]
    words: tuple[tuple[str, float, float], ...]
    raw: str

    @property
    def clean_words(self) -> tuple[tuple[str, float, float], ...]:
        """:attr:`words` without the ``▁`` word mark and without words that are rich tags
        (or become empty)."""
        out = []
        for text, start, end in self.words:
            t = TAG_RE.sub("", text).replace(SENTENCEPIECE_WORD_MARK, " ").strip()
            if t:
                out.append((t, start, end))
        return tuple(out)


def transcript_from_result(result: dict[str, Any]) -> ClipTranscript:
    """A :class:`ClipTranscript` from one funasr SenseVoice result dict.

    Parameters
    ----------
    result : dict
        ``text`` and, when funasr aligned words, ``words`` and ``timestamp`` (milliseconds).
    """
    raw = str(result.get("text", ""))
    words = result.get("words") or []
    stamps = result.get("timestamp") or []
    if len(words) != len(stamps):
        raise ValueError(f"funasr result has {len(words)} words but {len(stamps)} timestamps")
    rich = parse_rich_text(raw)
    timed = tuple((str(w), int(s) / 1000.0, int(e) / 1000.0) for w, (s, e) in zip(words, stamps))
    return ClipTranscript(text=rich.text, language=rich.language, emotion=rich.emotion,
                          events=rich.events, words=timed, raw=raw)


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SenseVoiceModel:
    """A loaded SenseVoiceSmall: funasr's model, tokenizer and frontend, ready for inference."""

    model: Any
    tokenizer: Any
    frontend: Any
    device: str
    path: Path
    checkpoint: Path
    is_test_model: bool
    ban_emo_unk: bool = False  # config.yaml's ban_emo_unk: funasr then never emits EMO_UNKNOWN
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def _file_names(model_dir: Path) -> dict[str, str]:
    """File names of the bpe model, the CMVN and the checkpoint, from ``configuration.json``'s
    ``file_path_metas`` when present (the published layout), else the published defaults."""
    names = {"bpemodel": DEFAULT_BPE_FILE, "cmvn_file": DEFAULT_CMVN_FILE, "init_param": "model.pt"}
    p = model_dir / "configuration.json"
    if not p.is_file():
        return names
    try:
        metas = json.loads(p.read_text(encoding="utf-8")).get("file_path_metas", {})
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
        raise SenseVoiceFilesError(f"{p}: not a readable JSON object ({first_line(exc, limit=160)})") from None
    if not isinstance(metas, dict):
        raise SenseVoiceFilesError(f"{p}: file_path_metas is not a mapping")
    for section, key in (("tokenizer_conf", "bpemodel"), ("frontend_conf", "cmvn_file"), (None, "init_param")):
        value = metas.get(key) if section is None else (metas.get(section) or {}).get(key)
        if isinstance(value, str) and value:
            names[key] = value
    return names


def check_model_files(model_dir: str | Path) -> dict[str, Path]:
    """The files of a SenseVoice directory, checked to exist.

    Returns
    -------
    dict
        ``config``, ``bpemodel``, ``cmvn_file`` and ``checkpoint`` paths; the checkpoint is
        ``model.safetensors`` when present, else ``model.pt`` (or ``configuration.json``'s
        ``init_param``).

    Raises
    ------
    SenseVoiceFilesError
        One line naming the directory and every missing file.
    """
    d = Path(model_dir)
    if not d.is_dir():
        raise SenseVoiceFilesError(f"{d}: not a directory (a SenseVoiceSmall model directory is needed)")
    names = _file_names(d)
    files = {"config": d / "config.yaml", "bpemodel": d / names["bpemodel"], "cmvn_file": d / names["cmvn_file"]}
    safe = d / "model.safetensors"
    files["checkpoint"] = safe if safe.is_file() else d / names["init_param"]
    missing = [f.name for f in files.values() if not f.is_file()]
    if missing:
        raise SenseVoiceFilesError(
            f"{d}: missing {', '.join(missing)} (a SenseVoiceSmall directory holds config.yaml, "
            f"{names['bpemodel']}, {names['cmvn_file']} and model.safetensors or {names['init_param']})")
    return files


def read_config(path: Path) -> dict[str, Any]:
    """``config.yaml`` of a SenseVoiceSmall directory, checked for the parts used here.

    Raises
    ------
    SenseVoiceFilesError
        One line naming the file: unreadable, not YAML, or not a SenseVoiceSmall config.
    """
    import yaml

    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SenseVoiceFilesError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SenseVoiceFilesError(f"{path}: not valid YAML ({' '.join(str(exc).split())[:160]})") from None
    if not isinstance(cfg, dict):
        raise SenseVoiceFilesError(f"{path}: not a mapping")
    if cfg.get("model") != MODEL_CLASS:
        raise SenseVoiceFilesError(f"{path}: model class {cfg.get('model')!r} is not {MODEL_CLASS}")
    for key in ("encoder_conf", "frontend_conf"):
        if not isinstance(cfg.get(key), dict):
            raise SenseVoiceFilesError(f"{path}: no {key} mapping")
    if cfg.get("frontend", "WavFrontend") != "WavFrontend":
        raise SenseVoiceFilesError(f"{path}: frontend {cfg.get('frontend')!r} is not WavFrontend")
    return cfg


def _build_tokenizer(cfg: dict[str, Any], bpe: Path):
    from funasr.tokenizer.sentencepiece_tokenizer import SentencepiecesTokenizer

    conf = {k: v for k, v in (cfg.get("tokenizer_conf") or {}).items() if k != "bpemodel"}
    try:
        return SentencepiecesTokenizer(bpemodel=str(bpe), **conf)
    except Exception as exc:  # sentencepiece raises OSError/RuntimeError for a bad model file
        raise SenseVoiceFilesError(f"{bpe}: not a sentencepiece model ({first_line(exc, limit=160)})") from None


def _build_frontend(cfg: dict[str, Any], cmvn: Path):
    from funasr.frontends.wav_frontend import WavFrontend

    try:
        fe = WavFrontend(**{**cfg["frontend_conf"], "cmvn_file": str(cmvn)})
    except Exception as exc:  # a garbled am.mvn fails inside numpy/torch in many ways
        raise SenseVoiceFilesError(f"{cmvn}: not a Kaldi nnet CMVN file ({first_line(exc, limit=160)})") from None
    if fe.fs != SAMPLE_RATE:
        raise SenseVoiceFilesError(f"{cmvn.parent / 'config.yaml'}: frontend_conf.fs is {fe.fs}, not {SAMPLE_RATE}")
    if tuple(fe.cmvn.shape) != (2, fe.output_size()):
        raise SenseVoiceFilesError(f"{cmvn}: holds {tuple(fe.cmvn.shape)} shift/scale values, the frontend "
                                   f"needs (2, {fe.output_size()})")
    return fe


def _build_meta_model(cfg: dict[str, Any], config_path: Path, *, input_size: int, vocab_size: int):
    """funasr's SenseVoiceSmall on the ``meta`` device (no random initialisation, no memory)."""
    import torch
    from funasr.models.sense_voice.model import SenseVoiceSmall

    keys = ("specaug", "specaug_conf", "normalize", "normalize_conf", "encoder", "encoder_conf", "ctc_conf")
    kwargs = {**(cfg.get("model_conf") or {}), **{k: cfg[k] for k in keys if k in cfg}}
    try:
        with torch.device("meta"):
            return SenseVoiceSmall(**kwargs, input_size=input_size, vocab_size=vocab_size)
    except Exception as exc:  # a garbled encoder_conf fails inside funasr in many ways
        raise SenseVoiceFilesError(f"{config_path}: does not build {MODEL_CLASS} "
                                   f"({type(exc).__name__}: {first_line(exc, limit=160)})") from None


def fit_state_strict(model, state: dict[str, Any], ckpt: Path) -> dict[str, Any]:
    """Match checkpoint tensors to ``model``'s keys (a ``module.`` prefix is allowed): every
    parameter and buffer of the model must be there with its shape. Tensors the model has no
    place for (training-time extras a published checkpoint may carry) are left out, as funasr
    does, with one log line naming them.

    Returns
    -------
    dict
        Model key → tensor, converted to the model's dtypes.

    Raises
    ------
    SenseVoiceCheckpointError
        One line naming ``ckpt``: missing keys or shape mismatches.
    """
    state = {k.removeprefix("module."): v for k, v in state.items()}
    dst = model.state_dict()
    missing = [k for k in dst if k not in state]
    unexpected = [k for k in state if k not in dst]
    mismatched = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in dst.items()
                  if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if unexpected:
        log.info("%s: %d tensor(s) the model does not use are left out (e.g. %s)", ckpt, len(unexpected),
                 ", ".join(unexpected[:3]))
    parts = [f"{len(names)} {what} (e.g. {', '.join(names[:3])})"
             for what, names in (("missing keys", missing), ("shape mismatches", mismatched)) if names]
    if parts:
        raise SenseVoiceCheckpointError(f"{ckpt}: checkpoint does not fit {MODEL_CLASS}: " + "; ".join(parts))
    return {k: state[k].to(v.dtype) for k, v in dst.items()}


def _checked_parts(model_dir: str | Path) -> tuple[dict[str, Path], dict[str, Any], Any, Any, Any, dict[str, Any]]:
    """The files, config, tokenizer, frontend, meta-device model and fitted state of a local
    SenseVoice directory, every file checked (one-line errors naming it)."""
    from tasks.models.checkpoints import load_state

    files = check_model_files(model_dir)
    cfg = read_config(files["config"])
    tokenizer = _build_tokenizer(cfg, files["bpemodel"])
    frontend = _build_frontend(cfg, files["cmvn_file"])
    model = _build_meta_model(cfg, files["config"], input_size=frontend.output_size(),
                              vocab_size=tokenizer.get_vocab_size())
    state = fit_state_strict(model, load_state(files["checkpoint"]), files["checkpoint"])
    return files, cfg, tokenizer, frontend, model, state


def check_sensevoice(model_dir: str | Path) -> None:
    """Vet a SenseVoice directory before the first recording, without loading its weights: its
    files present and usable, its checkpoint safe to read (no code runs from it) and fitting
    the model (keys and shapes, on the ``meta`` device).

    Raises
    ------
    ModelUnavailableError
        One line naming the file at fault.
    """
    _checked_parts(model_dir)


def get_sensevoice(config: Any) -> SenseVoiceModel:
    """The process-wide model for a ``transcribe`` config section: resolved (downloaded on first
    use), loaded once per worker process, then reused."""
    from tasks.models.cache import cached_model
    from tasks.models.devices import resolve_device
    from tasks.models.hub import resolve

    resolved = resolve(config.model, kind="transcribe", hub=config.hub)
    device = resolve_device(config.device, setting="transcribe.device")
    return cached_model(("transcribe", resolved.path, resolved.sha256, device),
                        lambda: load_sensevoice(resolved.path, device=device))


def load_sensevoice(model_dir: str | Path, *, device: str = "cpu") -> SenseVoiceModel:
    """Load a local SenseVoiceSmall directory with funasr's classes, weights read safely.

    Parameters
    ----------
    model_dir : path-like
        A directory in the published layout: ``config.yaml``, the sentencepiece model and
        ``am.mvn`` (names from ``configuration.json`` when present), and ``model.safetensors``
        (preferred) or ``model.pt``. Nothing is downloaded.
    device : {"cpu", "cuda", "auto"} or torch device string
        Where the model runs.

    Returns
    -------
    SenseVoiceModel

    Raises
    ------
    SenseVoiceFilesError
        A file is missing or unusable (one line naming it).
    tasks.checkpoints.UnsafeCheckpointError, tasks.checkpoints.CheckpointLoadError
        The checkpoint needs arbitrary unpickling (refused unread) or is corrupt.
    SenseVoiceCheckpointError
        The checkpoint's tensors do not fit the model.
    """
    from tasks.models.devices import resolve_device
    from tasks.models.testmodels import is_test_model

    files, cfg, tokenizer, frontend, model, state = _checked_parts(model_dir)
    model.load_state_dict(state, strict=True, assign=True)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise SenseVoiceCheckpointError(f"{files['checkpoint']}: not loaded: {', '.join(left[:3])}")
    dev = resolve_device(device, setting="transcribe.device")
    model.eval().to(dev)
    path = Path(model_dir)
    test = is_test_model(path)
    if test:
        log.warning("SenseVoice model %s is a randomly initialised TEST model: its transcripts mean nothing", path)
    return SenseVoiceModel(model=model, tokenizer=tokenizer, frontend=frontend, device=dev, path=path,
                           checkpoint=files["checkpoint"], is_test_model=test,
                           ban_emo_unk=bool(cfg.get("ban_emo_unk", False)))


# ---------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------


def check_clips(clips: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The clips as 1-D float32 arrays, checked.

    Raises
    ------
    ValueError
        A clip is not 1-D or holds NaN/inf.
    ClipTooShortError
        A clip is shorter than 400 samples (25 ms).
    """
    out = []
    for i, c in enumerate(clips):
        a = np.ascontiguousarray(c, dtype=np.float32)
        if a.ndim != 1:
            raise ValueError(f"clip {i}: expected 1-D mono 16 kHz audio, got shape {a.shape}")
        if a.size < MIN_SAMPLES:
            raise ClipTooShortError(f"clip {i}: {a.size} samples is shorter than one {MIN_SAMPLES}-sample "
                                    "(25 ms) analysis window")
        if not np.isfinite(a).all():
            raise ValueError(f"clip {i}: audio holds NaN or inf")
        out.append(a)
    return out


def clip_features(sv: SenseVoiceModel, clip: np.ndarray, *, seed: int | None):
    """funasr's features of one clip: ``(1, T, 560)`` LFR fbank + CMVN and ``(1,)`` lengths.

    The frontend's dither noise comes from torch's generator seeded with ``seed`` inside
    ``fork_rng`` (the caller's random state is unchanged); ``seed=None`` draws it from the
    global generator, as funasr does.
    """
    import torch
    from funasr.utils.load_utils import extract_fbank

    wave = [torch.from_numpy(clip)]
    if seed is None:
        return extract_fbank(wave, frontend=sv.frontend)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return extract_fbank(wave, frontend=sv.frontend)


def default_batch_seconds(device: str) -> float:
    """Padded audio per forward pass when the caller does not say:
    :data:`SINGLE_THREAD_BATCH_SECONDS` on a single-threaded CPU, :data:`DEFAULT_BATCH_SECONDS`
    otherwise.

    Measured with the full-size model on a 2-core CPU, two single-threaded workers, the 68
    segments (161 s) of 10 AMI excerpts, one call per recording as the stage makes them:
    before the padding was skipped, one clip per forward 13.7-14.6 s; padded budgets of
    4 / 6 / 8 / 12 / 16 / 30 / 60 s: 11.6 / 11.3 / 11.2 / 11.2 / 11.3 / 12.3 / 15.1 s. A small
    budget only groups clips of like length (a 5 s clip cannot share 8 s with a 3 s one), so
    little is padded while a short clip's fixed per-pass cost is shared; 60 s batches pad
    too much for one thread, and leave a worker idle. Since the linear layers skip the padding
    (:func:`packed_linears`) and each worker gets its own share of the clips
    (:func:`plan_passes`): 10.4 s with 8 s passes from a shared queue, 9.9 s with 8 s passes
    per worker, 9.8 s with 12 s passes per worker (three rounds, alternating). With two
    threads, 60 s batches took about half the time of one clip per forward (bigger matrix
    products, far fewer thread hand-offs). The transcripts are the same either way (the CTC
    log-probabilities of a clip came out bit-identical in and out of a padded batch, and the
    tests compare the transcripts).
    """
    import torch

    if str(device) == "cpu" and torch.get_num_threads() == 1:
        return SINGLE_THREAD_BATCH_SECONDS
    return DEFAULT_BATCH_SECONDS


def batches(lengths: Sequence[int], *, batch_seconds: float | None) -> list[list[int]]:
    """Clip indices grouped for forward passes.

    ``batch_seconds`` ``None`` or ``0``: one clip per forward, in input order. Otherwise
    length-sorted groups (longest first) whose padded duration (clips x longest) stays within
    ``batch_seconds``; a clip longer than that is alone.
    """
    if not batch_seconds:
        return [[i] for i in range(len(lengths))]
    budget = batch_seconds * SAMPLE_RATE
    out: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda k: lengths[k], reverse=True):
        if out and (len(out[-1]) + 1) * lengths[out[-1][0]] <= budget:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def plan_passes(lengths: Sequence[int], *, batch_seconds: float | None, workers: int) -> list[list[list[int]]]:
    """The forward passes of each worker: one list of clip-index groups per worker.

    One worker: :func:`batches`. Several: the clips are dealt longest first, each to the
    worker with the least audio so far, so every worker gets a like share of the audio and of
    clips of every length; each worker's clips are then grouped by :func:`batches`. A shared
    queue of passes leaves one worker idle behind the last long pass of a recording more often
    (measured in :func:`default_batch_seconds`). Workers left without a clip get no list.
    """
    if workers <= 1 or len(lengths) <= 1:
        return [batches(lengths, batch_seconds=batch_seconds)] if len(lengths) else []
    load = [0] * workers
    own: list[list[int]] = [[] for _ in range(workers)]
    for i in sorted(range(len(lengths)), key=lambda k: lengths[k], reverse=True):
        w = min(range(workers), key=lambda k: load[k])
        own[w].append(i)
        load[w] += lengths[i]
    return [[[idx[j] for j in group] for group in batches([lengths[i] for i in idx], batch_seconds=batch_seconds)]
            for idx in own if idx]


@contextlib.contextmanager
def reused_ctc_log_softmax(model):
    """Within the block, ``model.ctc.log_softmax`` computes once per encoder output tensor.

    funasr's ``SenseVoiceSmall.inference`` calls ``self.ctc.log_softmax(encoder_out)`` once to
    decode and again for every clip's timestamps: the 25055-way output layer, ~15 % of the
    model's time, runs 1 + batch-size times on the same tensor. This returns a copy of the
    first result for the same (unchanged) tensor instead: the same numbers, computed once.
    funasr modifies the timestamp copy in place, hence a copy each time. The remembered
    result is per thread, so forwards may run in several threads inside one block.
    """
    ctc = model.ctc
    compute = ctc.log_softmax
    shadowed = vars(ctc).get("log_softmax")  # an instance attribute already there (a test's patch)
    local = threading.local()

    def log_softmax(hs_pad):
        key = (id(hs_pad), hs_pad._version)
        if getattr(local, "key", None) != key or getattr(local, "input", None) is not hs_pad:
            local.key, local.input, local.output = key, hs_pad, compute(hs_pad)
        return local.output.clone()

    ctc.log_softmax = log_softmax
    try:
        yield
    finally:
        if shadowed is None:
            del ctc.log_softmax  # the class method shows through again
        else:
            ctc.log_softmax = shadowed
        local.__dict__.clear()


QUERY_FRAMES = 4
"""Frames SenseVoice puts before a clip's features: language, event, emotion and text-norm queries."""

_REAL_ROWS = threading.local()
"""This thread's current padded batch: ``((batch, frames), flat indices of the real frames)``."""


@contextlib.contextmanager
def packed_linears(model):
    """Within the block, the model's linear layers compute only the real frames of a padded batch.

    A batch of clips of unlike length is padded to the longest; the linear layers (the encoder's
    projections and feed-forward layers and the CTC output layer: ~85 % of the model's time on a
    CPU) would otherwise compute every padded frame too. Here a linear layer that receives a
    ``(batch, frames, features)`` tensor of the batch :func:`_infer` is running in this thread
    gathers the real frames, runs on them alone and puts zeros in the padded rows.

    The real frames' numbers are those of the padded computation: each row of a matrix product
    is computed alone, and SenseVoice's encoder never lets a padded frame reach a real one (the
    attention gives padded keys zero weight, the FSMN memory multiplies by the mask before its
    convolution), while decoding reads only each clip's real frames. Tested: the CTC
    log-probabilities of the real frames are bit-identical with and without packing.

    Measured on the 68 segments (161 s) of 10 AMI excerpts, full-size model, two one-thread
    workers, 8 s passes: 21.7 s unpacked, 20.2 s packed (the padding was 13 % of the frames).
    """
    import torch
    import torch.nn.functional as F

    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and "forward" not in vars(m)]

    def packed(layer):
        def forward(x):
            real = getattr(_REAL_ROWS, "rows", None)
            if real is None or x.dim() != 3 or tuple(x.shape[:2]) != real[0]:
                return F.linear(x, layer.weight, layer.bias)
            (batch, frames), rows = real
            y = F.linear(x.reshape(batch * frames, x.shape[-1]).index_select(0, rows), layer.weight, layer.bias)
            out = y.new_zeros(batch * frames, y.shape[-1])
            out.index_copy_(0, rows, y)
            return out.view(batch, frames, y.shape[-1])
        return forward

    for layer in layers:
        layer.forward = packed(layer)
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward  # the class method shows through again


def _infer(sv: SenseVoiceModel, feats: list, *, language: str, itn: bool) -> list[dict[str, Any]]:
    """funasr's ``SenseVoiceSmall.inference`` on precomputed features (one padded batch); inside
    :func:`reused_ctc_log_softmax` and :func:`packed_linears`."""
    import torch
    from torch.nn.utils.rnn import pad_sequence

    speech = pad_sequence([f[0][0] for f in feats], batch_first=True, padding_value=0.0)
    lengths = torch.cat([f[1] for f in feats]).to(torch.int32)
    keys = [f"clip{i}" for i in range(len(feats))]
    if len(feats) > 1 and int(lengths.min()) < int(lengths.max()):
        frames = int(lengths.max()) + QUERY_FRAMES
        real = torch.arange(frames)[None, :] < (lengths[:, None] + QUERY_FRAMES)
        _REAL_ROWS.rows = ((len(feats), frames), real.reshape(-1).nonzero().squeeze(1).to(sv.device))
    try:
        with torch.no_grad():
            results, _ = sv.model.inference(
                data_in=speech, data_lengths=lengths, key=keys, tokenizer=sv.tokenizer, frontend=sv.frontend,
                data_type="fbank", device=sv.device, language=language, use_itn=itn, output_timestamp=True,
                ban_emo_unk=sv.ban_emo_unk,
            )
    finally:
        _REAL_ROWS.rows = None
    return results


def transcribe_clips(
    model: SenseVoiceModel,
    clips: Sequence[np.ndarray],
    *,
    language: str = "auto",
    itn: bool = True,
    batch_seconds: float | None = None,
    seed: int | None = 0,
    workers: int = 1,
    progress: Callable[[float, float], None] | None = None,
) -> list[ClipTranscript]:
    """Transcribe 16 kHz mono clips with SenseVoice, exactly as funasr's ``generate`` does.

    Parameters
    ----------
    model : SenseVoiceModel
        From :func:`load_sensevoice`.
    clips : sequence of ndarray
        1-D float32 audio at 16 kHz, each at least 400 samples.
    language : str
        One of :data:`LANGUAGE_OPTIONS` (``"auto"`` lets the model decide).
    itn : bool
        Inverse text normalisation (punctuation, digits): funasr's ``use_itn``.
    batch_seconds : float, optional
        Padded audio per forward pass (clips are grouped longest first); ``0`` runs one clip
        per forward. Default (``None``): :func:`default_batch_seconds`. Results are the same
        either way (tested).
    seed : int or None
        Seed of the frontend's dither noise, reset for every clip (see the module docstring);
        ``None`` draws it from torch's global generator as funasr does.
    workers : int
        Forward passes run at once, each in its own thread (:func:`tasks.models.devices.cpu_workers`). With one
        torch thread each, the kernels and so the results are those of one pass at a time
        (tested); the features and their dither noise are still made one clip after the other.
    progress : callable, optional
        ``progress(seconds_done, seconds_total)`` of audio, after each forward pass.

    Returns
    -------
    list of ClipTranscript
        One per clip, in input order.

    Raises
    ------
    ValueError
        Unknown ``language``; a clip not 1-D or not finite.
    ClipTooShortError
        A clip shorter than 400 samples.
    """
    if language not in LANGUAGE_OPTIONS:
        raise ValueError(f"language must be one of {', '.join(LANGUAGE_OPTIONS)}, not {language!r}")
    audio = check_clips(clips)
    out: list[ClipTranscript | None] = [None] * len(audio)
    total_s, done_s = sum(a.size for a in audio) / SAMPLE_RATE, 0.0
    if progress is not None:
        progress(0.0, total_s)
    with model.lock, reused_ctc_log_softmax(model.model), packed_linears(model.model):
        feats = [clip_features(model, a, seed=seed) for a in audio]  # input order: the noise too
        budget = default_batch_seconds(model.device) if batch_seconds is None else batch_seconds
        plans = plan_passes([a.size for a in audio], batch_seconds=budget, workers=max(1, int(workers)))

        def forward(idx: list[int]) -> tuple[list[int], list[dict[str, Any]]]:
            return idx, _infer(model, [feats[i] for i in idx], language=language, itn=itn)

        def finished(idx: list[int], results: list[dict[str, Any]]) -> None:
            nonlocal done_s
            for i, result in zip(idx, results):
                out[i] = transcript_from_result(result)
            if progress is not None:
                done_s += sum(audio[i].size for i in idx) / SAMPLE_RATE
                progress(done_s, total_s)

        if len(plans) > 1:
            _run_workers(plans, forward, finished)
        else:
            for groups in plans:  # one plan or none
                for idx in groups:
                    finished(*forward(idx))
    return out  # type: ignore[return-value]


def _run_workers(plans: list[list[list[int]]], forward: Callable, finished: Callable) -> None:
    """Run each plan's passes in its own thread; ``finished`` is called in this thread, pass by
    pass as they end. The first error stops the other workers after their current pass and is
    raised here."""
    done: queue.SimpleQueue = queue.SimpleQueue()
    stop = threading.Event()

    def work(groups: list[list[int]]) -> None:
        try:
            for idx in groups:
                if stop.is_set():
                    return
                done.put(forward(idx))
        except BaseException as exc:  # noqa: BLE001 (raised again in the calling thread)
            done.put(exc)

    with ThreadPoolExecutor(max_workers=len(plans), thread_name_prefix="sensevoice") as pool:
        for groups in plans:
            pool.submit(work, groups)
        try:
            for _ in range(sum(len(groups) for groups in plans)):
                item = done.get()
                if isinstance(item, BaseException):
                    raise item
                finished(*item)
        finally:
            stop.set()
