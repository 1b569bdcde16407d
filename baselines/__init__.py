"""Supervised linear-probe baselines (paper Table 4): SlowFast, TSM, TimeSformer, Video-Swin
(Kinetics-400) and BEATs (AudioSet), frozen, with a linear head trained on their features.

A baseline is a small protocol: it names its modality, states everything that changes its
features (`identity`, used as the feature-cache key), and turns one video's sequence window into
one feature vector. Heavy libraries (mmaction2, pytorchvideo) load only for the chosen model.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class BaselineInputError(ValueError):
    """A video this baseline cannot use (too short for one clip, no audio): a per-video status."""


class Baseline(Protocol):
    name: str
    modality: str  # "video" | "audio"

    def identity(self) -> dict[str, Any]:
        """Model, config, checkpoint fingerprint, input sampling and code version."""
        ...

    def features(self, video: Any, window: Any) -> np.ndarray:
        """One float32 feature vector (D,) for `video` (eald.data.dataset.Video) over `window`
        (eald.data.sampling.Window). Raises BaselineInputError or eald MediaError."""
        ...
