"""MLLM backbones (paper stage 2) behind one small protocol, chosen by the `backbone/` group.

A backbone declares its preprocessing and turns sampled inputs into a description. Heavy code
(transformers, HTTP clients) is imported only for the backbone that is chosen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from eald.data.sampling import Sample

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class BackboneError(RuntimeError):
    """A backbone could not describe one video (the row records it; other videos go on)."""


@dataclass(frozen=True)
class Preprocess:
    """What a backbone does to the sampled inputs before its encoders see them."""

    frame_size: int | None  # square side frames are resized to; None: sent as decoded
    mean: tuple[float, float, float] | None  # per-channel normalisation of [0, 1] pixels
    std: tuple[float, float, float] | None
    max_frames: int | None  # most frames it accepts (None: any number)
    max_audio_clips: int | None


class Backbone(Protocol):
    name: str
    preprocess: Preprocess
    deterministic: bool  # True when equal inputs give equal text (greedy / temperature 0)

    def identity(self) -> dict[str, Any]:
        """Everything that changes an answer: kind, weights fingerprint, generation parameters,
        code version. Never credentials."""
        ...

    def describe(self, samples: Sequence[Sample], prompt: Any) -> list[str]: ...


def uniform_pick(n: int, k: int | None) -> np.ndarray:
    """Indices of ``k`` of ``n`` items spread uniformly (all of them when k is None or >= n)."""
    m = n if k is None else min(n, k)
    return (np.arange(m) * n) // max(m, 1)


def prompt_parts(
    sample: Sample, prompt: Any, max_frames: int | None = None
) -> list[tuple[str, Any]]:
    """The request as ordered parts: ("text", str), ("frames", ndarray), ("audio", [clips]).
    Only modalities present in the sample appear, text intros included. With ``max_frames``
    the frames are thinned uniformly first: the intro counts the frames the model receives."""
    parts: list[tuple[str, Any]] = []
    dur = sample.window.duration_s
    if sample.frames is not None:
        frames = sample.frames[uniform_pick(len(sample.frames), max_frames)]
        parts.append(("text", prompt.video_intro.format(n=len(frames), duration=dur)))
        parts.append(("frames", frames))
    if sample.audio_clips is not None:
        clip_s = len(sample.audio_clips[0]) / sample.sample_rate if sample.audio_clips else 0.0
        n = len(sample.audio_clips)
        parts.append(("text", prompt.audio_intro.format(n=n, clip_s=clip_s, duration=dur)))
        parts.append(("audio", sample.audio_clips))
    if sample.nfbl is not None:
        parts.append(("text", prompt.nfbl_intro.format(nfbl=sample.nfbl)))
    parts.append(("text", prompt.question))
    return parts


def backbone_identity(conf: Any) -> dict[str, Any]:
    """A backbone's cache identity from its config alone, so a fully cached run never loads
    the model. Includes `deterministic`."""
    if conf.name == "tiny":
        from eald.mllm import tiny

        return tiny.identity(conf)
    if conf.name == "openai":
        from eald.mllm import openai_backbone

        return openai_backbone.identity(conf)
    if conf.name == "video_llama":
        from eald.mllm import video_llama

        return video_llama.identity(conf)
    if conf.name == "pandagpt":
        from eald.mllm import pandagpt

        return pandagpt.identity(conf)
    raise ValueError(f"backbone.name={conf.name!r}: unknown backbone")


def build_backbone(conf: Any) -> Backbone:
    name = conf.name
    if name == "tiny":
        from eald.mllm.tiny import TinyBackbone

        return TinyBackbone(conf)
    if name == "openai":
        from eald.mllm.openai_backbone import OpenAIBackbone

        return OpenAIBackbone(conf)
    if name == "video_llama":
        from eald.mllm.video_llama import VideoLlamaBackbone

        return VideoLlamaBackbone(conf)
    if name == "pandagpt":
        from eald.mllm.pandagpt import PandaGPTBackbone

        return PandaGPTBackbone(conf)
    if name == "none":
        raise ValueError("backbone=none: task=zeroshot needs a backbone (e.g. backbone=tiny)")
    raise ValueError(
        f"backbone.name={name!r}: unknown backbone (tiny | openai | video_llama | pandagpt)"
    )
