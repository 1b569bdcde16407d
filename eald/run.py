"""eald-run: the one Hydra runner. It validates the config, opens the logger and dispatches on
`task`. Every job writes predictions.jsonl, metrics.json and Hydra's .hydra/ copy of the config,
and returns the primary metric (accuracy) so sweepers can optimise it.

    eald-run                                  # eald/conf/config.yaml defaults (the demo)
    eald-run -m modality=v,va,van seed=0,1    # a sweep (multirun/<time>/<job>)
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from eald.config import ConfigError, register_configs, validate
from eald.io import write_json
from eald.log import build_logger, quiet_hydra_notices, redact
from eald.registry import REGISTRY, RegistryError, load
from eald.tasks import run_identity

if TYPE_CHECKING:
    from eald.tasks.common import RunContext, TaskResult

log = logging.getLogger("eald")
for _noisy in ("httpx", "httpx2", "openai"):  # one INFO line per HTTP request otherwise
    logging.getLogger(_noisy).setLevel(logging.WARNING)
quiet_hydra_notices()
register_configs()


def _task(name: str) -> Callable[[DictConfig, RunContext], TaskResult]:
    # Imported lazily: a task's heavy dependencies load only when that task runs.
    return load(REGISTRY.get("task", name).target)


def execute(cfg: DictConfig) -> float | None:
    validate(cfg)
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    group = Path(hc.sweep.dir).name if multirun else None
    job = f"{cfg.task.value}-{hc.job.num}" if multirun else f"{cfg.task.value}-{run_dir.name}"
    from eald.metrics import format_table  # here, not at the top: `--help` loads no torch
    from eald.tasks.common import RunContext

    task_fn = _task(cfg.task.value)
    try:
        identity = run_identity(cfg)
    except ValueError as err:  # e.g. weight paths that do not exist
        raise ConfigError(str(err)) from err
    write_json(run_dir / "identity.json", identity)  # what eald-report groups runs by
    logger = build_logger(cfg, run_dir, group, job)
    exit_code = 1
    try:
        logger.log_config(redact(OmegaConf.to_container(cfg, resolve=True)))
        result = task_fn(cfg, RunContext(run_dir, logger, identity))
        exit_code = 0
    finally:
        logger.finish(exit_code)  # one wandb run per job, finished also on error
    print(f"\n{format_table(result.metrics)}\n\nrun dir: {run_dir}")
    return result.primary


# The config tree ships inside the package (eald/conf; `conf` at the repository root links to
# it), so an installed wheel runs as a checkout does.
CONF_DIR = str(Path(__file__).resolve().parent / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    from eald.data.dataset import DatasetError
    from eald.tasks.common import EaldError

    try:
        return execute(cfg)
    except (ConfigError, DatasetError, EaldError, RegistryError) as err:
        # Expected failures: one clear line, no traceback, non-zero exit.
        log.error("%s", err)
        print(f"eald-run: error: {err}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
