"""Typed config schemas, registered in Hydra's ConfigStore.

Values live in YAML under `conf/`; these dataclasses only fix the shape and the types, so a typo in
a key fails at start-up (Hydra names the key) and `validate` rejects out-of-range values with the
key's full name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig


class Task(str, Enum):
    zeroshot = "zeroshot"
    probe = "probe"
    deid = "deid"
    audit = "audit"
    check = "check"


@dataclass
class DatasetConf:
    name: str = MISSING
    root: str = MISSING
    videos_dir: str = "videos"
    labels_file: str = "labels.csv"
    nfbl_file: str = "nfbl.csv"
    audio_dir: str = "audio"  # optional <id>.wav files that override the video's audio track


@dataclass
class ProtocolConf:
    name: str = MISSING
    train: list[str] | None = None
    test: list[str] | None = None  # null: every video of the dataset
    split: str = "test"  # which split a run evaluates: train | test | all


@dataclass
class ModalityConf:
    name: str = MISSING
    video: bool = True
    audio: bool = True
    nfbl: bool = True


@dataclass
class SequenceConf:
    name: str = "full"
    fraction: float = 1.0


@dataclass
class SamplingConf:
    num_frames: int = 32
    audio_clip_s: float = 2.0
    audio_clips: int = 8  # Video-LLaMA's demo: ImageBind loader with clips_per_video=8
    sample_rate: int = 16000
    num_mel_bins: int = 128
    target_length: int = 204
    fbank_mean: float = -4.268
    fbank_std: float = 9.138


@dataclass
class NfblTextConf:
    header: str = MISSING
    event: str = MISSING
    counts: str = MISSING
    count_item: str = MISSING
    empty: str = MISSING
    max_events: int = 200  # longest lists are truncated (counts still cover every event)


@dataclass
class CacheConf:
    dir: str = ".cache/eald"


@dataclass
class LoggerConf:
    name: str = "none"
    project: str = "eald"
    entity: str | None = None
    group: str | None = None  # null: the sweep's name, so seeds of one sweep group together
    mode: str | None = None  # null: offline unless WANDB_MODE says otherwise
    tags: list[str] = field(default_factory=list)


@dataclass
class ComponentConf:
    """Placeholder slot for groups whose components arrive with later tasks (backbone, judge,
    baseline). `name: none` means the slot is empty."""

    name: str = "none"


@dataclass
class EaldConf:
    task: Task = Task.check
    seed: int = 0
    limit: int | None = None  # first N videos of the split, for smoke runs
    dataset: DatasetConf = field(default_factory=DatasetConf)
    protocol: ProtocolConf = field(default_factory=ProtocolConf)
    modality: ModalityConf = field(default_factory=ModalityConf)
    sequence: SequenceConf = field(default_factory=SequenceConf)
    sampling: SamplingConf = field(default_factory=SamplingConf)
    nfbl_text: NfblTextConf = field(default_factory=NfblTextConf)
    cache: CacheConf = field(default_factory=CacheConf)
    backbone: ComponentConf = field(default_factory=ComponentConf)
    judge: ComponentConf = field(default_factory=ComponentConf)
    baseline: ComponentConf = field(default_factory=ComponentConf)
    logger: LoggerConf = field(default_factory=LoggerConf)


class ConfigError(ValueError):
    """A config value is out of range; the message names the key."""


def register_configs() -> None:
    ConfigStore.instance().store(name="eald_schema", node=EaldConf)


def _check(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {why}")


def validate(cfg: DictConfig) -> None:
    """Range checks Hydra's types cannot express. Raises ConfigError naming the key."""
    f = cfg.sequence.fraction
    _check(0 < f <= 1, "sequence.fraction", f, "must satisfy 0 < fraction <= 1")
    s = cfg.sampling
    _check(s.num_frames >= 1, "sampling.num_frames", s.num_frames, "must be >= 1")
    _check(s.audio_clip_s > 0, "sampling.audio_clip_s", s.audio_clip_s, "must be > 0")
    _check(s.audio_clips >= 1, "sampling.audio_clips", s.audio_clips, "must be >= 1")
    _check(s.sample_rate >= 8000, "sampling.sample_rate", s.sample_rate, "must be >= 8000 Hz")
    _check(s.num_mel_bins >= 1, "sampling.num_mel_bins", s.num_mel_bins, "must be >= 1")
    _check(s.target_length >= 1, "sampling.target_length", s.target_length, "must be >= 1")
    _check(s.fbank_std > 0, "sampling.fbank_std", s.fbank_std, "must be > 0")
    _check(cfg.seed >= 0, "seed", cfg.seed, "must be >= 0")
    _check(cfg.limit is None or cfg.limit >= 1, "limit", cfg.limit, "must be null or >= 1")
    split = cfg.protocol.split
    _check(split in ("train", "test", "all"), "protocol.split", split, "train | test | all")
    _check(cfg.logger.name in ("none", "wandb"), "logger.name", cfg.logger.name, "none | wandb")
    mods = cfg.modality
    _check(
        mods.video or mods.audio or mods.nfbl,
        "modality",
        dict(video=mods.video, audio=mods.audio, nfbl=mods.nfbl),
        "at least one modality must be on",
    )
