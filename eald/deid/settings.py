"""Face de-identification settings: the Hydra schema of `deid.face` (eald/config.py) and what
eald/deid/video.py reads. Kept free of heavy imports, since the config loads it at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

_CHOICES = {
    "detector": ("cnn", "hog"), "between": ("hold", "interpolate"), "mode": ("blur", "fill"),
    "on_error": ("blur_frame", "raise"), "on_lost": ("blur_frame", "none"),
}  # fmt: skip


@dataclass
class FaceDeidConf:
    """Face masking and encoding settings (the Hydra schema of ``deid.face``)."""

    detector: str = "cnn"  # cnn (dlib MMOD, the paper's) | hog (fast)
    detect_max_side: int | None = 640  # detect on a copy downscaled to this max side
    upsample: int = 0  # dlib upsampling passes (each finds 2x smaller faces at ~4x the cost)
    stride: int = 1  # detect every k frames
    between: str = "interpolate"  # hold | interpolate
    dilate: float = 1.3
    safety_dilate: float = 1.15  # extra on frames without a detection of their own
    mode: str = "blur"  # blur | fill
    blur_strength: float = 1.0  # 1: sigma = box side / 6
    on_error: str = "blur_frame"  # blur_frame | raise
    max_lost: int = 8
    on_lost: str = "blur_frame"  # blur_frame | none
    crf: int = 18
    preset: str = "veryfast"

    @classmethod
    def from_any(cls, conf: Any) -> FaceDeidConf:
        """A plain, validated copy of a dataclass / DictConfig / mapping (picklable)."""
        if conf is None:
            return cls()
        get = conf.get if isinstance(conf, Mapping) else lambda k, d: getattr(conf, k, d)
        out = cls(**{f.name: get(f.name, f.default) for f in fields(cls)})
        for key, allowed in _CHOICES.items():
            if getattr(out, key) not in allowed:
                raise ValueError(f"face conf: {key}={getattr(out, key)!r}, expected {allowed}")
        if not (out.stride >= 1 and out.dilate >= 1 and out.safety_dilate >= 1):
            raise ValueError(f"face conf: need stride, dilate, safety_dilate >= 1 ({out})")
        if out.max_lost < 0 or out.blur_strength <= 0 or out.upsample < 0:
            raise ValueError(f"face conf: need max_lost, upsample >= 0, blur_strength > 0 ({out})")
        return out
