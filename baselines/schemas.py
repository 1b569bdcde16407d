"""Config schema of the probe baselines (the registry's `_schema_`); no heavy imports."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING


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
