"""Face de-identification settings: the Hydra schema of `deid.face` (eald/config.py) and what
eald/deid/video.py reads. Kept free of heavy imports, since the config loads it at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from eald.registry import REGISTRY, Component

_CHOICES = {
    "between": ("hold", "interpolate"), "mode": ("blur", "fill"),
    "on_error": ("blur_frame", "raise"), "on_lost": ("blur_frame", "none"),
    "on_no_faces": ("blur_all", "fail", "warn"), "encoder": ("auto", "libx264", "h264_nvenc"),
}  # fmt: skip
# Face detectors are registered components; their specs (family, smallest face, thresholds) are
# eald.deid.detectors.DETECTORS, their classes load only when a detector is built.
DETECTOR_NAMES = tuple(
    REGISTRY.register(Component("face_detector", name,
                                cls if ":" in cls else f"eald.deid.detectors:{cls}")).name
    for name, cls in (("cnn", "eald.deid.mmod:TorchMmod"), ("cnn_dlib", "DlibCnn"),
                      ("hog", "DlibHog"), ("centerface", "CenterFace"), ("mtcnn", "Mtcnn"))
)  # fmt: skip


@dataclass
class FaceDeidConf:
    """Face masking and encoding settings (the Hydra schema of ``deid.face``)."""

    # Union of detectors (boxes merged); [cnn] alone is the paper's setting, at lower recall.
    detectors: list[str] = field(default_factory=lambda: ["cnn", "centerface"])
    min_face_px: int = 40  # smallest face (source px) that must be masked; sets the scales
    detect_max_side: int | None = None  # cap on every detector's input; None: automatic
    upsample: int | None = None  # dlib upsampling passes; None: automatic
    device: str = "auto"  # torch detectors (cnn): auto (cuda when present) | cpu | cuda
    batch: int = 8  # detection frames run through the detectors together
    stride: int = 1  # detect every k frames
    between: str = "interpolate"  # hold | interpolate
    dilate: float = 1.5  # 1.3 left part of a profile face unmasked at stride 1 (6 of 32 frames)
    safety_dilate: float = 1.15  # extra on frames without a detection of their own
    mode: str = "blur"  # blur | fill
    blur_strength: float = 1.0  # 1: sigma = box side / 6
    on_error: str = "blur_frame"  # blur_frame | raise
    max_lost: int = 8
    on_lost: str = "blur_frame"  # blur_frame | none
    crf: int = 18  # x264 CRF; NVENC's CQ
    preset: str = "veryfast"  # x264's
    encoder: str = (
        "auto"  # auto (h264_nvenc with a GPU and NVENC, else libx264) | libx264 | h264_nvenc
    )
    # Most detection frames without a face in an interview: a detector problem, not a pass.
    on_no_faces: str = "fail"  # blur_all | fail | warn
    no_faces_below: float = 0.5  # ... when fewer than this fraction of them found a face
    # Verification gate on the written output, before it is published.
    # The gate also runs these: a verifier that did not do the masking (another family).
    verify_with: list[str] = field(default_factory=lambda: ["mtcnn"])
    verify_stride: int = 4  # scan every k-th frame (and every frame where detections changed)
    verify_rounds: int = 2  # re-mask and re-verify at most this often, then fail: unverified
    verify_covered: float = 0.9  # a found face this much inside the mask is the masked face

    @classmethod
    def from_any(cls, conf: Any) -> FaceDeidConf:
        """A plain, validated copy of a dataclass / DictConfig / mapping (picklable)."""
        if conf is None:
            return cls()
        get = conf.get if isinstance(conf, Mapping) else lambda k, d: getattr(conf, k, d)
        vals = {}
        for f in fields(cls):
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            vals[f.name] = get(f.name, default)
        vals["detectors"] = [str(d) for d in vals["detectors"]]
        vals["verify_with"] = [str(d) for d in vals["verify_with"] or []]
        out = cls(**vals)
        bad = [d for d in out.detectors + out.verify_with if d not in DETECTOR_NAMES]
        if bad or not out.detectors or len(set(out.detectors)) != len(out.detectors):
            raise ValueError(
                f"face conf: detectors={out.detectors}, verify_with={out.verify_with}: "
                f"choose distinct names from {DETECTOR_NAMES}"
            )
        for key, allowed in _CHOICES.items():
            if getattr(out, key) not in allowed:
                raise ValueError(f"face conf: {key}={getattr(out, key)!r}, expected {allowed}")
        if not (out.stride >= 1 and out.dilate >= 1 and out.safety_dilate >= 1):
            raise ValueError(f"face conf: need stride, dilate, safety_dilate >= 1 ({out})")
        if out.max_lost < 0 or out.blur_strength <= 0 or (out.upsample or 0) < 0:
            raise ValueError(f"face conf: need max_lost, upsample >= 0, blur_strength > 0 ({out})")
        if out.min_face_px < 1 or not 0 <= out.no_faces_below <= 1 or out.verify_stride < 1:
            raise ValueError(
                f"face conf: need min_face_px >= 1, 0 <= no_faces_below <= 1, verify_stride >= 1"
                f" ({out})"
            )
        if out.verify_rounds < 1 or not 0 < out.verify_covered <= 1:
            raise ValueError(f"face conf: need verify_rounds >= 1, 0 < verify_covered <= 1 ({out})")
        return out
