"""Which H.264 encoder writes de-identified video: NVIDIA's NVENC through PyAV when a GPU and the
encoder are present, x264 otherwise. `deid.face.encoder=auto` decides once per process and the
per-video report records the choice and why; naming an encoder that cannot open is an error."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import cache

import av

ENCODERS = ("auto", "libx264", "h264_nvenc")


@dataclass(frozen=True)
class EncoderChoice:
    name: str
    reason: str

    def options(self, crf: int, preset: str) -> dict[str, str]:
        """x264: CRF and its preset. NVENC: constant-quality VBR at the same CQ value and its
        middle preset (x264's preset names do not exist there)."""
        if self.name == "h264_nvenc":
            return {"rc": "vbr", "cq": str(crf), "preset": "p4"}
        return {"crf": str(crf), "preset": preset}


def _nvenc_opens() -> str | None:
    """None when an NVENC session opens here, else why not (one line)."""
    if "h264_nvenc" not in av.codecs_available:
        return "PyAV's FFmpeg has no h264_nvenc"
    try:
        import torch

        if not torch.cuda.is_available():
            return "no CUDA device"
    except ImportError:
        return "torch is not installed"
    try:
        ctx = av.CodecContext.create("h264_nvenc", "w")
        ctx.width, ctx.height, ctx.pix_fmt = 256, 256, "yuv420p"
        ctx.time_base = Fraction(1, 25)
        ctx.open()
        ctx.close()
    except Exception as err:  # noqa: BLE001 - any failure to open means: not usable here
        return f"h264_nvenc does not open ({type(err).__name__}: {err})"
    return None


@cache
def choose_encoder(setting: str = "auto") -> EncoderChoice:
    if setting not in ENCODERS:
        raise ValueError(f"deid.face.encoder={setting!r}: one of {ENCODERS}")
    if setting == "libx264":
        return EncoderChoice("libx264", "deid.face.encoder=libx264")
    why_not = _nvenc_opens()
    if setting == "h264_nvenc":
        if why_not:
            raise ValueError(f"deid.face.encoder=h264_nvenc: {why_not}")
        return EncoderChoice("h264_nvenc", "deid.face.encoder=h264_nvenc")
    if why_not is None:
        return EncoderChoice("h264_nvenc", "auto: a CUDA device and NVENC are present")
    return EncoderChoice("libx264", f"auto: {why_not}")
