"""eald-run: the one Hydra runner. It validates the config, opens the logger and dispatches on
`task`. Every job writes predictions.jsonl, metrics.json and Hydra's .hydra/ copy of the config,
and returns the primary metric (accuracy) so sweepers can optimise it.

    eald-run                                  # conf/config.yaml defaults (the demo)
    eald-run -m modality=v,va,van seed=0,1    # a sweep (multirun/<time>/<job>)
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from eald.config import ConfigError, Task, register_configs, validate
from eald.data.dataset import DatasetError
from eald.log import build_logger, redact
from eald.metrics import format_table
from eald.tasks.common import EaldError, RunContext, TaskResult

log = logging.getLogger("eald")
for _noisy in ("httpx", "httpx2", "openai"):  # one INFO line per HTTP request otherwise
    logging.getLogger(_noisy).setLevel(logging.WARNING)
# conf/hydra/launcher/{joblib,submitit_slurm}.yaml are validated against the plugins' schemas of
# the same name; that is what we want, so Hydra's deprecation notice about it is noise.
warnings.filterwarnings("ignore", message="(?s).*validated against ConfigStore schema")
register_configs()


def _task(name: str) -> Callable[[DictConfig, RunContext], TaskResult]:
    # Imported lazily: a task's heavy dependencies load only when that task runs.
    if name == Task.check.value:
        from eald.tasks.check import run_check

        return run_check
    if name == Task.zeroshot.value:
        from eald.tasks.zeroshot import run_zeroshot

        return run_zeroshot
    if name == Task.deid.value:
        from eald.tasks.deid import run_deid

        return run_deid
    if name == Task.probe.value:
        from eald.tasks.probe import run_probe

        return run_probe
    if name == Task.audit.value:
        from eald.tasks.audit import run_audit

        return run_audit
    raise EaldError(
        f"task={name} is not available yet in this version of eald "
        "(available: zeroshot, check, deid, audit, probe). See the README's roadmap."
    )


def execute(cfg: DictConfig) -> float | None:
    validate(cfg)
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    group = Path(hc.sweep.dir).name if multirun else None
    job = f"{cfg.task.value}-{hc.job.num}" if multirun else f"{cfg.task.value}-{run_dir.name}"
    task_fn = _task(cfg.task.value)
    logger = build_logger(cfg, run_dir, group, job)
    exit_code = 1
    try:
        logger.log_config(redact(OmegaConf.to_container(cfg, resolve=True)))
        result = task_fn(cfg, RunContext(run_dir, logger))
        exit_code = 0
    finally:
        logger.finish(exit_code)  # one wandb run per job, finished also on error
    print(f"\n{format_table(result.metrics)}\n\nrun dir: {run_dir}")
    return result.primary


# The config tree lives at the repository root (conf/), next to the eald package.
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        return execute(cfg)
    except (ConfigError, DatasetError, EaldError) as err:
        # Expected failures: one clear line, no traceback, non-zero exit.
        log.error("%s", err)
        print(f"eald-run: error: {err}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
