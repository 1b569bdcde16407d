"""Frozen Kinetics-400 video backbones (mmaction2 1.2.0) as linear-probe feature extractors.

Each model is built from mmaction2's own K400 config (shipped in the wheel under
`mmaction/.mim/configs`) and fed clips shaped as its K400 test pipeline does:

| name        | config                                   | clip (frames)             | resize/crop | mean/std  |
|-------------|------------------------------------------|---------------------------|-------------|-----------|
| tsm         | tsm r50 1x1x8 50e                        | 8 segment centres / span  | 256 / 224   | ImageNet  |
| timesformer | timesformer divST 8x32x1                 | 8, interval 32 (225 span) | 224 / 224   | 127.5     |
| video_swin  | swin-tiny p244 w877 32x2x1               | 32, interval 2 (63 span)  | 224 / 224   | ImageNet  |
| slowfast    | slowfast r50 8x8x1 (slow 8 / fast 32)    | 32, interval 2 (63 span)  | 256 / 256   | ImageNet  |

Intervals are in frames of the video's native rate, as mmaction's SampleFrames counts them.
TSM is segment-based (TSN sampling: `clip_len=1, num_clips=8` over the whole video): its clip k
of N is the k-th of N equal sub-spans of the window, with one frame at the centre of each of its 8
segments. For the 3-D models clip k of N starts at an offset spread uniformly over
[window start, window end - span] (N = 1: centred, like mmaction's test-mode sampler).
Single centre crop (not mmaction's Three/TenCrop): one view per clip, features averaged over clips.
Features: the backbone output globally average-pooled as the cls head pools it (TSM: space, then
segments; SlowFast: concat(fast, slow) as SlowFastHead does; TimeSformer: the class token).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from baselines import BaselineInputError
from baselines.mmaction_compat import COMPAT_VERSION, import_mmaction
from eald.data.media import fingerprint_files
from eald.device import resolve_device

VERSION = "1"  # bump when sampling, preprocessing or pooling changes (feature-cache key)
log = logging.getLogger(__name__)

_IMAGENET = ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))


@dataclass(frozen=True)
class ModelSpec:
    config: str  # relative to mmaction/.mim/configs/recognition
    clip_len: int
    frame_interval: int  # 0: segment-based (TSM)
    short_side: int
    crop: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    tiny: dict[str, Any] = field(default_factory=dict)  # backbone overrides at tiny size
    tiny_dim: int = 0

    @property
    def segment_based(self) -> bool:
        return self.frame_interval == 0


SPECS: dict[str, ModelSpec] = {
    "tsm": ModelSpec(
        "tsm/tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb.py",
        8,
        0,
        256,
        224,
        *_IMAGENET,
        tiny={"depth": 18},
        tiny_dim=512,
    ),
    "timesformer": ModelSpec(
        "timesformer/timesformer_divST_8xb8-8x32x1-15e_kinetics400-rgb.py",
        8,
        32,
        224,
        224,
        (127.5,) * 3,
        (127.5,) * 3,
        tiny={"embed_dims": 64, "num_heads": 4, "num_transformer_layers": 2},
        tiny_dim=64,
    ),
    "video_swin": ModelSpec(
        "swin/swin-tiny-p244-w877_in1k-pre_8xb8-amp-32x2x1-30e_kinetics400-rgb.py",
        32,
        2,
        224,
        224,
        *_IMAGENET,
        tiny={"arch": {"embed_dims": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 2, 4, 8]}},
        tiny_dim=128,
    ),
    "slowfast": ModelSpec(
        "slowfast/slowfast_r50_8xb8-8x8x1-256e_kinetics400-rgb.py",
        32,
        2,
        256,
        256,
        *_IMAGENET,
        # Same two-pathway layout (laterals, alpha 4, beta 1/8) as an R18 at 1/4 width: CPU tests.
        tiny={
            "slow_pathway": {"depth": 18, "base_channels": 16},
            "fast_pathway": {"depth": 18, "base_channels": 2},
        },
        tiny_dim=128 + 16,
    ),
}


def _get(conf: Any, key: str, default: Any = None) -> Any:
    if isinstance(conf, Mapping):
        return conf.get(key, default)
    return getattr(conf, key, default)


def _merge(dst: dict[str, Any], src: Mapping[str, Any]) -> None:
    for k, v in src.items():
        if isinstance(v, Mapping) and isinstance(dst.get(k), Mapping):
            _merge(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)


def _plain(x: Any) -> Any:
    """mmengine ConfigDict/tuples -> JSON-friendly dicts/lists (identity must be hashable JSON)."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    return x


def model_config(name: str, tiny: bool) -> dict[str, Any]:
    """The recognizer dict of the K400 config, with no pretrained download and tiny overrides."""
    mm = import_mmaction()
    from mmengine.config import Config

    spec = SPECS[name]
    path = Path(mm.__file__).parent / ".mim" / "configs" / "recognition" / spec.config
    model = _plain(Config.fromfile(str(path)).model)
    # Our checkpoint (or none) replaces any ImageNet initialisation: never download.
    model["backbone"]["pretrained"] = None
    model.pop("train_cfg", None)
    model.pop("test_cfg", None)
    if tiny:
        _merge(model["backbone"], spec.tiny)
        model["cls_head"]["in_channels"] = spec.tiny_dim
    return model


def load_checkpoint(model: torch.nn.Module, path: Path) -> dict[str, list[str]]:
    """Load an mmaction checkpoint ({"state_dict"} or {"meta", "state_dict"} or a bare state
    dict). Strict except the cls head (unused for features; its class count may differ)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - OpenMMLab's `meta` pickles non-tensor objects
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: not an mmaction checkpoint (no state_dict)")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    kept = {k: v for k, v in state.items() if not k.startswith("cls_head.")}
    missing, unexpected = model.load_state_dict(kept, strict=False)
    missing = [k for k in missing if not k.startswith("cls_head.")]
    report = {
        "missing": missing,
        "unexpected": list(unexpected),
        "ignored_cls_head": sorted(set(state) - set(kept)),
    }
    if missing or unexpected:
        raise ValueError(
            f"{path}: checkpoint does not match the model: missing {missing[:5]} "
            f"({len(missing)}), unexpected {list(unexpected)[:5]} ({len(unexpected)})"
        )
    log.info("%s: loaded; ignored %d cls_head keys", path, len(report["ignored_cls_head"]))
    return report


class VideoBaseline:
    modality = "video"

    def __init__(self, conf: Any) -> None:
        self.name: str = _get(conf, "name")
        if self.name not in SPECS:
            raise ValueError(f"baseline.name={self.name!r}: one of {sorted(SPECS)}")
        self.spec = SPECS[self.name]
        self.tiny = bool(_get(conf, "tiny", False))
        self.num_clips = int(_get(conf, "num_clips", 1))
        self.batch_size = max(1, int(_get(conf, "batch_size", 4)))
        self.seed = int(_get(conf, "seed", 0))
        self.device = torch.device(resolve_device(_get(conf, "device", "auto")))
        ckpt = _get(conf, "checkpoint")
        self.checkpoint = Path(ckpt).expanduser() if ckpt else None
        if self.num_clips < 1:
            raise ValueError(f"baseline.num_clips={self.num_clips}: must be >= 1")
        self.config = model_config(self.name, self.tiny)
        self.model = self._build()
        self.load_report: dict[str, list[str]] | None = None
        if self.checkpoint is not None:
            self.load_report = load_checkpoint(self.model, self.checkpoint)
        self.model.to(self.device).eval().requires_grad_(False)  # frozen, BN in eval mode

    def _build(self) -> torch.nn.Module:
        from mmaction.registry import MODELS
        from mmengine.logging import MMLogger

        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel(logging.WARNING)  # init_weights logs every parameter at INFO
        try:
            torch.manual_seed(self.seed)  # random weights (no checkpoint) are reproducible
            model = MODELS.build(copy.deepcopy(self.config))
            model.init_weights()
        finally:
            logger.setLevel(level)
        return model

    # -- identity -------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        import mmaction

        s = self.spec
        ckpt = (
            {"path": str(self.checkpoint), "fingerprint": fingerprint_files([self.checkpoint])}
            if self.checkpoint
            else {"random_init_seed": self.seed}
        )
        return {
            "baseline": self.name,
            "modality": self.modality,
            "model": s.config,
            "tiny": self.tiny,
            "config": self.config,
            "checkpoint": ckpt,
            "sampling": {
                "clip_len": s.clip_len,
                "frame_interval": s.frame_interval if not s.segment_based else "segments",
                "num_clips": self.num_clips,
                "short_side": s.short_side,
                "crop": s.crop,
                "views": "centre crop",
            },
            "normalisation": {"mean": list(s.mean), "std": list(s.std), "scale": "0..255"},
            "version": VERSION,
            "compat": COMPAT_VERSION,
            "mmaction": mmaction.__version__,
        }

    # -- sampling -------------------------------------------------------------------------
    def clip_indices(self, video: Any, window: Any) -> np.ndarray:
        """(num_clips, clip_len) frame indices inside the window; BaselineInputError if short."""
        s, n = self.spec, self.num_clips
        info = video.info
        if info is None or video.path is None:
            raise BaselineInputError(f"video {video.id}: no readable video file")
        fps, total = float(info.fps), int(info.num_frames)
        first = min(int(np.floor(window.start_s * fps + 1e-6)), total - 1)
        count = min(max(1, int(round(window.duration_s * fps))), total - first)
        if s.segment_based:
            span, need = count // n, s.clip_len * n
            if span < s.clip_len:
                raise self._too_short(video, window, count, need)
            # mmaction test mode: segment centres, int((j + 0.5) * span / clip_len)
            seg = ((np.arange(s.clip_len) + 0.5) * span / s.clip_len).astype(np.int64)
            return first + np.arange(n)[:, None] * span + seg[None, :]
        span = (s.clip_len - 1) * s.frame_interval + 1
        if count < span:
            raise self._too_short(video, window, count, span)
        room = count - span
        starts = [room // 2] if n == 1 else np.round(np.linspace(0, room, n)).astype(np.int64)
        offs = np.arange(s.clip_len, dtype=np.int64) * s.frame_interval
        return first + np.asarray(starts, np.int64)[:, None] + offs[None, :]

    def _too_short(self, video: Any, window: Any, count: int, need: int) -> BaselineInputError:
        return BaselineInputError(
            f"video {video.id}: window {window.duration_s:.2f}s has {count} frames, "
            f"{self.name} needs {need} frames for {self.num_clips} clip(s)"
        )

    # -- preprocessing and features --------------------------------------------------------
    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (n, H, W, 3) -> normalised float (n, 3, crop, crop): short side, centre crop."""
        s = self.spec
        x = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).float()
        h, w = x.shape[-2:]
        scale = s.short_side / min(h, w)
        size = (max(s.crop, round(h * scale)), max(s.crop, round(w * scale)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        top, left = (size[0] - s.crop) // 2, (size[1] - s.crop) // 2
        x = x[..., top : top + s.crop, left : left + s.crop]
        mean = torch.tensor(s.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(s.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def _pool(self, out: Any, clips: int) -> torch.Tensor:
        if self.name == "tsm":  # (B*T, C, h, w): spatial avg, then AvgConsensus over segments
            return out.mean(dim=(-2, -1)).view(clips, self.spec.clip_len, -1).mean(1)
        if self.name == "timesformer":  # the class token (B, C), as TimeSformerHead reads it
            return out
        if self.name == "slowfast":  # SlowFastHead: cat(avg(fast), avg(slow))
            slow, fast = out
            return torch.cat((fast.mean(dim=(2, 3, 4)), slow.mean(dim=(2, 3, 4))), dim=1)
        return out.mean(dim=(2, 3, 4))  # Swin: (B, C, t, h, w)

    @torch.inference_mode()
    def features(self, video: Any, window: Any) -> np.ndarray:
        from eald.data.media import read_frames

        idx = self.clip_indices(video, window)
        n, t = idx.shape
        frames = read_frames(Path(video.path), idx.reshape(-1), float(video.info.fps))
        x = self.preprocess(frames).view(n, t, 3, self.spec.crop, self.spec.crop)
        feats = []
        for b in range(0, n, self.batch_size):
            chunk = x[b : b + self.batch_size]
            if self.name == "tsm":
                inp = chunk.reshape(-1, 3, self.spec.crop, self.spec.crop)  # (B*T, 3, H, W)
            else:
                inp = chunk.permute(0, 2, 1, 3, 4).contiguous()  # (B, 3, T, H, W)
            feats.append(self._pool(self.model.backbone(inp), len(chunk)).float().cpu())
        return torch.cat(feats).mean(0).numpy().astype(np.float32)


def build_video_baseline(conf: Any) -> VideoBaseline:
    return VideoBaseline(conf)
