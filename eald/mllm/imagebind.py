"""ImageBind-huge audio and vision encoders, written for this project.

Semantics follow facebookresearch/ImageBind (`imagebind_model.py`, `transformer.py`,
`multimodal_preprocessors.py`, `helpers.py`) so that the released `imagebind_huge.pth` gives the
original embeddings:

- audio: Conv2d(1->768, k16, s10, no bias) over a (1, 128, 204) fbank -> 12x19 = 228 patches,
  LayerNorm (default eps 1e-5: the stem norm is a plain nn.LayerNorm, unlike every other
  ImageBind norm), CLS + learned positions (229 tokens), 12 pre-norm blocks whose attention has
  add_bias_kv (one learned extra key/value token appended after the in-projection);
- vision: image -> 2-frame clip by repetition, Conv3d(3->1280, (2,14,14), no bias) -> 256 patches,
  CLS + positions (257 tokens), a LayerNorm before the trunk, 32 blocks without bias_kv;
- both: LayerNorm -> CLS token -> Linear(width -> 1024, no bias); block/head norms use eps 1e-6.

The trunk runs in (L, B, D) layout with `nn.MultiheadAttention(batch_first=False)`, exactly as the
original, so the same attention kernels (never PyTorch's batch-first fast path) are used.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eald.mllm.convert import KeyMap, LoadReport, load_checkpoint, load_converted

__all__ = [
    "IMAGEBIND_KEYMAP",
    "ImageBindAudioEncoder",
    "ImageBindConfig",
    "ImageBindVisionEncoder",
    "imagebind_keymap",
    "load_imagebind",
    "load_imagebind_into",
]

log = logging.getLogger("eald.imagebind")

MODALITIES = ("audio", "vision")
# Modalities present in imagebind_huge.pth that this project never uses.
OTHER_MODALITIES = ("text", "depth", "thermal", "imu")
BLOCK_EPS = 1e-6  # ImageBind's _LAYER_NORM, used by blocks, heads and the vision pre-trunk norm
STEM_EPS = 1e-5  # audio stem: nn.LayerNorm(768) with PyTorch's default eps
MAX_LOGIT_SCALE = 100.0  # LearnableLogitScaling clips exp(log_scale) at this value


@dataclass(frozen=True)
class ImageBindConfig:
    """Defaults are `imagebind_huge()`; drop_path is omitted (identity at inference)."""

    audio_width: int = 768
    audio_layers: int = 12
    audio_heads: int = 12
    audio_kernel: int = 16
    audio_stride: int = 10
    mel_bins: int = 128
    audio_frames: int = 204
    audio_logit_scale: float = 20.0
    vision_width: int = 1280
    vision_layers: int = 32
    vision_heads: int = 16
    vision_patch: tuple[int, int, int] = (2, 14, 14)
    image_size: int = 224
    ntimes: int = 2
    embed_dim: int = 1024
    mlp_ratio: int = 4

    @classmethod
    def tiny(cls) -> ImageBindConfig:
        """Small widths/depths for tests, with the real input geometry (fbank 128x204, 224 px,
        same kernels and strides) so real preprocessing and token counts apply."""
        return cls(
            audio_width=32, audio_layers=2, audio_heads=2,
            vision_width=32, vision_layers=2, vision_heads=2, embed_dim=16,
        )  # fmt: skip

    @property
    def audio_grid(self) -> tuple[int, int]:
        """Conv output size (no padding): (128-16)//10+1 = 12 by (204-16)//10+1 = 19."""
        k, s = self.audio_kernel, self.audio_stride
        return (self.mel_bins - k) // s + 1, (self.audio_frames - k) // s + 1

    @property
    def audio_tokens(self) -> int:
        return 1 + math.prod(self.audio_grid)

    @property
    def vision_grid(self) -> tuple[int, int, int]:
        t, h, w = self.vision_patch
        return self.ntimes // t, self.image_size // h, self.image_size // w

    @property
    def vision_tokens(self) -> int:
        return 1 + math.prod(self.vision_grid)


class Block(nn.Module):
    """ImageBind's BlockWithMasking without layer scale / drop path: pre-norm attention + MLP.
    Input and output are (L, B, D)."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, add_bias_kv: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=BLOCK_EPS)
        # batch_first=False as in the original; bias_k/bias_v are concatenated to the projected
        # keys/values, giving L+1 keys for L queries.
        self.attn = nn.MultiheadAttention(width, heads, bias=True, add_bias_kv=add_bias_kv)
        self.norm2 = nn.LayerNorm(width, eps=BLOCK_EPS)
        self.fc1 = nn.Linear(width, mlp_ratio * width)
        self.fc2 = nn.Linear(mlp_ratio * width, width)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        # nn.GELU default = exact erf GELU, as ImageBind's Mlp uses.
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class _Encoder(nn.Module):
    """Shared tail: CLS + positions, blocks, head (LayerNorm -> CLS -> Linear)."""

    def __init__(
        self, width: int, layers: int, heads: int, tokens: int, cfg: ImageBindConfig, bias_kv: bool
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, width))
        self.blocks = nn.ModuleList(
            Block(width, heads, cfg.mlp_ratio, bias_kv) for _ in range(layers)
        )
        self.head_norm = nn.LayerNorm(width, eps=BLOCK_EPS)
        self.proj = nn.Linear(width, cfg.embed_dim, bias=False)
        # Random init only matters for tests; real use loads every tensor.
        nn.init.normal_(self.cls_token, std=width**-0.5)
        nn.init.normal_(self.pos_embed, std=width**-0.5)

    def _patches(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _pre_trunk(self, tokens: Tensor) -> Tensor:
        return tokens

    def forward_tokens(self, x: Tensor) -> Tensor:
        """Trunk output (B, L, width), before the head norm."""
        patches = self._patches(x)  # (B, N, width)
        tokens = torch.cat([self.cls_token.expand(patches.shape[0], -1, -1), patches], dim=1)
        if tokens.shape[1] != self.pos_embed.shape[1]:
            # ImageBind would interpolate positions; inputs here always have the trained geometry.
            raise ValueError(f"{tokens.shape[1]} tokens, positions for {self.pos_embed.shape[1]}")
        h = self._pre_trunk(tokens + self.pos_embed).transpose(0, 1)  # -> (L, B, D)
        for block in self.blocks:
            h = block(h)
        return h.transpose(0, 1)

    def pooled(self, tokens: Tensor) -> Tensor:
        """Head norm + CLS selection: (..., width); Video-LLaMA's pre-projection `audio_feature`."""
        return self.head_norm(tokens)[..., 0, :]  # leading clip dims allowed

    def forward(self, x: Tensor) -> Tensor:
        """Projected, un-normalised embedding (B, embed_dim); see `postprocess`."""
        return self.proj(self.pooled(self.forward_tokens(x)))


class ImageBindAudioEncoder(_Encoder):
    """ImageBind audio tower: (B, 1, 128, 204) normalised fbank -> (B, embed_dim).
    Extra leading dims (e.g. clips) are flattened and restored."""

    def __init__(self, cfg: ImageBindConfig) -> None:
        a = (cfg.audio_width, cfg.audio_layers, cfg.audio_heads, cfg.audio_tokens)
        super().__init__(*a, cfg, bias_kv=True)
        w = cfg.audio_width
        self.stem = nn.Conv2d(1, w, cfg.audio_kernel, stride=cfg.audio_stride, bias=False)
        self.stem_norm = nn.LayerNorm(w, eps=STEM_EPS)
        # A persistent buffer, as in the original (it is in imagebind_huge.pth, not learnable).
        self.register_buffer("log_logit_scale", torch.tensor(math.log(cfg.audio_logit_scale)))

    def _patches(self, x: Tensor) -> Tensor:
        expected = (1, self.cfg.mel_bins, self.cfg.audio_frames)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"audio input must be (B, {expected}), got {tuple(x.shape)}")
        return self.stem_norm(self.stem(x).flatten(2).transpose(1, 2))

    def forward_tokens(self, x: Tensor) -> Tensor:
        lead = x.shape[:-3]
        out = super().forward_tokens(x.reshape(-1, *x.shape[-3:]))
        return out.reshape(*lead, *out.shape[1:])

    def postprocess(self, x: Tensor, *, scale: bool) -> Tensor:
        """L2-normalise, then x20 (the original audio postprocessor) when `scale`.

        Keyword-only on purpose: Video-LLaMA applies the scale, PandaGPT does not, so every
        caller must state which it replicates.
        """
        x = F.normalize(x, dim=-1, p=2)
        if scale:
            x = torch.clip(self.log_logit_scale.exp(), max=MAX_LOGIT_SCALE) * x
        return x


class ImageBindVisionEncoder(_Encoder):
    """ImageBind vision tower: image (B, 3, 224, 224) or 2-frame clip (B, 3, 2, 224, 224) ->
    (B, embed_dim). Note: the *full* ImageBind model reads a 5-D input as (B, S, 3, H, W) image
    clips; this encoder works one level lower, like the original preprocessor."""

    def __init__(self, cfg: ImageBindConfig) -> None:
        v = (cfg.vision_width, cfg.vision_layers, cfg.vision_heads, cfg.vision_tokens)
        super().__init__(*v, cfg, bias_kv=False)
        p = cfg.vision_patch
        self.stem = nn.Conv3d(3, cfg.vision_width, p, stride=p, bias=False)
        self.pre_norm = nn.LayerNorm(cfg.vision_width, eps=BLOCK_EPS)

    def _patches(self, x: Tensor) -> Tensor:
        # PadIm2Video(pad_type="repeat"): images become clips of ntimes identical frames.
        if x.ndim == 4:
            x = x.unsqueeze(2)
        s = self.cfg.image_size
        if x.ndim != 5 or x.shape[1] != 3 or tuple(x.shape[3:]) != (s, s):
            raise ValueError(f"vision input must be (B, 3, [T,] {s}, {s}), got {tuple(x.shape)}")
        if x.shape[2] == 1:
            x = x.repeat(1, 1, self.cfg.ntimes, 1, 1)
        if x.shape[2] != self.cfg.ntimes:
            raise ValueError(
                f"vision clips must have 1 or {self.cfg.ntimes} frames, got {x.shape[2]}"
            )
        return self.stem(x).flatten(2).transpose(1, 2)  # tokens ordered (t, h, w)

    def _pre_trunk(self, tokens: Tensor) -> Tensor:
        return self.pre_norm(tokens)

    def postprocess(self, x: Tensor) -> Tensor:
        """The original vision postprocessor: L2 normalisation only (no logit scale)."""
        return F.normalize(x, dim=-1, p=2)


def _modality_rules(m: str) -> list[tuple[str, str]]:
    """Original -> ours for one modality; our keys are prefixed "<modality>."."""
    pre, trunk, head = (rf"modality_{part}\.{m}\." for part in ("preprocessors", "trunks", "heads"))
    attn = r"(in_proj_weight|in_proj_bias|bias_k|bias_v|out_proj\.weight|out_proj\.bias)"
    wb = r"(weight|bias)"
    rules = [
        (pre + r"cls_token", f"{m}.cls_token"),
        (pre + r"pos_embedding_helper\.pos_embed", f"{m}.pos_embed"),
        (trunk + rf"blocks\.(\d+)\.attn\.{attn}", rf"{m}.blocks.\1.attn.\2"),
        (trunk + rf"blocks\.(\d+)\.norm_([12])\.{wb}", rf"{m}.blocks.\1.norm\2.\3"),
        (trunk + rf"blocks\.(\d+)\.mlp\.(fc[12])\.{wb}", rf"{m}.blocks.\1.\2.\3"),
        (head + rf"0\.{wb}", rf"{m}.head_norm.\1"),
        (head + r"2\.weight", f"{m}.proj.weight"),
    ]
    if m == "audio":
        # One-layer stem: PatchEmbedGeneric stores the conv itself as `proj` (no index).
        rules += [
            (pre + r"rgbt_stem\.proj\.weight", "audio.stem.weight"),
            (pre + rf"rgbt_stem\.norm_layer\.{wb}", r"audio.stem_norm.\1"),
            (r"modality_postprocessors\.audio\.1\.log_logit_scale", "audio.log_logit_scale"),
        ]
    else:
        # Two-layer stem Sequential(PadIm2Video, Conv3d): the conv is `proj.1`.
        rules += [
            (pre + r"rgbt_stem\.proj\.1\.weight", "vision.stem.weight"),
            (trunk + rf"pre_transformer_layer\.0\.{wb}", r"vision.pre_norm.\1"),
        ]
    return rules


def imagebind_keymap(modalities: Sequence[str] = MODALITIES) -> KeyMap:
    """Key map for `imagebind_huge.pth` that loads `modalities` and ignores all the others."""
    unknown = set(modalities) - set(MODALITIES)
    if unknown:
        raise ValueError(f"unsupported ImageBind modalities {sorted(unknown)}")
    skipped = [m for m in (*MODALITIES, *OTHER_MODALITIES) if m not in modalities]
    ignore = [rf"modality_(preprocessors|trunks|heads|postprocessors)\.{m}\..*" for m in skipped]
    return KeyMap(rules=[r for m in modalities for r in _modality_rules(m)], ignore=ignore)


IMAGEBIND_KEYMAP = imagebind_keymap(MODALITIES)

_ENCODERS: dict[str, type[_Encoder]] = {
    "audio": ImageBindAudioEncoder,
    "vision": ImageBindVisionEncoder,
}


def load_imagebind_into(
    encoders: dict[str, nn.Module], path: str | Path, *, assign: bool = False
) -> LoadReport:
    """Load `imagebind_huge.pth` (original layout) into {"audio": ..., "vision": ...} encoders.
    Every encoder tensor must be filled; keys of other modalities are ignored; anything else
    raises CheckpointError."""
    holder = nn.ModuleDict(encoders)
    sd = load_checkpoint(path)
    return load_converted(holder, sd, imagebind_keymap(tuple(encoders)), assign=assign)


def load_imagebind(
    path: str | Path, cfg: ImageBindConfig, modalities: Sequence[str] = ("audio",)
) -> dict[str, nn.Module]:
    """Build the requested encoders and load them from `path`; frozen, in eval mode, on CPU."""
    unknown = set(modalities) - set(MODALITIES)
    if unknown:
        raise ValueError(f"unsupported ImageBind modalities {sorted(unknown)}")
    # Built on meta and filled by assignment: skips random init of ~0.7 B parameters.
    with torch.device("meta"):
        encoders: dict[str, nn.Module] = {m: _ENCODERS[m](cfg) for m in modalities}
    report = load_imagebind_into(encoders, path, assign=True)
    log.info("ImageBind %s from %s: %s", "+".join(modalities), Path(path).name, report.summary())
    for enc in encoders.values():
        enc.eval().requires_grad_(False)
    return encoders
