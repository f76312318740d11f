"""CAM++ speaker embeddings behind the interface pyannote's diarization pipeline calls.

pyannote's ``SpeakerDiarization.get_embeddings`` calls ``embedding(waveforms, masks=masks)``
with ``waveforms`` (batch, 1, samples) and ``masks`` (batch, frames) at the segmentation
model's frame rate, and reads ``sample_rate``, ``dimension``, ``metric`` and
``min_num_samples``. :class:`CamPlusPlusEmbedding` provides that with funasr's ``CAMPPlus``
(3D-Speaker's CAM++, 192-d) and the features 3D-Speaker uses: Kaldi fbank, 80 mel bins,
25 ms / 10 ms, no dither, mean-normalised over time.

Masks are honoured exactly: a mask frame is spread over its samples, and only fbank frames
whose whole 25 ms window lies inside the mask are kept (Kaldi fbank is frame-local, so
samples outside the mask cannot influence any kept frame); the mean normalisation and the
network then see the kept frames only. Changing masked-out audio therefore leaves the
embedding unchanged (up to float rounding).

Batching: items are sorted by their number of kept frames and grouped so that the longest
item of a group is at most ``length_tolerance`` times the shortest; shorter items are padded
to the group's length by repeating their own frames (CAM++ pools statistics over time, so
repetition keeps them close; zero padding would not). ``length_tolerance=1.0`` batches only
items of identical length (bit-exact with one-at-a-time processing).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tasks.core.config import DiarizationConfig
from tasks.core.timebase import SAMPLE_RATE
from tasks.models.cache import cached_model
from tasks.models.checkpoints import CheckpointLoadError, load_state
from tasks.models.devices import resolve_device
from tasks.models.hub import find_checkpoint, resolve
from tasks.speakers.vectors import unit

FRAME_LENGTH = 400  # 25 ms at 16 kHz
FRAME_SHIFT = 160  # 10 ms
NUM_MEL_BINS = 80
CHECKPOINT_NAME = "campplus_cn_en_common.pt"



def _campplus_state(path: str | Path, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors for ``model``, read without running code from the file, with
    every weight of ``model`` present at its shape."""
    ckpt = find_checkpoint(path, preferred=CHECKPOINT_NAME, suffixes=(".pt", ".bin"))
    state = load_state(ckpt)
    dst = model.state_dict()
    missing = [k for k in dst if k not in state]
    mismatched = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in dst.items()
                  if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or mismatched:
        what = (f"{len(missing)} missing weights (e.g. {', '.join(missing[:3])})" if missing
                else f"{len(mismatched)} shape mismatches (e.g. {'; '.join(mismatched[:3])})")
        raise CheckpointLoadError(f"{ckpt}: not a CAM++ checkpoint: {what}")
    return {k: state[k] for k in dst}


def _campplus_module() -> torch.nn.Module:
    from funasr.models.campplus.model import CAMPPlus

    return CAMPPlus(feat_dim=NUM_MEL_BINS, embedding_size=192, memory_efficient=False)


def load_campplus(path: str | Path, device: torch.device | str = "cpu") -> torch.nn.Module:
    """funasr's CAMPPlus with the weights in ``path`` (a .pt/.bin/.safetensors file or a
    directory holding one), read without running code from the file.

    Raises
    ------
    UnsafeCheckpointError, CheckpointLoadError
        One line naming the file: it needs arbitrary unpickling, is unreadable, or does not
        fit CAM++ (missing weights, shape mismatches).
    """
    model = _campplus_module()
    model.load_state_dict(_campplus_state(path, model), strict=True)
    model.eval()
    return model.to(device)


def check_campplus(path: str | Path) -> None:
    """Vet a CAM++ checkpoint without loading it (model on the ``meta`` device, file
    memory-mapped); raises what :func:`load_campplus` would."""
    with torch.device("meta"):
        model = _campplus_module()
    _campplus_state(path, model)


def fbank(waveform: torch.Tensor) -> torch.Tensor:
    """Kaldi fbank (80 mel, 25/10 ms, no dither) of a 1-D float waveform in [-1, 1]: (frames, 80).

    Not mean-normalised (the caller normalises over the frames it keeps). Scaling the waveform
    by a constant only shifts log-mel energies, which mean normalisation removes, so the
    [-1, 1] range is used as is (as 3D-Speaker does).
    """
    import torchaudio.compliance.kaldi as kaldi

    return kaldi.fbank(
        waveform.reshape(1, -1).float(),
        num_mel_bins=NUM_MEL_BINS,
        frame_length=FRAME_LENGTH * 1000 / SAMPLE_RATE,
        frame_shift=FRAME_SHIFT * 1000 / SAMPLE_RATE,
        dither=0.0,
        sample_frequency=SAMPLE_RATE,
    )


def mean_normalised(feat: torch.Tensor) -> torch.Tensor:
    """``feat`` (frames, bins) minus its mean over time: the CAM++ input normalisation (3D-Speaker's)."""
    return feat - feat.mean(dim=0, keepdim=True)


def embed_pieces(audio: np.ndarray, pieces: list[tuple[int, int]], *, embedder: "CamPlusPlusEmbedding",
                 min_samples: int) -> np.ndarray:
    """Unit CAM++ embeddings of pieces of ``audio``: the one way a piece of speech becomes a
    speaker vector (voiceprints, channel voices, refinement).

    Parameters
    ----------
    audio : np.ndarray
        Mono 16 kHz samples.
    pieces : list of (int, int)
        Sample ranges ``[start, end)``.
    embedder : CamPlusPlusEmbedding
        Loaded CAM++ (:func:`load_embedding_model`).
    min_samples : int
        Pieces with fewer samples get a NaN row.

    Returns
    -------
    np.ndarray
        ``(len(pieces), D)`` float32, unit rows (:func:`tasks.speakers.vectors.unit`).
    """
    feats: list[torch.Tensor | None] = []
    for a, b in pieces:
        wave = torch.from_numpy(np.ascontiguousarray(audio[a:b], dtype=np.float32))
        feats.append(mean_normalised(fbank(wave)) if wave.shape[0] >= min_samples else None)
    if not feats:
        return np.zeros((0, int(getattr(embedder, "dimension", 192))), dtype=np.float32)
    return unit(embedder.embed_features(feats))


def valid_fbank_frames(mask: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Which fbank frames lie entirely inside ``mask`` (given at any frame rate): bool (frames,)."""
    num_frames = 1 + (num_samples - FRAME_LENGTH) // FRAME_SHIFT if num_samples >= FRAME_LENGTH else 0
    if num_frames <= 0:
        return torch.zeros(0, dtype=torch.bool)
    on = (mask.reshape(1, 1, -1).float() > 0.5).float()
    sample_mask = F.interpolate(on, size=num_samples, mode="nearest").reshape(-1)
    # number of masked-in samples in each fbank window, from a cumulative sum
    csum = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(sample_mask.double(), 0)])
    starts = torch.arange(num_frames) * FRAME_SHIFT
    inside = csum[starts + FRAME_LENGTH] - csum[starts]
    return inside >= FRAME_LENGTH - 0.5


class CamPlusPlusEmbedding:
    """CAM++ embeddings for pyannote's pipeline: ``emb(waveforms, masks=masks) -> (batch, 192)``.

    Items whose kept speech is shorter than ``min_num_samples`` get NaN embeddings (pyannote's
    clustering skips them and assigns them afterwards).
    """

    sample_rate = SAMPLE_RATE
    dimension = 192
    metric = "cosine"

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        device: torch.device | str = "cpu",
        batch_size: int = 32,
        min_num_samples: int = 4000,
        length_tolerance: float = 1.25,
    ) -> None:
        self.model = model
        self.device = torch.device(device)
        self.model.to(self.device)
        self.batch_size = max(1, int(batch_size))
        self.min_num_samples = int(min_num_samples)
        self.length_tolerance = float(length_tolerance)

    @classmethod
    def from_path(cls, path: str | Path, *, device: torch.device | str = "cpu", **kwargs) -> "CamPlusPlusEmbedding":
        return cls(load_campplus(path, device="cpu"), device=device, **kwargs)

    @property
    def min_num_frames(self) -> int:
        return 1 + max(0, self.min_num_samples - FRAME_LENGTH) // FRAME_SHIFT

    def to(self, device: torch.device | str) -> "CamPlusPlusEmbedding":
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    # ------------------------------------------------------------------ features
    def features(self, waveforms: torch.Tensor, masks: torch.Tensor | None = None) -> list[torch.Tensor | None]:
        """Mean-normalised fbank of the masked-in frames of each item (None when too short)."""
        waveforms = torch.as_tensor(waveforms)
        if waveforms.ndim == 2:
            waveforms = waveforms[:, None]
        batch, channels, num_samples = waveforms.shape
        if channels != 1:
            raise ValueError(f"expected mono waveforms (batch, 1, samples), got {tuple(waveforms.shape)}")
        out: list[torch.Tensor | None] = []
        prev_wave: torch.Tensor | None = None
        prev_feat: torch.Tensor | None = None
        for i in range(batch):
            wave = waveforms[i, 0].detach().float().cpu()
            # pyannote repeats one chunk's waveform for each of its local speakers
            if prev_wave is not None and prev_wave.shape == wave.shape and torch.equal(prev_wave, wave):
                feat = prev_feat
            else:
                feat = fbank(wave) if num_samples >= FRAME_LENGTH else torch.zeros(0, NUM_MEL_BINS)
                prev_wave, prev_feat = wave, feat
            if masks is not None:
                keep = valid_fbank_frames(torch.as_tensor(masks[i]).detach().cpu(), num_samples)
                feat = feat[keep[: feat.shape[0]]]
            if feat.shape[0] < self.min_num_frames:
                out.append(None)
                continue
            out.append(mean_normalised(feat))
        return out

    # ------------------------------------------------------------------ batching
    def _groups(self, lengths: list[int]) -> list[list[int]]:
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        groups: list[list[int]] = []
        current: list[int] = []
        for i in order:
            if current and (
                len(current) >= self.batch_size
                or lengths[i] > math.floor(lengths[current[0]] * self.length_tolerance)
            ):
                groups.append(current)
                current = []
            current.append(i)
        if current:
            groups.append(current)
        return groups

    @staticmethod
    def _repeat_to(feat: torch.Tensor, length: int) -> torch.Tensor:
        if feat.shape[0] == length:
            return feat
        reps = -(-length // feat.shape[0])
        return feat.repeat(reps, 1)[:length]

    @torch.inference_mode()
    def embed_features(self, feats: list[torch.Tensor | None]) -> np.ndarray:
        """CAM++ embeddings (n, 192) of feature matrices; NaN rows for None."""
        result = np.full((len(feats), self.dimension), np.nan, dtype=np.float32)
        idx = [i for i, f in enumerate(feats) if f is not None]
        if not idx:
            return result
        lengths = [feats[i].shape[0] for i in idx]  # type: ignore[union-attr]
        for group in self._groups(lengths):
            longest = max(lengths[g] for g in group)
            x = torch.stack([self._repeat_to(feats[idx[g]], longest) for g in group])  # type: ignore[arg-type]
            emb = self.model(x.to(self.device)).float().cpu().numpy()
            for g, e in zip(group, emb):
                result[idx[g]] = e
        return result

    def __call__(self, waveforms: torch.Tensor, masks: torch.Tensor | None = None) -> np.ndarray:
        """Embeddings (batch, 192) of ``waveforms`` (batch, 1, samples) restricted to ``masks``."""
        return self.embed_features(self.features(waveforms, masks))


EMBEDDING_MODEL_ID = DiarizationConfig.model_fields["embedding_model"].default
"""The CAM++ checkpoint emoflow uses unless ``diarization.embedding_model`` names another."""
_EMBEDDING_ALIASES = {"campplus_cn_en_common": EMBEDDING_MODEL_ID}
"""Legacy short names that earlier configs used for the same checkpoint."""


def canonical_embedding_id(ref: str) -> str:
    """``ref`` with legacy short names replaced by the model id they stand for."""
    return _EMBEDDING_ALIASES.get(ref, ref)


def load_embedding_model(ref: str = EMBEDDING_MODEL_ID, device: str = "auto", *,
                         batch_size: int = 32) -> CamPlusPlusEmbedding:
    """The CAM++ embedding adapter (cached per process and device; batch size updated)."""
    dev = torch.device(resolve_device(device, setting="diarization.device"))
    path = resolve(canonical_embedding_id(ref), kind="embedding").path
    emb = cached_model(("embedding", path, str(dev)), lambda: CamPlusPlusEmbedding.from_path(path, device=dev))
    emb.batch_size = batch_size
    return emb
