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

from eald.deid.settings import DETECTOR_NAMES, FaceDeidConf
from eald.mllm.schemas import PandaGPTConf, VideoLlamaConf


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
class BaselineConf:
    """baseline=tsm|timesformer|video_swin|slowfast|beats: a frozen model + a linear head
    (task=probe, paper Table 4). The paper gives neither the head's optimiser settings nor a
    validation split; the values in conf/baseline/*.yaml are ours (see those files)."""

    name: str = MISSING
    checkpoint: str | None = None  # null: random weights (tests, CPU smoke runs); no downloads
    tiny: bool = False  # a tiny configuration of the same architecture (tests)
    num_clips: int = 4  # native-length clips spread over the window; features mean-pooled
    variant: str = "paper"  # BEATs: paper | windowed
    device: str = "auto"  # auto | cpu | cuda (feature extraction; the head trains on CPU)
    batch_size: int = 4  # clips per forward pass during extraction
    seed: int = 0  # weights seed of random-weight (checkpoint: null) models
    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 2.5
    train_batch_size: int = 16
    early_stopping: bool = False
    patience: int = 5  # epochs without a lower validation loss before stopping
    val_fraction: float = 0.2  # of each label's training ids, when early_stopping
    extract_only: bool = False  # only fill the feature cache (GPU), train later (CPU)
    feature_dir: str | None = None  # null: <cache.dir>/features


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
class DeidConf:
    output_root: str | None = None  # required by task=deid: the de-identified dataset root
    workers: int = 2  # processes across videos
    force: bool = False  # redo videos whose report matches the current settings
    lam: float = 0.8  # McAdams coefficient
    random_lambda: bool = False  # draw lambda per video from U(lambda_low, lambda_high)
    lambda_low: float = 0.5
    lambda_high: float = 0.9
    lambda_seed: int = 0
    face: FaceDeidConf = field(default_factory=FaceDeidConf)


@dataclass
class AuditConf:
    original_root: str | None = None  # null: dataset.root
    deid_root: str | None = None  # null: deid.output_root
    frames_per_video: int = 8
    face_threshold: float = 0.6  # dlib's same-identity distance
    # null: a detector family the masking did not use (mtcnn after the default masking)
    detectors: list[str] | None = None
    min_face_px: int | None = None  # null: the de-identification's own
    judge_below: float = 0.5  # originals with a face in fewer sampled frames: cannot judge


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
    deid: DeidConf = field(default_factory=DeidConf)
    audit: AuditConf = field(default_factory=AuditConf)
    # Polymorphic slots: each option's YAML pulls in its own schema (<name>_schema) in its
    # defaults list, so keys are still checked per component.
    backbone: Any = MISSING
    judge: Any = MISSING
    baseline: Any = MISSING
    logger: LoggerConf = field(default_factory=LoggerConf)


class ConfigError(ValueError):
    """A config value is out of range; the message names the key."""


_SCHEMAS = {
    "backbone": {
        "none": ComponentConf,
        "tiny": TinyBackboneConf,
        "openai": OpenAIBackboneConf,
        "video_llama": VideoLlamaConf,
        "pandagpt": PandaGPTConf,
    },
    "judge": {"none": ComponentConf, "openai": OpenAIJudgeConf, "offline": OfflineJudgeConf},
    # One schema for the five probe baselines: conf/baseline/<name>.yaml pulls `probe_schema`.
    "baseline": {"none": ComponentConf, "probe": BaselineConf},
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
    fc = cfg.deid.face
    dets = list(fc.detectors)
    _check(
        bool(dets) and set(dets) <= set(DETECTOR_NAMES) and len(set(dets)) == len(dets),
        "deid.face.detectors", dets, f"a list of distinct names from {list(DETECTOR_NAMES)}",
    )  # fmt: skip
    vw = list(fc.verify_with or [])
    _check(
        set(vw) <= set(DETECTOR_NAMES), "deid.face.verify_with", vw,
        f"a list of names from {list(DETECTOR_NAMES)}",
    )  # fmt: skip
    _check(fc.min_face_px >= 1, "deid.face.min_face_px", fc.min_face_px, "must be >= 1")
    _check(
        fc.detect_max_side is None or fc.detect_max_side >= 32, "deid.face.detect_max_side",
        fc.detect_max_side, "must be null (automatic) or >= 32",
    )  # fmt: skip
    _check(
        fc.upsample is None or fc.upsample >= 0, "deid.face.upsample", fc.upsample,
        "must be null (automatic) or >= 0",
    )  # fmt: skip
    _check(
        fc.on_no_faces in ("blur_all", "fail", "warn"), "deid.face.on_no_faces", fc.on_no_faces,
        "blur_all | fail | warn",
    )  # fmt: skip
    _check(0 <= fc.no_faces_below <= 1, "deid.face.no_faces_below", fc.no_faces_below, "in [0, 1]")
    _check(fc.verify_stride >= 1, "deid.face.verify_stride", fc.verify_stride, "must be >= 1")
    _check(fc.verify_rounds >= 1, "deid.face.verify_rounds", fc.verify_rounds, "must be >= 1")
    _check(0 < fc.verify_covered <= 1, "deid.face.verify_covered", fc.verify_covered, "in (0, 1]")
    _check(fc.stride >= 1, "deid.face.stride", fc.stride, "must be >= 1")
    _check(fc.dilate >= 1, "deid.face.dilate", fc.dilate, "must be >= 1")
    _check(
        fc.between in ("hold", "interpolate"), "deid.face.between", fc.between, "hold | interpolate"
    )
    _check(fc.mode in ("blur", "fill"), "deid.face.mode", fc.mode, "blur | fill")
    _check(  # otherwise faces between two detections would count as lost and blur whole frames
        fc.max_lost >= fc.stride, "deid.face.max_lost", fc.max_lost,
        f"must be >= deid.face.stride ({fc.stride})",
    )  # fmt: skip
    lam = cfg.deid.lam
    _check(0 < lam <= 1.5, "deid.lam", lam, "McAdams coefficient must be in (0, 1.5]")
    _check(cfg.deid.workers >= 0, "deid.workers", cfg.deid.workers, "must be >= 0")
    if cfg.get("baseline") is not None and cfg.baseline.name != "none":
        _validate_baseline(cfg.baseline)
    mods = cfg.modality
    _check(
        mods.video or mods.audio or mods.nfbl,
        "modality",
        dict(video=mods.video, audio=mods.audio, nfbl=mods.nfbl),
        "at least one modality must be on",
    )


def _validate_baseline(b: DictConfig) -> None:
    _check(b.variant in ("paper", "windowed"), "baseline.variant", b.variant, "paper | windowed")
    _check(b.device in ("auto", "cpu", "cuda"), "baseline.device", b.device, "auto | cpu | cuda")
    for key in ("num_clips", "batch_size", "epochs", "train_batch_size", "patience"):
        _check(b[key] >= 1, f"baseline.{key}", b[key], "must be >= 1")
    _check(b.lr > 0, "baseline.lr", b.lr, "must be > 0")
    _check(b.weight_decay >= 0, "baseline.weight_decay", b.weight_decay, "must be >= 0")
    w = b.warmup_epochs
    _check(0 <= w <= b.epochs, "baseline.warmup_epochs", w, "must be in [0, epochs]")
    f = b.val_fraction
    _check(0 <= f < 1, "baseline.val_fraction", f, "must satisfy 0 <= fraction < 1")
