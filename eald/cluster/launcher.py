"""`hydra/launcher=submitit_slurm`: Hydra's submitit SLURM launcher, with three changes. (Hydra
takes launchers only from the `hydra_plugins` namespace: hydra_plugins/eald_launcher names this
class there.)

- Every job is waited for, whatever happens to the others, and the sweep ends with a summary:
  printed, and written to `<sweep dir>/sweep_summary.json` (job, overrides, SLURM job id, final
  state, run dir, error). `eald-report` shows it beside the runs without metrics.json. Hydra's
  launcher stopped at the first failed job and said nothing of the rest.
- Job states come from eald.cluster.watcher: sacct where the cluster has accounting, squeue where
  it has none (no "Bypassing sacct error" warnings, and a cancelled job is seen as cancelled
  instead of waited on for ever).
- A job that failed still fails the sweep command (non-zero exit), after the summary.

Requeue on preemption or time-out is submitit's own: the job catches SIGUSR2 `signal_delay_s`
before its limit, calls this launcher's `checkpoint` (the same job again) and requeues itself,
`max_num_timeout` times at most for time-outs; the requeued job resumes from eald's cache.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
    SlurmLauncher as HydraSlurmLauncher,
)
from omegaconf import OmegaConf, open_dict

from eald.cluster import SUMMARY
from eald.io import write_json

log = logging.getLogger("eald.cluster")


class SweepJobError(RuntimeError):
    """A job of the sweep did not finish; the message names it and why."""


class SweepSlurmLauncher(HydraSlurmLauncher):
    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        import submitit  # here: Hydra's plugin discovery imports this module at every start

        from eald.cluster.watcher import JobStateWatcher

        assert self.config is not None and len(job_overrides) > 0
        params = dict(self.params)
        executor = submitit.AutoExecutor(
            cluster="slurm", folder=params.pop("submitit_folder"),
            slurm_max_num_timeout=params.pop("max_num_timeout"),
        )  # fmt: skip
        generic = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{k if k in generic else f"slurm_{k}": v for k, v in params.items()}
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        log.info("submitit 'slurm' sweep output dir: %s", sweep_dir)
        nums = [initial_job_idx + i for i in range(len(job_overrides))]
        args = []
        for num, overrides in zip(nums, job_overrides, strict=True):
            log.info("\t#%d : %s", num, " ".join(filter_overrides(overrides)))
            args.append((list(overrides), "hydra.sweep.dir", num, f"job_id_for_{num}",
                         Singleton.get_state()))  # fmt: skip
        jobs = executor.map_array(self, *zip(*args, strict=True))

        watcher = JobStateWatcher()
        for job in jobs:
            job.watcher = watcher  # this sweep's jobs only; submitit's own watcher is left alone
            watcher.register_job(job.job_id)
        rets, rows = [], []
        for num, overrides, job in zip(nums, job_overrides, jobs, strict=True):
            ret, row = self._outcome(num, list(overrides), job, watcher)
            rets.append(ret)
            rows.append(row)
        if initial_job_idx > 0:  # a later batch of the same sweep: keep the earlier batches' rows
            rows = [*_earlier_rows(sweep_dir / SUMMARY, initial_job_idx), *rows]
        self._summarize(sweep_dir, rows, watcher)
        return rets

    def _outcome(self, num: int, overrides: list[str], job: Any, watcher: Any
                 ) -> tuple[JobReturn, dict[str, Any]]:  # fmt: skip
        """Wait for one job; its JobReturn (FAILED with a SweepJobError if it did not finish)
        and its summary row."""
        from submitit.core.utils import UncompletedJobError

        row: dict[str, Any] = {"job": num, "overrides": overrides, "slurm_job_id": job.job_id,
                               "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr)}  # fmt: skip
        try:
            ret = job.results()[0]
        except UncompletedJobError as err:
            state = watcher.get_state(job.job_id, mode="cache")
            reason = _first_lines(str(err))
            ret = JobReturn(overrides=overrides, status=JobStatus.FAILED,
                            working_dir=self._run_dir(num, overrides))  # fmt: skip
            ret.return_value = SweepJobError(f"job #{num} ({' '.join(overrides)}), SLURM job "
                                             f"{job.job_id}: {state}: {reason}")  # fmt: skip
            row.update(state=state if state not in ("COMPLETED", "UNKNOWN") else "FAILED",
                       run_dir=ret.working_dir, error=reason)  # fmt: skip
            return ret, row
        # the run dir (working_dir is the job's cwd, which eald does not change)
        run_dir = (
            OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg else None
        )
        row["run_dir"] = run_dir or self._run_dir(num, overrides)
        if ret.status == JobStatus.COMPLETED:
            row.update(state="COMPLETED", error=None)
        else:  # the task raised inside the job: Hydra captured the exception
            err = ret._return_value
            row.update(state="FAILED", error=_first_lines(f"{type(err).__name__}: {err}"))
        return ret, row

    def _run_dir(self, num: int, overrides: list[str]) -> str | None:
        """The job's run dir, resolved as the job resolves it (for jobs that never reported)."""
        assert self.hydra_context is not None and self.config is not None
        try:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            with open_dict(cfg.hydra.job):
                cfg.hydra.job.num = num
            return str(Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir))
        except Exception:  # noqa: BLE001 - only a label for the summary; the failure is reported
            return None

    def _summarize(self, sweep_dir: Path, rows: list[dict[str, Any]], w: Any) -> None:
        done = sum(r["state"] == "COMPLETED" for r in rows)
        summary = {"sweep_dir": str(sweep_dir), "jobs": rows, "completed": done,
                   "failed": len(rows) - done, "job_states_from": w.source,
                   "poll_errors": w.errors}  # fmt: skip
        write_json(sweep_dir / SUMMARY, summary)
        print(f"\nsweep summary: {done} of {len(rows)} jobs completed "
              f"(states from {w.source}; {sweep_dir / SUMMARY})")  # fmt: skip
        common = set.intersection(*(set(r["overrides"]) for r in rows))
        for r in rows:  # the overrides that tell the jobs apart, then where to look
            own = " ".join(o for o in filter_overrides(r["overrides"]) if o not in common)
            print(f"  #{r['job']:<3} {r['slurm_job_id']:<10} {r['state']:<10} {own or '-'}  "
                  f"{r['run_dir']}")  # fmt: skip
            if r["error"]:
                print("       " + r["error"].replace("\n", "\n       "))


def _earlier_rows(path: Path, before: int) -> list[dict[str, Any]]:
    try:
        jobs = json.loads(path.read_text()).get("jobs", [])
    except (OSError, ValueError):
        return []
    return [j for j in jobs if isinstance(j.get("job"), int) and j["job"] < before]


def _first_lines(text: str, head: int = 3, tail: int = 8, width: int = 3000) -> str:
    """A failure's message and the end of its traceback or error stream, without progress bars
    (tqdm lines: "nn%|")."""
    lines = [x for x in text.strip().splitlines() if x.strip() and "%|" not in x]
    if len(lines) > head + tail:
        lines = [*lines[:head], f"... ({len(lines) - head - tail} lines)", *lines[-tail:]]
    return "\n".join(lines)[:width]
