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
from omegaconf import MISSING, DictConfig, open_dict

from baselines.schemas import BaselineConf
from eald.deid.settings import DETECTOR_NAMES, FaceDeidConf
from eald.registry import REGISTRY, SLOTS, RegistryError
from eald.tasks import TASKS

# The `task` key's values: the registered tasks (eald/tasks/__init__.py).
Task = Enum("Task", {name: name for name in TASKS}, type=str)  # type: ignore[misc]


@dataclass
class DatasetConf:
    root: str | None = MISSING  # null: unset (dataset=eald reads paths.eald_root)
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
class PromptConf:
    """What the MLLM is asked. Intros are only used for modalities that are on, so an absent
    modality is never mentioned."""

    question: str = MISSING
    video_intro: str = MISSING  # {n} frames, {duration} s
    audio_intro: str = MISSING  # {n} clips of {clip_s} s
    nfbl_intro: str = MISSING  # {nfbl}


@dataclass
class DeidConf:
    output_root: str | None = None  # required by task=deid: the de-identified dataset root
    workers: int = 2  # processes across videos
    force: bool = False  # redo videos whose report matches the current settings
    shard: int | None = None  # this job's part of the dataset (0..num_shards-1); null: all
    num_shards: int = 1  # videos go to shard sha256(id) mod num_shards
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
class PipelineSectionConf:
    """task=zeroshot's stage-2 pipeline; answers never depend on it (eald.tasks.pipeline)."""

    sample_workers: int = 2  # threads decoding and computing fbanks ahead of the model
    prefetch: int = 16  # most sampled videos held in memory at once


@dataclass
class EaldConf:
    task: Task = Task.check
    seed: int = 0
    paths: dict[str, Any] = field(default_factory=dict)  # this machine's weights and data
    limit: int | None = None  # first N videos of the split, for smoke runs
    dataset: DatasetConf = field(default_factory=DatasetConf)
    protocol: ProtocolConf = field(default_factory=ProtocolConf)
    modality: ModalityConf = field(default_factory=ModalityConf)
    sequence: SequenceConf = field(default_factory=SequenceConf)
    sampling: SamplingConf = field(default_factory=SamplingConf)
    nfbl_text: NfblTextConf = field(default_factory=NfblTextConf)
    cache: CacheConf = field(default_factory=CacheConf)
    pipeline: PipelineSectionConf = field(default_factory=PipelineSectionConf)
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


def register_configs() -> None:
    """The top-level schema. Component slots (backbone, judge, baseline) are typed by
    `type_components` against the schema each option's YAML declares (eald.registry)."""
    cs = ConfigStore.instance()
    cs.store(name="eald_schema", node=EaldConf)
    # baseline=none keeps the probe keys, so baseline.* overrides of a mixed sweep fit it too.
    cs.store(group="baseline", name="probe_schema", node=BaselineConf)


def type_components(cfg: DictConfig) -> None:
    """Replace each chosen component's node by its schema-typed version: unknown keys, wrong
    types and unset required keys fail here, naming the key, before any work."""
    for slot in SLOTS:
        node = cfg.get(slot)
        if node is None or node.get("name") in (None, "none"):
            continue
        try:
            typed = REGISTRY.of(slot, node).typed(node, slot)
        except RegistryError as err:
            raise ConfigError(str(err)) from None
        with open_dict(cfg):
            cfg[slot] = typed


def _check(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {why}")


def validate(cfg: DictConfig) -> None:
    """Component schemas, then range checks Hydra's types cannot express. Raises ConfigError
    naming the key."""
    type_components(cfg)
    _check(cfg.dataset.root is not None, "dataset.root", None,
           "not set: give dataset.root=/path, or paths.eald_root in local/default.yaml")  # fmt: skip
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
    _check(fc.device in ("auto", "cpu", "cuda"), "deid.face.device", fc.device, "auto | cpu | cuda")
    _check(fc.batch >= 1, "deid.face.batch", fc.batch, "must be >= 1")
    _check(fc.encoder in ("auto", "libx264", "h264_nvenc"), "deid.face.encoder", fc.encoder,
           "auto | libx264 | h264_nvenc")  # fmt: skip
    _check(  # otherwise faces between two detections would count as lost and blur whole frames
        fc.max_lost >= fc.stride, "deid.face.max_lost", fc.max_lost,
        f"must be >= deid.face.stride ({fc.stride})",
    )  # fmt: skip
    lam = cfg.deid.lam
    _check(0 < lam <= 1.5, "deid.lam", lam, "McAdams coefficient must be in (0, 1.5]")
    _check(cfg.deid.workers >= 0, "deid.workers", cfg.deid.workers, "must be >= 0")
    n, k = cfg.deid.num_shards, cfg.deid.shard
    _check(n >= 1, "deid.num_shards", n, "must be >= 1")
    _check(k is None or 0 <= k < n, "deid.shard", k, f"must be null or in 0..{n - 1} (num_shards)")
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
