"""MLLM backbones (paper stage 2) behind one small protocol, chosen by the `backbone/` group.

A backbone declares its preprocessing and turns sampled inputs into a description. Backbones
are registered components (eald.registry): each option of `eald/conf/backbone/` names its class,
schema and identity function, and only the chosen one is imported. This module stays light (no
torch): the config schemas below it load at start-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
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
    # What its audio encoder takes: "fbank" (Sample.fbank) or "waveform" (Sample.audio_clips, sent
    # as WAV). Sampling computes the fbank only for the first: it is a fifth of stage 1's time.
    audio_input: str = "fbank"


class Backbone(Protocol):
    name: str
    preprocess: Preprocess
    deterministic: bool  # True when equal inputs give equal text (greedy / temperature 0)

    def identity(self) -> dict[str, Any]:
        """Everything that changes an answer: kind, weights fingerprint, generation parameters,
        code version. Never credentials."""
        ...

    # Optional: `prepare(sample) -> sample` does per-video preprocessing (resizing frames...)
    # in stage 1's sampling threads, ahead of and beside the model; describe must give the same
    # answer with or without it.

    def describe(self, samples: Sequence[Sample], prompt: Any) -> list[str]:
        """One text per sample, in order. The runner passes `backbone.batch_size` samples per
        call (in-process models batch them; greedy answers must equal one-by-one answers) and
        keeps `backbone.concurrency` calls in flight (served models). Raises BackboneError
        for a video that cannot be described."""
        ...
