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
    """An empty slot (`name: none`), e.g. `baseline=none` in a zero-shot run."""

    name: str = "none"


@dataclass
class PromptConf:
    """What the MLLM is asked. Intros are only used for modalities that are on, so an absent
    modality is never mentioned."""

    question: str = MISSING
    video_intro: str = MISSING  # {n} frames, {duration} s
    audio_intro: str = MISSING  # {n} clips of {clip_s} s
    nfbl_intro: str = MISSING  # {nfbl}


@dataclass
class TinyBackboneConf:
    """backbone=tiny: a real, small multimodal model with random weights (its text is noise)."""

    name: str = "tiny"
    seed: int = 0
    frame_size: int = 32
    hidden_size: int = 64
    layers: int = 2
    heads: int = 4
    max_new_tokens: int = 48
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0


@dataclass
class OpenAIBackboneConf:
    """backbone=openai: any OpenAI-compatible multimodal chat endpoint (vLLM, hosted APIs)."""

    name: str = "openai"
    base_url: str = MISSING
    model: str = MISSING
    api_key_env: str | None = None  # name of the env var holding the key; null: no key needed
    max_frames: int = 8
    detail: str = "low"  # image_url detail: low | high | auto
    jpeg_quality: int = 85
    send_audio: bool = True  # input_audio wav parts; off for servers without audio input
    temperature: float = 0.0
    max_tokens: int = 512
    seed: int | None = None
    timeout_s: float = 300.0
    max_retries: int = 3


@dataclass
class JudgePromptConf:
    system: str = MISSING
    user: str = MISSING  # {response} {nfbl_block}
    nfbl_block: str = MISSING  # {nfbl}


@dataclass
class OpenAIJudgeConf:
    name: str = "openai"
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-3.5-turbo-0125"
    api_key_env: str | None = "OPENAI_API_KEY"
    concurrency: int = 8
    max_retries: int = 6
    timeout_s: float = 60.0
    temperature: float = 0.0
    max_tokens: int = 64
    parse_retries: int = 2
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    seed: int | None = None
    prompt: JudgePromptConf = field(default_factory=JudgePromptConf)


@dataclass
class OfflineJudgeConf:
    """judge=offline: VADER lexicon polarity, NOT the paper's judge (for machines with no LLM)."""

    name: str = "offline"


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
    prompt: PromptConf = field(default_factory=PromptConf)
    # Polymorphic slots: each option's YAML pulls in its own schema (<name>_schema) in its
    # defaults list, so keys are still checked per component.
    backbone: Any = MISSING
    judge: Any = MISSING
    baseline: Any = MISSING
    logger: LoggerConf = field(default_factory=LoggerConf)


class ConfigError(ValueError):
    """A config value is out of range; the message names the key."""


_SCHEMAS = {
    "backbone": {"none": ComponentConf, "tiny": TinyBackboneConf, "openai": OpenAIBackboneConf},
    "judge": {"none": ComponentConf, "openai": OpenAIJudgeConf, "offline": OfflineJudgeConf},
    "baseline": {"none": ComponentConf},
}


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="eald_schema", node=EaldConf)
    for group, options in _SCHEMAS.items():
        for name, node in options.items():
            cs.store(group=group, name=f"{name}_schema", node=node)


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
