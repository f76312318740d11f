"""The emotion engine: emotion2vec+ (through funasr's own model code), one pass, three results.

For every segment the encoder runs **once** and yields

* utterance scores: ``softmax(proj(mean_t x_t))``, exactly funasr's ``granularity="utterance"``
  scores (``unuse*`` tokens get ``-inf`` logits, i.e. probability 0);
* frame logits: the same classifier on every frame feature ``x_t`` (50 frames/s);
* the utterance embedding: ``mean_t x_t`` (D = 1024 for the large model).

Segments are processed in length-sorted padded batches (``batch_seconds`` of padded audio per
forward) with results equal to running each alone; see :mod:`tasks.emotion.encoder` for where
padding leaks in funasr and how each leak is closed.

Speed (``fast_path``, default on): attention through ``scaled_dot_product_attention`` and a
time-major conv feature extractor (same weights and maths, fewer copies); on CPU one clip per
forward is the default because padded batches measured slower there (``cpu_batching`` opts
in). Weights are memory-mapped from the checkpoint (do not overwrite ``model.pt`` in place
while a process uses it), read with safetensors (``model.safetensors``, preferred) or torch's
weights-only unpickler, so a model file cannot run code (:mod:`tasks.models.checkpoints`). ``benchmarks/emotion_speed.py`` measures it against funasr.

Frame post-processing (:func:`smooth_logits`, :func:`resample_logits`) works on **logits**,
before the softmax: averaging logits is the same operation the model itself uses to pool
frames into the utterance (the utterance logits are the mean of the frame logits).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from tasks.models.checkpoints import load_state
from tasks.core.timebase import SAMPLE_RATE, compute_num_samples
from tasks.core.config import EmotionConfig
from tasks.core.errors import first_line
from tasks.models.hub import ModelUnavailableError, ResolvedModel, find_checkpoint
from tasks.models.cache import cached_model
from tasks.models.devices import resolve_device
from tasks.core.records import EMOTIONS, Segment, top_emotion

log = logging.getLogger(__name__)

FRAME_RATE = 50  # emotion2vec frames per second (hop 320 samples)
MIN_SAMPLES = 400  # one analysis window: shorter clips yield no frame
DEFAULT_MAX_S = 10.0  # = segmentation.max_s default


class SegmentTooShortError(ValueError):
    """A clip is shorter than one emotion2vec window (400 samples, 25 ms)."""


class SegmentTooLongError(ValueError):
    """A clip is longer than the engine's ``max_s`` (segments must be split first)."""


class CheckpointError(ModelUnavailableError):
    """The checkpoint does not fit the model (missing or mismatched keys)."""


class ModelFilesError(ModelUnavailableError):
    """A model directory's ``config.yaml`` or ``tokens.txt`` is missing or unusable."""


# ---------------------------------------------------------------------------------------
# Results and frame post-processing
# ---------------------------------------------------------------------------------------


def _softmax_rows(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    m = np.max(z, axis=-1, keepdims=True)
    e = np.exp(z - m)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def _hop_frames(seconds: float, frame_rate: float, what: str) -> int:
    k = seconds * frame_rate
    n = int(round(k))
    if n < 1 or abs(k - n) > 1e-6:
        raise ValueError(f"{what}={seconds} must be a positive multiple of 1/{frame_rate} s")
    return n


def smooth_logits(logits: np.ndarray, *, smooth_s: float, frame_rate: float = FRAME_RATE) -> np.ndarray:
    """Centred moving average of frame logits over a window of ``smooth_s`` seconds.

    Parameters
    ----------
    logits : ndarray, shape (T, C)
        Frame logits; columns that are ``-inf`` everywhere (unused labels) stay ``-inf``.
    smooth_s : float
        Window length in seconds; ``w = round(smooth_s * frame_rate)`` frames, made odd (so the
        window is centred). ``w <= 1`` returns the input unchanged.
    frame_rate : float
        Frames per second of ``logits`` (50 for emotion2vec).

    Returns
    -------
    ndarray, shape (T, C), float32
        Each frame is the mean of the frames within ``w // 2`` of it; near the ends the window
        is cut to the frames that exist (no zero padding), so a constant input is unchanged.
    """
    x = np.asarray(logits, dtype=np.float64)
    if smooth_s < 0:
        raise ValueError("smooth_s must be >= 0")
    w = int(round(smooth_s * frame_rate))
    if w <= 1 or x.shape[0] <= 1:
        return x.astype(np.float32)
    half = w // 2
    finite = np.isfinite(x).all(axis=0)
    out = np.array(x)
    xf = x[:, finite]
    c = np.concatenate([np.zeros((1, xf.shape[1])), np.cumsum(xf, axis=0)])
    T = x.shape[0]
    lo = np.clip(np.arange(T) - half, 0, T)
    hi = np.clip(np.arange(T) + half + 1, 0, T)
    out[:, finite] = (c[hi] - c[lo]) / (hi - lo)[:, None]
    return out.astype(np.float32)


def resample_logits(logits: np.ndarray, *, hop_s: float, frame_rate: float = FRAME_RATE) -> np.ndarray:
    """Average frame logits over consecutive blocks of ``hop_s`` seconds.

    Parameters
    ----------
    logits : ndarray, shape (T, C)
        Frame logits at ``frame_rate``.
    hop_s : float
        Output hop; must be a whole number ``k`` of input frames (0.02 s -> k=1, unchanged;
        0.04 s -> k=2 ...).
    frame_rate : float
        Frames per second of ``logits``.

    Returns
    -------
    ndarray, shape (ceil(T / k), C), float32
        Row ``i`` is the mean of input frames ``[i k, (i + 1) k)``; the last block may be
        shorter and is the mean of the frames it has. ``-inf`` columns stay ``-inf``.
    """
    x = np.asarray(logits, dtype=np.float64)
    k = _hop_frames(hop_s, frame_rate, "hop_s")
    if k == 1:
        return x.astype(np.float32)
    T = x.shape[0]
    n = -(-T // k)
    idx = np.arange(T) // k
    sums = np.zeros((n, x.shape[1]))
    np.add.at(sums, idx, x)
    counts = np.bincount(idx, minlength=n)[:, None]
    return (sums / counts).astype(np.float32)


@dataclass(frozen=True, eq=False)
class SegmentEmotion:
    """One segment's emotion2vec result (numpy float32, label order :data:`EMOTIONS`)."""

    scores: np.ndarray  # (9,) utterance probabilities, sum 1
    frame_logits: np.ndarray  # (T, 9) per-frame logits (-inf for labels the model lacks)
    embedding: np.ndarray  # (D,) mean frame feature
    features: np.ndarray | None = field(default=None, repr=False)  # (T, D), only on request

    @property
    def label(self) -> str:
        return top_emotion(self.scores)[0]

    @property
    def confidence(self) -> float:
        return top_emotion(self.scores)[1]

    def frame_scores(self, *, smooth_s: float = 0.0, hop_s: float = 0.02) -> np.ndarray:
        """Frame probabilities ``(T', 9)``: see :func:`frame_scores_from_logits`."""
        return frame_scores_from_logits(self.frame_logits, smooth_s=smooth_s, hop_s=hop_s)


def frame_scores_from_logits(logits: np.ndarray, *, smooth_s: float = 0.0, hop_s: float = 0.02) -> np.ndarray:
    """Frame probabilities ``(T', 9)`` from frame logits ``(T, 9)``: smooth, then resample the
    logits, then softmax each frame."""
    z = smooth_logits(logits, smooth_s=smooth_s)
    z = resample_logits(z, hop_s=hop_s)
    return _softmax_rows(z)


# ---------------------------------------------------------------------------------------
# Labels and checkpoint loading
# ---------------------------------------------------------------------------------------


def label_columns(tokens: list[str]) -> list[int | None]:
    """Map model tokens to :data:`EMOTIONS` indices (``None`` for ``unuse*`` tokens).

    ``"生气/angry"`` -> angry, ``"<unk>"`` -> unknown, ``"unuse_0"`` -> None (funasr gives
    those tokens ``-inf`` logits). Any other token is an error.
    """
    cols: list[int | None] = []
    for tok in tokens:
        t = tok.strip()
        if t.startswith("unuse"):
            cols.append(None)
            continue
        name = "unknown" if t.lower() in ("<unk>", "unk", "unknown") else t.split("/")[-1].strip().lower()
        if name not in EMOTIONS:
            raise ValueError(f"tokens.txt: label {tok!r} is not one of {', '.join(EMOTIONS)}")
        if EMOTIONS.index(name) in cols:
            raise ValueError(f"tokens.txt: label {name!r} appears twice")
        cols.append(EMOTIONS.index(name))
    return cols


def read_tokens(model_dir: Path) -> list[str]:
    """The label tokens of a model directory (``tokens.txt``), checked by :func:`label_columns`.

    Raises
    ------
    ModelFilesError
        One line naming ``tokens.txt``: missing, unreadable or holding an unknown label.
    """
    p = model_dir / "tokens.txt"
    try:
        tokens = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
        label_columns(tokens)
    except FileNotFoundError:
        raise ModelFilesError(f"{p}: missing (the model's label list)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFilesError(f"{p}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    except ValueError as exc:  # label_columns: "tokens.txt: label ..."
        raise ModelFilesError(f"{p}: {str(exc).removeprefix('tokens.txt: ')}") from None
    return tokens


def read_model_config(model_dir: Path) -> dict:
    """``config.yaml`` of an emotion2vec directory (a mapping with ``model_conf``).

    Raises
    ------
    ModelFilesError
        One line naming ``config.yaml``: missing, unreadable, not YAML or not emotion2vec's.
    """
    import yaml

    p = model_dir / "config.yaml"
    try:
        cfg = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFilesError(f"{p}: missing (the model's configuration)") from None
    except OSError as exc:
        raise ModelFilesError(f"{p}: cannot read ({exc.strerror or exc})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise ModelFilesError(f"{p}: not valid YAML ({reason})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model_conf"), dict):
        raise ModelFilesError(f"{p}: no model_conf mapping (not an emotion2vec config)")
    name = cfg.get("model", "Emotion2vec")
    if name != "Emotion2vec":
        raise ModelFilesError(f"{p}: model class {name!r} is not emotion2vec")
    return cfg


def build_meta_model(model_dir: Path) -> tuple[object, dict, list[str]]:
    """funasr's emotion2vec for ``model_dir`` on the ``meta`` device (no weights, no memory).

    Returns
    -------
    model, config, tokens
        The model (pre-training decoder removed: unused at inference, so checkpoints saved
        without it load), ``config.yaml`` as a dict and the label tokens.

    Raises
    ------
    ModelFilesError
        ``config.yaml`` or ``tokens.txt`` is missing or unusable (one line naming the file).
    """
    import torch
    from funasr.register import tables

    import funasr.models.emotion2vec.model  # noqa: F401  (registers Emotion2vec)

    cfg = read_model_config(model_dir)
    tokens = read_tokens(model_dir)
    cls = tables.model_classes["Emotion2vec"]
    try:
        with torch.device("meta"):  # no random init: every weight comes from the checkpoint
            model = cls(model_conf=cfg["model_conf"], vocab_size=len(tokens))
    except Exception as exc:  # a garbled model_conf fails inside funasr in many ways
        raise ModelFilesError(f"{model_dir / 'config.yaml'}: model_conf does not build emotion2vec "
                              f"({type(exc).__name__}: {first_line(exc, limit=160)})") from None
    if model.proj is None:
        raise ModelFilesError(f"{model_dir / 'config.yaml'}: the model has no classifier head")
    model.modality_encoders["AUDIO"].decoder = None
    return model, cfg, tokens


def fit_state(model, state: dict, ckpt_path: Path, scope_map: list[str] | None = None) -> dict:
    """Map checkpoint tensors onto ``model``'s keys, failing on missing keys or shape mismatches.

    Key mapping follows funasr's ``load_pretrained_model`` (``scope_map`` pairs plus
    ``module.``), but where funasr prints a warning for a missing key or skips a shape
    mismatch, this raises :class:`CheckpointError`. Unused checkpoint keys are allowed.

    Returns
    -------
    dict
        ``model.state_dict()`` keys → checkpoint tensors (in the model's dtypes).
    """
    pairs = list(scope_map or []) + ["module.", "None"]
    dst = model.state_dict()
    out, missing, mismatched = {}, [], []
    for k, v in dst.items():
        k_src = k
        for i in range(0, len(pairs) - 1, 2):
            src_p = "" if pairs[i].lower() == "none" else pairs[i]
            dst_p = "" if pairs[i + 1].lower() == "none" else pairs[i + 1]
            if dst_p == "" and (src_p + k) in state:
                k_src = src_p + k
            elif k.startswith(dst_p) and k.replace(dst_p, src_p, 1) in state:
                k_src = k.replace(dst_p, src_p, 1)
        if k_src in state and k.endswith("alibi_scale") and state[k_src].dim() == 4 and v.dim() == 5:
            state[k_src] = state[k_src].unsqueeze(0)  # funasr's upgrade_state_dict_named
        if k_src not in state:
            missing.append(k)
        elif tuple(state[k_src].shape) != tuple(v.shape):
            mismatched.append(f"{k} {tuple(state[k_src].shape)} != {tuple(v.shape)}")
        else:
            out[k] = state[k_src].to(v.dtype)
    if missing or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches (e.g. {'; '.join(mismatched[:3])})")
        raise CheckpointError(f"{ckpt_path}: checkpoint does not fit the model: " + "; ".join(parts))
    return out


def load_state_strict(model, ckpt_path: Path, scope_map: list[str] | None = None) -> None:
    """Load a funasr checkpoint into ``model``, failing on missing or mismatched keys.

    The file is read without running code from it (:func:`tasks.models.checkpoints.load_state`:
    safetensors or ``torch.load(weights_only=True)``, memory-mapped). A model built on the
    ``meta`` device gets the checkpoint tensors assigned (no random initialisation, no second
    copy of the weights). Keys are matched by :func:`fit_state`.

    Raises
    ------
    UnsafeCheckpointError, CheckpointLoadError
        The file needs arbitrary unpickling, or is corrupt / not a checkpoint.
    CheckpointError
        The checkpoint does not fit the model.
    """
    out = fit_state(model, load_state(ckpt_path), ckpt_path, scope_map)
    meta = any(p.is_meta for p in model.parameters())
    model.load_state_dict(out, strict=True, assign=meta)


def check_emotion_model(path: str | Path) -> None:
    """Vet an emotion2vec model without loading it: ``config.yaml`` and ``tokens.txt`` usable,
    the checkpoint safe to read and fitting the model (keys and shapes).

    Cheap: the files are read first (a bad file fails before funasr is imported), then the
    model is built on the ``meta`` device against the memory-mapped checkpoint.

    Raises
    ------
    ModelUnavailableError
        One line naming the file at fault (:class:`ModelFilesError`, :class:`CheckpointError`,
        :class:`~tasks.models.checkpoints.UnsafeCheckpointError`, :class:`~tasks.models.checkpoints.CheckpointLoadError`).
    """
    p = Path(path)
    model_dir = p if p.is_dir() else p.parent
    read_model_config(model_dir)
    read_tokens(model_dir)
    ckpt = find_checkpoint(p, preferred="model.pt")
    state = load_state(ckpt)
    model, cfg, _ = build_meta_model(model_dir)
    fit_state(model, state, ckpt, cfg.get("scope_map"))


# ---------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------


class EmotionModel:
    """A loaded emotion2vec model; :meth:`analyse` gives one :class:`SegmentEmotion` per clip."""

    def __init__(self, model, *, model_id: str, path: str, sha256: str, tokens: list[str], device: str,
                 is_test_model: bool, batch_seconds: float, max_s: float = DEFAULT_MAX_S,
                 fast_conv: bool = True, cpu_batching: bool = False):
        import torch

        from tasks.emotion.encoder import PaddedEncoder

        self.torch_model = model
        self.model_id, self.path, self.sha256, self.device = model_id, path, sha256, device
        self.is_test_model = is_test_model
        self.tokens = tuple(tokens)
        self.columns = label_columns(tokens)
        self.labels = EMOTIONS
        # On CPU one clip per forward measured faster than padded batches (benchmarks/
        # emotion_speed.py): batch there only when asked (cpu_batching or an explicit argument).
        self.batch_seconds = float(batch_seconds) if (device != "cpu" or cpu_batching) else 0.0
        self.max_s = float(max_s)
        self.max_samples = compute_num_samples(self.max_s)
        self.normalize = bool(model.cfg.get("normalize", False))
        self.embed_dim = int(model.cfg.get("embed_dim"))
        self._encoder = PaddedEncoder(model, max_frames=self.max_samples // 320 + 1, fast_conv=fast_conv)
        self._lock = threading.Lock()  # one forward at a time per model (thread runners)
        # classifier weights mapped to EMOTIONS columns; missing labels -> -inf logits
        W, b = model.proj.weight.detach(), model.proj.bias.detach()
        Wm = torch.zeros(len(EMOTIONS), W.shape[1], dtype=W.dtype, device=W.device)
        bm = torch.full((len(EMOTIONS),), float("-inf"), dtype=b.dtype, device=b.device)
        for j, col in enumerate(self.columns):
            if col is not None:
                Wm[col], bm[col] = W[j], b[j]
        self._W, self._b = Wm, bm
        self.forward_calls = 0

    # -- helpers -------------------------------------------------------------------------
    def _check(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for i, c in enumerate(clips):
            a = np.asarray(c, dtype=np.float32)
            if a.ndim != 1:
                raise ValueError(f"clip {i}: expected 1-D mono audio, got shape {a.shape}")
            if a.size < MIN_SAMPLES:
                raise SegmentTooShortError(
                    f"clip {i}: {a.size} samples ({a.size / SAMPLE_RATE * 1000:.1f} ms) is shorter than "
                    f"emotion2vec's {MIN_SAMPLES}-sample (25 ms) window")
            if a.size > self.max_samples:
                raise SegmentTooLongError(
                    f"clip {i}: {a.size / SAMPLE_RATE:.2f} s is longer than max_s={self.max_s:g} s; "
                    "split it first (segmentation.max_s)")
            if not np.isfinite(a).all():
                raise ValueError(f"clip {i}: audio holds NaN or inf")
            out.append(a)
        return out

    def buckets(self, lengths: list[int], batch_seconds: float) -> list[list[int]]:
        """Length-sorted batches whose padded size stays within ``batch_seconds``."""
        budget = batch_seconds * SAMPLE_RATE
        order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
        out: list[list[int]] = []
        cur: list[int] = []
        for i in order:  # longest first: the first item of a batch sets its padded length
            if cur and (len(cur) + 1) * lengths[cur[0]] > budget:
                out.append(cur)
                cur = []
            cur.append(i)
        if cur:
            out.append(cur)
        return out

    def _forward(self, clips: list[np.ndarray]):
        import torch

        dev = torch.device(self.device)
        S = max(c.size for c in clips)
        src = torch.zeros(len(clips), S, dtype=torch.float32)
        for j, c in enumerate(clips):
            t = torch.from_numpy(c)
            if self.normalize:  # funasr: F.layer_norm(source, source.shape), per clip
                t = torch.nn.functional.layer_norm(t, t.shape)
            src[j, : c.size] = t
        n = torch.tensor([c.size for c in clips], dtype=torch.long)
        self.forward_calls += 1
        return self._encoder(src.to(dev), n)

    # -- public --------------------------------------------------------------------------
    def analyse(self, clips: list[np.ndarray], *, batch_seconds: float | None = None,
                keep_features: bool = False,
                progress: Callable[[float, float], None] | None = None) -> list[SegmentEmotion]:
        """Utterance scores, frame logits and embedding of each clip (16 kHz mono float32).

        Parameters
        ----------
        clips : list of ndarray
            Each 1-D, ``400 <= len <= max_s * 16000`` samples.
        batch_seconds : float, optional
            Padded audio per forward call. Default: the config's ``batch_seconds`` on GPU; on
            CPU 0 (one clip per forward, measured faster) unless ``cpu_batching`` is set. A
            value below the longest clip's duration means one clip per forward.
        keep_features : bool
            Also return each clip's ``(T, D)`` frame features (for tests and diagnostics).
        progress : callable, optional
            Called as ``progress(done, total)`` in seconds of audio: once before the first
            forward pass and after each batch (``done`` reaches ``total``).

        Raises
        ------
        SegmentTooShortError, SegmentTooLongError
            Before any clip reaches the model.
        """
        import torch

        clips = self._check(clips)
        if not clips:
            return []
        bs = self.batch_seconds if batch_seconds is None else float(batch_seconds)
        results: list[SegmentEmotion | None] = [None] * len(clips)
        total_samples, done_samples = sum(c.size for c in clips), 0
        if progress is not None:
            progress(0.0, total_samples / SAMPLE_RATE)
        with self._lock, torch.inference_mode():
            for idx in self.buckets([c.size for c in clips], bs):
                feats, frames = self._forward([clips[i] for i in idx])
                for j, i in enumerate(idx):
                    x = feats[j, : int(frames[j])]  # (T, D) this clip's own frames
                    emb = x.mean(dim=0)
                    utt = torch.softmax(emb @ self._W.T + self._b, dim=-1)
                    fl = x @ self._W.T + self._b
                    results[i] = SegmentEmotion(
                        scores=utt.float().cpu().numpy(),
                        frame_logits=fl.float().cpu().numpy(),
                        embedding=emb.float().cpu().numpy(),
                        features=x.float().cpu().numpy().copy() if keep_features else None,
                    )
                done_samples += sum(clips[i].size for i in idx)
                if progress is not None:
                    progress(done_samples / SAMPLE_RATE, total_samples / SAMPLE_RATE)
        return results  # type: ignore[return-value]


def load_emotion_model(config: EmotionConfig, *, resolved: ResolvedModel | None = None,
                       max_s: float = DEFAULT_MAX_S) -> EmotionModel:
    """Build emotion2vec with funasr's model class and load its checkpoint strictly.

    Parameters
    ----------
    config : EmotionConfig
        ``model`` (hub id or local dir), ``hub``, ``device``, ``batch_seconds``,
        ``threads`` (>0: ``torch.set_num_threads``, process-wide; 0 leaves torch's default),
        ``fast_path`` (SDPA attention + time-major conv extractor), ``cpu_batching``.
    resolved : ResolvedModel, optional
        Already resolved model (skips :func:`tasks.models.hub.resolve`).
    max_s : float
        Longest clip accepted (pass ``segmentation.max_s``); bounds memory and the ALiBi cache.

    Raises
    ------
    ModelUnavailableError
        One line naming the file at fault: see :func:`check_emotion_model`.
    """
    import torch

    from tasks.models.hub import resolve
    from tasks.models.testmodels import is_test_model
    from tasks.emotion.encoder import use_sdpa_attention

    if resolved is None:
        resolved = resolve(config.model, kind="emotion", hub=config.hub)
    path = Path(resolved.path)
    model_dir = path if path.is_dir() else path.parent
    device = resolve_device(config.device, setting="emotion.device")
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    model, cfg, tokens = build_meta_model(model_dir)
    load_state_strict(model, find_checkpoint(path, preferred="model.pt"), cfg.get("scope_map"))
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointError(f"{model_dir}: not loaded from the checkpoint: {', '.join(left[:3])}")
    model.eval().to(device)
    if config.fast_path:
        use_sdpa_attention(model)
    em = EmotionModel(model, model_id=config.model, path=str(path), sha256=resolved.sha256,
                      tokens=tokens, device=device, is_test_model=is_test_model(path),
                      batch_seconds=config.batch_seconds, max_s=max_s, fast_conv=config.fast_path,
                      cpu_batching=config.cpu_batching)
    if em.is_test_model:
        log.warning("emotion model %s is a randomly initialised TEST model: its scores mean nothing", path)
    return em


def get_emotion_model(config: EmotionConfig, *, max_s: float = DEFAULT_MAX_S) -> EmotionModel:
    """The process-wide model for ``config``: loaded once per worker process, then reused.

    Keyed by (resolved path, sha256, device, fast_path); a model loaded for clips up to a longer
    ``max_s`` serves shorter ones too (the UI's 30 s model is the flow's 10 s model).
    """
    from tasks.models.hub import resolve

    resolved = resolve(config.model, kind="emotion", hub=config.hub)
    key = ("emotion", resolved.path, resolved.sha256, resolve_device(config.device, setting="emotion.device"),
           config.fast_path)
    return cached_model(key, lambda: load_emotion_model(config, resolved=resolved, max_s=max_s),
                        usable=lambda em: em.max_s >= float(max_s))


def score_segments(model: EmotionModel, *, audio: np.ndarray | Mapping[str, np.ndarray], segments: list[Segment],
                   progress: Callable[[float, float], None] | None = None) -> list[SegmentEmotion]:
    """One batched pass of ``model`` over ``segments``, each cut by
    :meth:`~tasks.core.records.Segment.cut` from ``audio``: the recording, or a mapping speaker →
    the audio that speaker is heard in (a channel of a split call). Results in the segments' order."""
    def source(seg: Segment) -> np.ndarray:
        return audio[seg.speaker] if isinstance(audio, Mapping) else audio

    return model.analyse([s.cut(source(s)) for s in segments], progress=progress) if segments else []


def analyse_whole(model: EmotionModel, audio: np.ndarray, *, max_clip_s: float) -> SegmentEmotion:
    """One result for a whole recording, exact for any length.

    Up to ``max_clip_s`` it is one forward pass; a longer recording is cut into equal windows
    of whole emotion2vec frames (each <= ``max_clip_s``) whose frame logits are concatenated.
    The classifier is linear on the mean frame feature, so the utterance logits are the mean of
    all frame logits and the embedding the frame-weighted mean of the windows' embeddings.
    """
    n = len(audio)
    windows = max(1, int(np.ceil(n / compute_num_samples(max_clip_s))))
    if windows == 1:
        return model.analyse([np.asarray(audio, np.float32)])[0]
    step = int(np.ceil(n / windows / 320)) * 320  # whole frames (320 samples)
    clips = [np.asarray(audio[i: i + step], np.float32) for i in range(0, n, step)]
    if len(clips) > 1 and len(clips[-1]) < 400:  # below the model's window: join to the previous
        clips[-2] = np.concatenate([clips[-2], clips.pop()])
    parts = model.analyse(clips)
    logits = np.concatenate([np.asarray(p.frame_logits, dtype=np.float32) for p in parts])
    weights = np.array([len(p.frame_logits) for p in parts], dtype=np.float64)
    emb = (np.stack([np.asarray(p.embedding, dtype=np.float64) for p in parts]) * weights[:, None]).sum(0)
    return SegmentEmotion(scores=_softmax_rows(logits.astype(np.float64).mean(0)).astype(np.float32),
                          frame_logits=logits, embedding=(emb / weights.sum()).astype(np.float32))
