"""BEATs (AudioSet) frozen audio encoder for the paper's Table 4 linear probe.

`BEATsModel` re-implements microsoft/unilm `beats/BEATs.py` + `backbone.py` (encoder only, same
module names), so an official checkpoint (`{"cfg": ..., "model": ...}`) loads key for key and
reproduces the original hidden states. Fine-tuned checkpoints' label predictor is dropped.

Two ways to cover a long sequence window (`variant`):
- ``paper``: the EALD code's trick. The 16 kHz waveform is resampled to 320 Hz (x1/50) and fed
  as ONE sequence, but the fbank is still computed as if it were 16 kHz. The model thus sees the
  audio played 50x faster: everything above 160 Hz of the original is gone, so it no longer
  hears speech, only slow loudness/low-frequency structure. Kept to reproduce the paper.
- ``windowed``: 10-s windows at 16 kHz (the length BEATs was trained on) evenly spread over
  the whole window, features averaged over windows. The model hears the real audio (speech).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.signal import resample_poly
from torch import Tensor, nn

from baselines import BaselineInputError
from eald.data.fbank import _EPS, _mel_banks
from eald.data.media import fingerprint_files, read_audio
from eald.device import resolve_device

log = logging.getLogger(__name__)

VERSION = "beats-1"
SAMPLE_RATE = 16000
PAPER_RATE = 320  # the paper's compressed rate: 16 kHz / 50
WINDOW_S = 10.0  # BEATs' AudioSet training clip length
FBANK_MEAN = 15.41663  # BEATs.preprocess defaults
FBANK_STD = 6.55582
_ALPHA = 32  # the original's attention logit rescaling constant (kept for bit-faithfulness)
# Fine-tuned checkpoints carry an AudioSet classifier; the probe uses encoder states instead.
IGNORED_PREFIXES = ("predictor.",)
_TRAINING_ONLY = {"layer_wise_gradient_decay_ratio", "dropout", "attention_dropout",
                  "dropout_input", "activation_dropout", "encoder_layerdrop",
                  "predictor_dropout", "predictor_class"}  # fmt: skip


@dataclasses.dataclass
class BEATsConfig:
    """The original BEATsConfig fields that shape inference (defaults as there, except a real
    patch size); its training-only fields (dropouts, layerdrop, predictor) are accepted, unused."""

    input_patch_size: int = 16
    embed_dim: int = 512
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_norm_first: bool = False
    deep_norm: bool = False
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = False
    num_buckets: int = 320
    max_distance: int = 1280
    gru_rel_pos: bool = False
    finetuned_model: bool = False

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> BEATsConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(cfg) - names - _TRAINING_ONLY):
            warnings.warn(f"BEATs cfg: ignoring unknown fields {unknown}", stacklevel=2)
        return cls(**{k: v for k, v in cfg.items() if k in names})


def paper_config() -> BEATsConfig:
    """BEATs_iter3+ (AS2M) as released: deep-norm post-LN, gated relative position bias."""
    return BEATsConfig(deep_norm=True, relative_position_embedding=True, gru_rel_pos=True,
                       max_distance=800)  # fmt: skip


def tiny_config() -> BEATsConfig:
    """Same architecture switches, toy sizes: for CPU tests."""
    return BEATsConfig(
        embed_dim=32, encoder_layers=2, encoder_embed_dim=48, encoder_ffn_embed_dim=64,
        encoder_attention_heads=4, deep_norm=True, conv_pos=16, conv_pos_groups=4,
        relative_position_embedding=True, num_buckets=32, max_distance=64, gru_rel_pos=True,
    )  # fmt: skip


class WeightNormConv1d(nn.Conv1d):
    """Conv1d with weight norm over dim 2 under the official `weight_g`/`weight_v` names (old
    `nn.utils.weight_norm`; torch's parametrization names are mapped in `_official_keys`),
    followed by the original's SamePad (an even kernel yields one extra step: drop it)."""

    def __init__(self, channels: int, kernel: int, groups: int) -> None:
        super().__init__(channels, channels, kernel, padding=kernel // 2, groups=groups)
        v = self.weight.detach().clone()
        del self.weight  # recomputed as g * v / ||v|| at every call
        self.weight_v = nn.Parameter(v)
        # dim=2: one norm per kernel tap, over (out, in) channels -> g has shape (1, 1, K)
        self.weight_g = nn.Parameter(torch.norm_except_dim(v, 2, 2))

    def forward(self, x: Tensor) -> Tensor:
        # The very kernel torch's weight_norm (old hook and new parametrization) calls.
        w = torch._weight_norm(self.weight_v, self.weight_g, 2)
        x = F.conv1d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return x[:, :, :-1] if self.kernel_size[0] % 2 == 0 else x


def relative_position_bucket(rel: Tensor, num_buckets: int, max_distance: int) -> Tensor:
    """Bidirectional T5-style buckets exactly as the original `_relative_positions_bucket`."""
    half = num_buckets // 2
    buckets = (rel > 0).to(torch.long) * half
    rel = rel.abs()
    max_exact = half // 2
    is_small = rel < max_exact
    # clamp(min=1) only avoids log(0) in lanes that `where` discards anyway
    log_rel = torch.log(rel.clamp(min=1).float() / max_exact) / math.log(max_distance / max_exact)
    large = torch.clamp(max_exact + (log_rel * (half - max_exact)).to(torch.long), max=half - 1)
    return buckets + torch.where(is_small, rel, large)


class MultiheadAttention(nn.Module):
    """Self-attention with (gated) relative position bias, the original's op order included."""

    def __init__(self, cfg: BEATsConfig, has_bias: bool) -> None:
        super().__init__()
        d, h = cfg.encoder_embed_dim, cfg.encoder_attention_heads
        self.num_heads, self.head_dim = h, d // h
        self.scaling = self.head_dim**-0.5
        self.num_buckets, self.max_distance = cfg.num_buckets, cfg.max_distance
        self.k_proj, self.v_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.q_proj, self.out_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.has_bias = has_bias
        if has_bias:
            self.relative_attention_bias = nn.Embedding(cfg.num_buckets, h)
        self.gru_rel_pos = cfg.gru_rel_pos
        if cfg.gru_rel_pos:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, h, 1, 1))

    def forward(self, x: Tensor, pos_bias: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """x: (L, B, D) time-major like fairseq. Returns (out, ungated pos_bias for next layer)."""
        length, bsz, d = x.shape
        h, hd = self.num_heads, self.head_dim
        if self.has_bias and pos_bias is None:  # (B*H, L, L), key minus query position
            pos = torch.arange(length, device=x.device)
            rel = relative_position_bucket(
                pos[None] - pos[:, None], self.num_buckets, self.max_distance
            )
            pos_bias = self.relative_attention_bias(rel).permute(2, 0, 1).repeat(bsz, 1, 1)
        q = self.q_proj(x) * self.scaling * (1 / _ALPHA)  # same two roundings as the original
        k, v = self.k_proj(x), self.v_proj(x)
        q, k, v = (t.contiguous().view(length, bsz * h, hd).transpose(0, 1) for t in (q, k, v))
        # Logits are shrunk by alpha, max-subtracted, then re-expanded: the original's fp16 guard.
        w = torch.bmm(q, k.transpose(1, 2))
        w = (w - w.max(dim=-1, keepdim=True)[0]) * _ALPHA
        if pos_bias is not None:
            bias = pos_bias
            if self.gru_rel_pos:
                query = q.view(bsz, h, length, hd) * _ALPHA / self.scaling
                gates = self.grep_linear(query).view(bsz, h, length, 2, 4).sum(-1)
                gate_a, gate_b = torch.sigmoid(gates).chunk(2, dim=-1)
                gate = gate_a * (gate_b * self.grep_a - 1.0) + 2.0
                bias = gate.view(bsz * h, length, 1) * pos_bias
            w = w + bias.view(w.shape)
        attn = torch.bmm(F.softmax(w, dim=-1).type_as(w), v)
        attn = attn.transpose(0, 1).contiguous().view(length, bsz, d)
        return self.out_proj(attn), pos_bias


class EncoderLayer(nn.Module):
    """TransformerSentenceEncoderLayer (pre- or post-LN, deep-norm residual scaling)."""

    def __init__(self, cfg: BEATsConfig) -> None:
        super().__init__()
        if cfg.activation_fn not in ("gelu", "relu"):
            raise ValueError(f"BEATs activation_fn={cfg.activation_fn!r} is not supported")
        d = cfg.encoder_embed_dim
        self.self_attn = MultiheadAttention(cfg, cfg.relative_position_embedding)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, cfg.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_embed_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.act = F.gelu if cfg.activation_fn == "gelu" else F.relu
        self.layer_norm_first = cfg.layer_norm_first
        self.alpha = math.pow(2 * cfg.encoder_layers, 1 / 4) if cfg.deep_norm else 1.0

    def forward(self, x: Tensor, pos_bias: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if self.layer_norm_first:
            a, pos_bias = self.self_attn(self.self_attn_layer_norm(x), pos_bias)
            x = x + a
            return x + self.fc2(self.act(self.fc1(self.final_layer_norm(x)))), pos_bias
        a, pos_bias = self.self_attn(x, pos_bias)
        x = self.self_attn_layer_norm(x * self.alpha + a)
        x = self.final_layer_norm(x * self.alpha + self.fc2(self.act(self.fc1(x))))
        return x, pos_bias


class TransformerEncoder(nn.Module):
    def __init__(self, cfg: BEATsConfig) -> None:
        super().__init__()
        d = cfg.encoder_embed_dim
        # Sequential keeps the official key names (`pos_conv.0.weight_g`, ...).
        self.pos_conv = nn.Sequential(
            WeightNormConv1d(d, cfg.conv_pos, cfg.conv_pos_groups), nn.GELU()
        )
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        if cfg.relative_position_embedding:
            # The original shares layer 0's bias table (its state dict repeats it per layer).
            table = self.layers[0].self_attn.relative_attention_bias
            for layer in self.layers[1:]:
                layer.self_attn.relative_attention_bias = table
        self.layer_norm_first = cfg.layer_norm_first
        self.layer_norm = nn.LayerNorm(d)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = x.transpose(0, 1)
        pos_bias = None  # computed by layer 0, reused (ungated) by every later layer
        for layer in self.layers:
            x, pos_bias = layer(x, pos_bias)
        x = x.transpose(0, 1)
        return self.layer_norm(x) if self.layer_norm_first else x


class BEATsModel(nn.Module):
    """BEATs encoder in eval form (dropouts are identities at inference and are omitted)."""

    def __init__(self, cfg: BEATsConfig) -> None:
        super().__init__()
        self.cfg = cfg
        p = cfg.input_patch_size
        self.patch_embedding = nn.Conv2d(1, cfg.embed_dim, p, stride=p, bias=cfg.conv_bias)
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)
        e, d = cfg.embed_dim, cfg.encoder_embed_dim
        self.post_extract_proj = nn.Linear(e, d) if e != d else None
        self.encoder = TransformerEncoder(cfg)

    def forward(self, fbank: Tensor) -> Tensor:
        """Normalised fbank (B, T, 128) -> hidden states (B, T//16 * 8, D)."""
        x = self.patch_embedding(fbank.unsqueeze(1))  # (B, C, T', F'), time-major flattening
        x = self.layer_norm(x.reshape(x.shape[0], x.shape[1], -1).transpose(1, 2))
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        return self.encoder(x)


def _official_keys(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map torch's new weight-norm parametrization names back to the official ones."""
    p = ".parametrizations.weight.original"
    return {k.replace(p + "0", ".weight_g").replace(p + "1", ".weight_v"): v for k, v in sd.items()}


def load_state(model: BEATsModel, sd: Mapping[str, Tensor]) -> dict[str, list[str]]:
    """Strict load: ignore `predictor.*`; tolerate only the shared bias table being absent for
    layers >= 1; raise on any other missing or unexpected key."""
    sd = _official_keys(sd)
    ignored = sorted(k for k in sd if k.startswith(IGNORED_PREFIXES))
    sd = {k: v for k, v in sd.items() if k not in ignored}
    res = model.load_state_dict(sd, strict=False)
    shared = "self_attn.relative_attention_bias.weight"
    missing = [k for k in res.missing_keys if not (k.endswith(shared) and ".layers.0." not in k)]
    if missing or res.unexpected_keys:
        raise ValueError(f"BEATs checkpoint: missing {missing}, unexpected {res.unexpected_keys}")
    bias0 = sd.get(f"encoder.layers.0.{shared}")
    for k, v in sd.items():  # repeated copies of the shared table must agree with layer 0
        if k.endswith(shared) and bias0 is not None and not torch.equal(v, bias0):
            raise ValueError(f"BEATs checkpoint: {k} differs from layer 0's shared table")
    return {"ignored": ignored, "missing_shared": sorted(set(res.missing_keys) - set(missing))}


def model_from_checkpoint(ckpt: Mapping[str, Any]) -> BEATsModel:
    """Build from an official checkpoint dict {"cfg": BEATsConfig fields, "model": state dict}."""
    if "cfg" not in ckpt or "model" not in ckpt:
        raise ValueError(f"not a BEATs checkpoint: keys {sorted(ckpt)} (need 'cfg' and 'model')")
    model = BEATsModel(BEATsConfig.from_dict(ckpt["cfg"]))
    report = load_state(model, ckpt["model"])
    if report["ignored"]:
        log.info("BEATs: ignored %d classifier keys %s", len(report["ignored"]), report["ignored"])
    return model.eval()


def povey_fbank(waveform: Tensor, sample_rate: int = SAMPLE_RATE, mel_bins: int = 128) -> Tensor:
    """torchaudio `kaldi.fbank` defaults (povey window, no dither, htk_compat/use_energy off,
    25/10 ms, preemph 0.97, DC removal, snip_edges): the call `BEATs.preprocess` makes. The
    project's `kaldi_fbank` hard-codes ImageBind's Hanning window, hence this variant; computed
    in float64 like it (closer to Kaldi than torchaudio's float32), returned as float32."""
    x = torch.as_tensor(waveform).to(torch.float64).reshape(-1)
    win, shift = int(sample_rate * 0.025), int(sample_rate * 0.010)
    padded = 1 << (win - 1).bit_length()
    if x.numel() < win:
        return torch.zeros((0, mel_bins))
    frames = x.unfold(0, win, shift)
    frames = frames - frames.mean(dim=1, keepdim=True)
    frames = frames - 0.97 * torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    window = torch.hann_window(win, periodic=False, dtype=torch.float64).pow(0.85)  # povey
    power = torch.fft.rfft(frames * window, n=padded).abs().pow(2.0)
    banks = _mel_banks(mel_bins, padded, sample_rate, 20.0, 0.0, torch.float64)
    return torch.clamp(power @ banks.T, min=_EPS).log().to(torch.float32)


def beats_input(wave: np.ndarray) -> Tensor:
    """`BEATs.preprocess` for one waveform in [-1, 1]: int16 scale, fbank "at 16 kHz", norm."""
    fb = povey_fbank(torch.from_numpy(np.asarray(wave, np.float32)) * 2**15)
    return (fb - FBANK_MEAN) / (2 * FBANK_STD)


def window_spans(duration_s: float, window_s: float = WINDOW_S) -> list[tuple[float, float]]:
    """ceil(D / W) equal-length windows spread evenly from 0 to D - W (overlapping when W does
    not divide D): equal lengths batch without padding and no short tail gets a full vote."""
    if duration_s <= window_s:
        return [(0.0, duration_s)]
    n = math.ceil(duration_s / window_s - 1e-9)
    step = (duration_s - window_s) / (n - 1)
    return [(i * step, i * step + window_s) for i in range(n)]


class BeatsBaseline:
    name = "beats"
    modality = "audio"

    def __init__(self, conf: Any) -> None:
        self.variant = str(getattr(conf, "variant", "paper"))
        if self.variant not in ("paper", "windowed"):
            raise ValueError(f"baseline.variant={self.variant!r}: paper | windowed")
        self.device = torch.device(resolve_device(getattr(conf, "device", "auto")))
        self.batch_size = max(1, int(getattr(conf, "batch_size", 4) or 4))
        ckpt = getattr(conf, "checkpoint", None)
        if ckpt:
            obj = torch.load(Path(ckpt), map_location="cpu", weights_only=True)
            self.model = model_from_checkpoint(obj)

            self.fingerprint = fingerprint_files([Path(ckpt)])
        else:
            cfg = tiny_config() if getattr(conf, "tiny", False) else paper_config()
            seed = int(getattr(conf, "seed", 0) or 0)
            with torch.random.fork_rng(devices=[]):  # seeded random weights, global RNG untouched
                torch.manual_seed(seed)
                self.model = BEATsModel(cfg).eval()
            self.fingerprint = f"random-init-seed{seed}"
        self.model.to(self.device).requires_grad_(False)

    def identity(self) -> dict[str, Any]:
        sampling: dict[str, Any] = {"sample_rate": SAMPLE_RATE, "pool": "mean over tokens",
                                    "fbank": "kaldi povey 128 mel 25/10ms x2^15",
                                    "norm": [FBANK_MEAN, 2 * FBANK_STD]}  # fmt: skip
        if self.variant == "paper":
            sampling["resample_to"] = PAPER_RATE
        else:
            sampling.update(window_s=WINDOW_S, windows="ceil(D/W) evenly spread, mean")
        return {"model": "beats", "config": dataclasses.asdict(self.model.cfg),
                "checkpoint": self.fingerprint, "variant": self.variant, "sampling": sampling,
                "version": VERSION}  # fmt: skip

    def _audio(self, video: Any, start_s: float, end_s: float) -> np.ndarray:
        if video.audio_path is None and not video.has_audio:
            raise BaselineInputError(f"video {video.id}: no audio stream and no audio override")
        return read_audio(video.audio_path or video.path, start_s, end_s, SAMPLE_RATE)

    @torch.inference_mode()
    def _pooled(self, waves: list[np.ndarray], video: Any, what: str) -> Tensor:
        """Mean-pooled last hidden states (N, D) of equal-length waveforms, in batches."""
        out, patch = [], self.model.cfg.input_patch_size
        for i in range(0, len(waves), self.batch_size):
            fb = torch.stack([beats_input(w) for w in waves[i : i + self.batch_size]])
            if fb.shape[1] < patch:
                raise BaselineInputError(f"video {video.id}: {what} gives {fb.shape[1]} fbank "
                                         f"frames, fewer than one {patch}-frame patch")  # fmt: skip
            out.append(self.model(fb.to(self.device)).mean(dim=1).float().cpu())
        return torch.cat(out)

    def features(self, video: Any, window: Any) -> np.ndarray:
        start, end = float(window.start_s), float(window.end_s)
        if self.variant == "paper":
            wave = self._audio(video, start, end)
            wave = resample_poly(wave, 1, SAMPLE_RATE // PAPER_RATE).astype(np.float32)
            feats = self._pooled([wave], video, f"{end - start:.2f} s at {PAPER_RATE} Hz")
        else:
            full = self._audio(video, start, end)  # decode once, slice the windows
            spans = window_spans(end - start)
            n = int(round((spans[0][1] - spans[0][0]) * SAMPLE_RATE))
            last = max(len(full) - n, 0)  # rounding must not shorten the last window
            waves = [full[min(int(round(a * SAMPLE_RATE)), last) :][:n] for a, _ in spans]
            feats = self._pooled(waves, video, f"a {n / SAMPLE_RATE:.2f}-s window")
        return feats.mean(dim=0).numpy().astype(np.float32)
