"""Randomly initialised emotion2vec models for tests and benchmarks.

They are built with funasr's own ``Emotion2vec`` class from the published
emotion2vec_plus_large ``config.yaml`` (shrunk for tests), and saved as a model directory
(``config.yaml`` + ``model.pt`` + ``tokens.txt``) that ``funasr.AutoModel(model=dir)`` loads.

Such a model has random weights: its scores mean nothing. Every directory built here holds a
``EMOFLOW_TEST_MODEL`` marker, and emoflow labels its output as coming from a test model.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml

TEST_MODEL_MARKER = "EMOFLOW_TEST_MODEL"
SHARED_CONFIG = Path(__file__).resolve().parents[3] / "shared" / "models" / "emotion2vec_plus_large"

TOKENS = ["生气/angry", "厌恶/disgusted", "恐惧/fearful", "开心/happy", "中立/neutral", "其他/other",
          "难过/sad", "吃惊/surprised", "<unk>"]

TINY_OVERRIDES: dict[str, Any] = {
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 4,
    "average_top_k_layers": 2,
    "clone_batch": 1,
}
TINY_AUDIO_OVERRIDES: dict[str, Any] = {
    "prenet_depth": 1,
    "model_depth": 2,
    "num_alibi_heads": 4,
    "conv_pos_depth": 2,
    "conv_pos_groups": 4,
    "conv_pos_width": 15,
    "num_extra_tokens": 2,
    "feature_encoder_spec": "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32,2,2)] + [(32,2,2)]",
}


def is_test_model(path: str | Path) -> bool:
    """Whether a model directory was built here with random weights."""
    p = Path(path)
    return (p / TEST_MODEL_MARKER).exists() if p.is_dir() else (p.parent / TEST_MODEL_MARKER).exists()


def published_config(config_dir: str | Path | None = None) -> dict[str, Any]:
    """The published emotion2vec_plus_large config as a dict."""
    src = Path(config_dir) if config_dir else SHARED_CONFIG
    return yaml.safe_load((src / "config.yaml").read_text(encoding="utf-8"))


def build_emotion2vec_dir(
    out_dir: str | Path,
    *,
    size: Literal["tiny", "large"] = "tiny",
    seed: int = 0,
    config_dir: str | Path | None = None,
    tokens: list[str] | None = None,
    logit_scale: float | None = None,
) -> Path:
    """Build a randomly initialised emotion2vec model directory.

    Parameters
    ----------
    out_dir : path-like
        Created if missing; receives ``config.yaml``, ``model.pt``, ``tokens.txt``.
    size : {"tiny", "large"}
        ``"large"`` keeps the published dimensions (D=1024, ~160 M parameters) for benchmarks;
        ``"tiny"`` shrinks them (D=32) for fast tests.
    seed : int
        Seed of the random initialisation (same seed, same weights).
    config_dir : path-like, optional
        Where the published ``config.yaml`` lives (default ``../shared/models/emotion2vec_plus_large``).
    tokens : list of str, optional
        Label tokens (default: the 9 emotion2vec+ tokens).
    logit_scale : float, optional
        Multiplies the classifier's weights. A freshly initialised classifier gives nearly
        uniform scores (top score ~0.15); the tiny model defaults to 10 so that its (still
        meaningless) scores spread over ~0.35–0.8 and exercise both sides of a screen threshold.
    """
    import torch
    from funasr.models.emotion2vec.model import Emotion2vec

    cfg = copy.deepcopy(published_config(config_dir))
    if size == "tiny":
        cfg["model_conf"].update(TINY_OVERRIDES)
        cfg["model_conf"]["modalities"]["audio"].update(TINY_AUDIO_OVERRIDES)
        cfg["model_conf"]["modalities"]["audio"]["decoder"]["decoder_dim"] = 16
        cfg["model_conf"]["modalities"]["audio"]["decoder"]["decoder_groups"] = 4
        cfg["model_conf"]["modalities"]["audio"]["decoder"]["decoder_layers"] = 1
    toks = list(tokens or TOKENS)
    torch.manual_seed(seed)
    model = Emotion2vec(model_conf=cfg["model_conf"], vocab_size=len(toks))
    scale = logit_scale if logit_scale is not None else (10.0 if size == "tiny" else 1.0)
    if scale != 1.0 and model.proj is not None:
        with torch.no_grad():
            model.proj.weight.mul_(scale)
            model.proj.bias.mul_(scale)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")
    (out / "tokens.txt").write_text("\n".join(toks) + "\n", encoding="utf-8")
    torch.save({"model": model.state_dict()}, out / "model.pt")
    (out / TEST_MODEL_MARKER).write_text(
        f"Randomly initialised emotion2vec ({size}, seed {seed}) built by emoflow for tests and "
        "benchmarks. Its scores are meaningless.\n",
        encoding="utf-8",
    )
    return out
