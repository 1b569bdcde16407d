"""Feature cache of the probe baselines: one `.npy` per (model, video content, window).

Layout: `<dir>/<key[:2]>/<key>.npy` (float32, (D,)) with a `<key>.json` sidecar saying what it is
(video id, window, identity); both written atomically, the .npy last, so an .npy that exists is
complete. A `<key>.err.json` records a BaselineInputError (too short for one clip, no audio):
those are deterministic in the key, and caching them keeps a warm rerun from building the model
just to fail the same video again. Media errors are not cached (they can be fixed in place).

The key is computed from the config, never from a built model, so a warm run does not even build
the backbone: everything that changes the features must therefore be in `feature_identity`.
Device and batch size are left out on purpose: features extracted on a GPU
(`baseline.extract_only=true`) are reused by a CPU training run.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from baselines import BaselineInputError
from eald.cache import cache_key
from eald.data.dataset import Video
from eald.data.media import file_fingerprint
from eald.data.sampling import Window
from eald.device import resolve_device
from eald.io import atomic_write_bytes, atomic_write_text

FEATURES_VERSION = "features-1"  # bump when the models' sampling/pooling code changes features
# Keys of BaselineConf that change features; the rest are training or run settings.
FEATURE_KEYS = ("name", "checkpoint", "tiny", "num_clips", "variant", "seed")
AUDIO_BASELINES = ("beats",)


def modality_of(conf: Any) -> str:
    """Known from the config, so a video without audio fails before the model is built."""
    return "audio" if conf.name in AUDIO_BASELINES else "video"


def feature_identity(conf: Any) -> dict[str, Any]:
    plain = OmegaConf.to_container(conf, resolve=True) if isinstance(conf, DictConfig) else conf
    ident = {k: plain.get(k) for k in FEATURE_KEYS}
    ckpt = plain.get("checkpoint")
    # Same path, new weights must miss: fingerprint the file's content when it is a local file.
    if ckpt and Path(ckpt).is_file():
        ident["checkpoint_sha"] = file_fingerprint(Path(ckpt))
    ident["version"] = FEATURES_VERSION
    return ident


def feature_key(ident: dict[str, Any], video: Video, window: Window) -> str:
    assert video.path is not None
    return cache_key({
        "stage": "probe-features",
        "baseline": ident,
        "media": file_fingerprint(video.path),
        "audio": file_fingerprint(video.audio_path) if video.audio_path else None,
        "window": window.as_dict(),
    })  # fmt: skip


class FeatureStore:
    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.hits = 0
        self.misses = 0

    def _path(self, key: str, suffix: str) -> Path:
        return self.dir / key[:2] / f"{key}{suffix}"

    def get(self, key: str) -> np.ndarray | BaselineInputError | None:
        """The cached vector, the cached input error, or None (a miss)."""
        npy, err = self._path(key, ".npy"), self._path(key, ".err.json")
        if npy.is_file():
            self.hits += 1
            return np.load(npy)
        if err.is_file():
            self.hits += 1
            return BaselineInputError(json.loads(err.read_text())["error"])
        self.misses += 1
        return None

    def put(self, key: str, vec: np.ndarray, meta: dict[str, Any]) -> None:
        vec = np.asarray(vec, dtype=np.float32)
        if vec.ndim != 1 or not np.isfinite(vec).all():
            raise ValueError(f"feature vector must be finite and 1-D, got shape {vec.shape}")
        atomic_write_text(self._path(key, ".json"), json.dumps({**meta, "dim": len(vec)}) + "\n")
        buf = io.BytesIO()
        np.save(buf, vec)
        atomic_write_bytes(self._path(key, ".npy"), buf.getvalue())

    def put_error(self, key: str, err: BaselineInputError, meta: dict[str, Any]) -> None:
        atomic_write_text(self._path(key, ".err.json"), json.dumps({**meta, "error": str(err)}))

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses}


def with_concrete_device(conf: Any) -> Any:
    """`device: auto` -> cuda or cpu here, so every model receives a concrete torch device."""
    if conf.get("device", "auto") != "auto":
        return conf
    device = resolve_device("auto")
    return (
        OmegaConf.merge(conf, {"device": device})
        if OmegaConf.is_config(conf)
        else {**conf, "device": device}
    )
