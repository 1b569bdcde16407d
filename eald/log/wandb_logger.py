"""wandb logger: one wandb run per job, always finished (also on error)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import wandb


class WandbLogger:
    def __init__(self, conf: Any, run_dir: Path, group: str | None, name: str) -> None:
        # Offline by default: results must never depend on network access or an account.
        mode = conf.mode or os.environ.get("WANDB_MODE") or "offline"
        self.run = wandb.init(
            project=conf.project,
            entity=conf.entity,
            group=group,
            name=name,
            tags=list(conf.tags),
            dir=str(run_dir),
            mode=mode,
            reinit="finish_previous",  # sequential sweep jobs share one process
        )

    def log_config(self, config: Mapping[str, Any]) -> None:
        self.run.config.update(dict(config), allow_val_change=True)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        flat = {k: v for k, v in metrics.items() if isinstance(v, int | float) and v is not None}
        for k, v in flat.items():
            self.run.summary[k] = v
        self.run.log(flat, step=step)

    def log_table(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        cols = list(rows[0].keys())
        data = [[_cell(r.get(c)) for c in cols] for r in rows]
        self.run.log({name: wandb.Table(columns=cols, data=data)})

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)


def _cell(v: Any) -> Any:
    # wandb tables want scalars; nested structures (window, inputs) go in as JSON text.
    return v if v is None or isinstance(v, str | int | float | bool) else json.dumps(v)
