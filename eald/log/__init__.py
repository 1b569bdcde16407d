"""Experiment loggers behind one small protocol (after torchtune's MetricLoggerInterface).

`logger=none` logs nothing beyond the run directory; `logger=wandb` mirrors config, metrics and the
per-video predictions into a wandb run (offline unless WANDB_MODE says otherwise).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from omegaconf import DictConfig

# Keys that name a credential: the whole key, or its last word after `_`/`-`, is one of these.
# So `api_key`, `hf_token`, `client_secret` are redacted, and `max_tokens`, `max_new_tokens`,
# `token_budget` are settings. `*_env` keys only name an environment variable.
_SECRET_KEY = re.compile(
    r"(^|[_-])(api_?key|secret|token|access_token|password|passwd|authorization|bearer)$", re.I
)
# Values that are credentials whatever their key (OpenAI / Hugging Face / bearer tokens).
_SECRET_VALUE = re.compile(r"^(sk-[A-Za-z0-9_-]{16,}|hf_[A-Za-z0-9]{16,}|Bearer\s+\S+)$")


class Logger(Protocol):
    def log_config(self, config: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def log_table(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None: ...

    def finish(self, exit_code: int = 0) -> None: ...


class NoneLogger:
    """logger=none: the run directory is the record."""

    def log_config(self, config: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_table(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


def redact(obj: Any) -> Any:
    """Copy of a plain config with credential-like values replaced by '<redacted>'."""
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            secret = _SECRET_KEY.search(str(k)) and not str(k).endswith("_env")
            out[k] = "<redacted>" if secret and v not in (None, "") else redact(v)
        return out
    if isinstance(obj, list | tuple):
        return [redact(v) for v in obj]
    if isinstance(obj, str) and _SECRET_VALUE.match(obj.strip()):
        return "<redacted>"
    return obj


def build_logger(cfg: DictConfig, run_dir: Path, group: str | None, job_name: str) -> Logger:
    if cfg.logger.name == "none":
        return NoneLogger()
    if cfg.logger.name == "wandb":
        from eald.log.wandb_logger import WandbLogger  # wandb is heavy: import only when chosen

        return WandbLogger(cfg.logger, run_dir, group=cfg.logger.group or group, name=job_name)
    raise ValueError(f"logger.name={cfg.logger.name!r}: expected none | wandb")


def quiet_hydra_notices() -> None:
    """Hydra's two notices that say nothing wrong, silenced in the runner and in cluster jobs."""
    # conf/hydra/launcher/{joblib,submitit_slurm}.yaml are validated against the plugins' schemas
    # of the same name; that is what we want, so Hydra's deprecation notice about it is noise.
    warnings.filterwarnings("ignore", message="(?s).*validated against ConfigStore schema")
    # ~/.config/eald (the user's config dir on the search path) is optional: its absence is normal.
    warnings.filterwarnings(
        "ignore",
        message=r"provider=hydra\.searchpath in main, path=.*/\.config/eald is not available",
    )
