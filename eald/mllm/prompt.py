"""The request as ordered parts, for backbones that take media and text in turns (tiny, openai),
and the left-padded batch the in-process backbones generate from."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from eald.data.sampling import Sample


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


def left_pad(embeds: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts (each (L_i, D)) as one (B, max L, D) batch padded on the left, so every row's
    last prompt token is aligned for generation, and its (B, max L) attention mask."""
    n = max(e.shape[0] for e in embeds)
    x = embeds[0].new_zeros(len(embeds), n, embeds[0].shape[-1])
    mask = torch.zeros(len(embeds), n, dtype=torch.long, device=x.device)
    for k, e in enumerate(embeds):
        x[k, n - e.shape[0] :], mask[k, n - e.shape[0] :] = e, 1
    return x, mask
