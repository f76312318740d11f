"""Exact padded-batch forward of funasr's emotion2vec, built from funasr's own modules.

funasr's ``Emotion2vec.extract_features(source, padding_mask=...)`` is not exact on a padded
batch (emotion2vec issue #37). Padding leaks in four places, each fixed here without editing
funasr:

1. **Waveform normalisation** (``F.layer_norm(source, source.shape)`` per clip): done on each
   clip before padding (in :mod:`tasks.emotion.model`).
2. **Convolutional positional encoder** (``relative_positional_encoder``, 5 grouped convs with
   zero "same" padding): in a single clip the conv sees zeros beyond the last frame; in a batch
   it would see the padded frames' features. We zero the padded frames before *every* conv
   layer, which reproduces the single-clip zero padding exactly.
3. **Attention**: padded key positions get ``-inf`` in the float attention mask (added to the
   ALiBi bias), so valid queries attend to exactly the keys they see when run alone.
4. **Pooling**: the utterance embedding is the mean over each clip's own frames only.

The conv feature extractor needs no fix: it has no padding, its layer norms are per frame,
and frame ``t`` reads samples ``[320 t, 320 t + 400)``, so a clip's own frames never read
another clip's (or the padding's) samples.

ALiBi: funasr caches ``heads * batch`` copies of the bias in a dict that only grows. We keep one
``(H, T, T)`` bias (already multiplied by the learned per-head scale and zero-padded for the
extra tokens) for the largest ``T`` seen; inputs are capped at ``max_s`` seconds, so it is
bounded (16 MB for the large model at 10 s). The bias depends on ``|i - j|`` only, so its top
left corner is the bias of any shorter clip.

Attention itself runs through :func:`torch.nn.functional.scaled_dot_product_attention` with the
bias as a float mask (:class:`SdpaAltAttention` replaces funasr's ``AltAttention`` modules in
place, keeping their weights).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_output_frames(n_samples: torch.Tensor | int, layers: list[tuple[int, int, int]]) -> torch.Tensor:
    """Frames the conv feature extractor yields for ``n_samples`` (same formula as funasr)."""
    n = torch.as_tensor(n_samples, dtype=torch.long)
    for _, k, stride in layers:
        n = torch.div(n - k, stride, rounding_mode="floor") + 1
    return n


class SdpaAltAttention(nn.Module):
    """Drop-in for funasr's ``AltAttention`` (inference): same weights, fused SDPA kernel.

    ``alibi_bias`` is used as an additive float mask over all heads (funasr adds it to the
    first ``alibi_bias.size(1)`` heads, which is all of them for emotion2vec); a boolean
    ``padding_mask`` (True = padded key) is folded into it as ``-inf``.
    """

    def __init__(self, orig: nn.Module):
        super().__init__()
        if getattr(orig, "cosine_attention", False):
            raise ValueError("cosine attention is not supported by the fast path")
        self.num_heads = orig.num_heads
        self.scale = orig.scale
        self.qkv = orig.qkv
        self.proj = orig.proj

    def forward(self, x, padding_mask=None, alibi_bias=None):  # noqa: D102 - same as funasr
        B, N, C = x.shape
        H = self.num_heads
        qkv = self.qkv(x).reshape(B, N, 3, H, C // H).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        mask = None
        if alibi_bias is not None:
            if alibi_bias.size(1) != H:
                raise ValueError("ALiBi bias must cover every head")
            mask = alibi_bias.to(q.dtype)
        if padding_mask is not None and padding_mask.any():
            pad = torch.zeros(padding_mask.shape, dtype=q.dtype, device=q.device)
            pad = pad.masked_fill(padding_mask.bool(), float("-inf"))[:, None, None, :]
            mask = pad if mask is None else mask + pad
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class FastConvFeatureExtractor(nn.Module):
    """funasr's ``ConvFeatureExtractionModel`` (``layer_norm`` mode) computed time-major.

    funasr runs each layer as ``Conv1d`` on ``(B, C, T)`` then transposes to ``(B, T, C)`` for
    the layer norm and back (two full copies of the largest activations per layer). Here the
    activations stay ``(B, T, C)``: each conv is one matrix product of the (contiguous)
    ``k * C_in`` window of every output frame with the conv weight reshaped to
    ``(k * C_in, C_out)``, followed by the same layer norm and GELU, with funasr's weights.
    Same maths, different summation order (float32 rounding only). Returns ``(B, T, C)``.
    """

    def __init__(self, orig: nn.Module):
        super().__init__()
        self.specs: list[tuple[int, int]] = []
        self.weights: list[torch.Tensor] = []
        self.norms: list[nn.Module] = []
        for blk in orig.conv_layers:
            conv, norm_seq = blk[0], blk[2]
            if not isinstance(conv, nn.Conv1d) or not isinstance(norm_seq, nn.Sequential):
                raise ValueError("only layer_norm-mode feature extractors are supported")
            if conv.bias is not None or conv.padding != (0,) or conv.dilation != (1,) or conv.groups != 1:
                raise ValueError("unsupported conv in the feature extractor")
            k, s = conv.kernel_size[0], conv.stride[0]
            self.specs.append((k, s))
            w = conv.weight.detach()  # (C_out, C_in, k)
            self.weights.append(w.permute(2, 1, 0).reshape(k * w.shape[1], w.shape[0]).contiguous())
            self.norms.append(norm_seq[1])

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        x = source.unsqueeze(-1)  # (B, S, 1)
        for (k, s), w, ln in zip(self.specs, self.weights, self.norms):
            B, T, C = x.shape
            n = (T - k) // s + 1
            win = x.as_strided((B, n, k * C), (T * C, s * C, 1))
            x = torch.matmul(win, w)  # (B, n, C_out)
            x = F.gelu(F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps))
        return x


def use_sdpa_attention(model: nn.Module) -> int:
    """Replace every funasr ``AltAttention`` in ``model`` by :class:`SdpaAltAttention`."""
    from funasr.models.emotion2vec.modules import AltAttention

    n = 0
    for mod in list(model.modules()):
        for name, child in list(mod.named_children()):
            if isinstance(child, AltAttention) and not child.cosine_attention:
                setattr(mod, name, SdpaAltAttention(child))
                n += 1
    return n


class PaddedEncoder:
    """Runs emotion2vec's encoder on a padded batch, exactly as funasr runs each clip alone.

    Parameters
    ----------
    model : funasr ``Emotion2vec`` in eval mode.
    max_frames : int
        Longest clip (in frames) that may be encoded; bounds the ALiBi cache.
    """

    def __init__(self, model: nn.Module, *, max_frames: int, fast_conv: bool = True):
        self.model = model
        self.enc = model.modality_encoders["AUDIO"]
        cfg = self.enc.modality_cfg
        self.layers = list(self.enc.feature_enc_layers)
        self.num_extra = int(cfg.num_extra_tokens)
        self.heads = int(cfg.num_alibi_heads)
        self.prenet_depth = int(cfg.prenet_depth)
        self.max_frames = int(max_frames)
        if self.enc.get_alibi_bias is None or cfg.learned_alibi:
            raise ValueError("only emotion2vec's fixed ALiBi audio encoder is supported")
        if cfg.extractor_mode != "layer_norm":  # "default" mode group-norms over time: leaks
            raise ValueError("only emotion2vec's layer_norm feature extractor is supported")
        if self.enc.fixed_positional_encoder is not None:
            raise ValueError("fixed positional encoders are not supported")
        self._bias: torch.Tensor | None = None  # (L, H, T+E, T+E): one per distinct scale
        model.alibi_biases.clear()  # funasr's unbounded cache: unused by this path
        self.fast_conv: FastConvFeatureExtractor | None = None
        pf = list(self.enc.project_features)
        if fast_conv and type(pf[0]).__name__ == "TransposeLast" and self.enc.local_grad_mult > 0:
            self.fast_conv = FastConvFeatureExtractor(self.enc.local_encoder)
            self._project_tail = nn.Sequential(*pf[1:])

    # -- ALiBi -------------------------------------------------------------------------
    def _alibi(self, T: int, device: torch.device) -> list[torch.Tensor]:
        """Scaled, extra-token-padded bias ``(1, H, E+T, E+T)`` per layer (prenet + main)."""
        from funasr.models.emotion2vec.base import get_alibi

        if T > self.max_frames:
            raise ValueError(f"{T} frames exceed the limit of {self.max_frames}")
        E = self.num_extra
        if self._bias is None or self._bias.size(-1) < E + T or self._bias.device != device:
            size = max(T, self.max_frames)  # allocate once, for the longest allowed clip
            base = get_alibi(size, self.heads).to(device=device, dtype=torch.float32)  # (H, T, T)
            scale = self.enc.alibi_scale.detach().clamp_min(0).to(device=device, dtype=torch.float32)
            # scale: (layers, 1, H, 1, 1) -> (layers, H, 1, 1)
            scale = scale.reshape(scale.size(0), -1, 1, 1)
            scaled = base.unsqueeze(0) * scale  # (layers, H, T, T)
            self._bias = F.pad(scaled, (E, 0, E, 0))
        L = E + T
        n_layers = len(self.enc.context_encoder.blocks) + len(self.model.blocks)
        per = [self._bias[i, :, :L, :L].unsqueeze(0) for i in range(self._bias.size(0))]
        return per * n_layers if len(per) == 1 else per

    # -- forward -----------------------------------------------------------------------
    def _positional(self, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """funasr's conv positional encoder with padded frames zeroed before each conv."""
        pe = self.enc.relative_positional_encoder
        mods = list(pe)
        if isinstance(mods[0], nn.LayerNorm):  # conv_pos_pre_ln: per-frame, no leak
            x = mods[0](x)
            mods = list(mods[1])
        if valid is None:
            return nn.Sequential(*mods)(x)
        m = valid[:, None, :].to(x.dtype)  # (B, 1, T)
        h = mods[0](x)  # TransposeLast -> (B, D, T)
        for blk in mods[1:-1]:
            h = blk(h * m)
        return mods[-1](h)

    def __call__(self, source: torch.Tensor, n_samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a zero-padded batch ``(B, S)`` of per-clip-normalised waveforms.

        Returns
        -------
        features : (B, T, D) frame features after the final norm, extra tokens removed;
            rows ``t >= frames[b]`` are padding and must be ignored.
        frames : (B,) long, each clip's own frame count.
        """
        enc, model = self.enc, self.model
        if self.fast_conv is not None:  # conv extractor + LayerNorm + Linear, per frame
            x = self._project_tail(self.fast_conv(source))
        else:
            x = enc.local_features(source)
        B, T, _ = x.shape
        frames = conv_output_frames(n_samples.cpu(), self.layers).to(x.device)
        padded = bool((frames < T).any())
        valid = (torch.arange(T, device=x.device)[None, :] < frames[:, None]) if padded else None
        x = x + self._positional(x, valid)
        biases = self._alibi(T, x.device)
        if enc.extra_tokens is not None:
            x = torch.cat([enc.extra_tokens.expand(B, -1, -1), x], dim=1)
        if padded:
            key_pad = F.pad(~valid, (self.num_extra, 0), value=False)
            pad = torch.zeros(key_pad.shape, dtype=x.dtype, device=x.device)
            pad = pad.masked_fill(key_pad, float("-inf"))[:, None, None, :]
            masked: dict[int, torch.Tensor] = {}  # one (B, H, L, L) mask per distinct bias
            biases = [masked.setdefault(id(b), b + pad) for b in biases]
        ce = enc.context_encoder
        if ce.norm is not None and not ce.layer_norm_first:
            x = ce.norm(x)
        i = 0
        for blk in ce.blocks:
            x, _ = blk(x, None, biases[i])
            i += 1
        if ce.norm is not None and ce.layer_norm_first:
            x = ce.norm(x)
        for blk in model.blocks:
            x, _ = blk(x, padding_mask=None, alibi_bias=biases[i])
            i += 1
        if model.norm is not None:
            x = model.norm(x)
        return x[:, self.num_extra:], frames
