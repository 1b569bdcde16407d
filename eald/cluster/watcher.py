"""Job states for submitit's SLURM jobs on clusters with or without an accounting database.

submitit asks `sacct` for job states. Without accounting (`AccountingStorageType=
accounting_storage/none`, common on small clusters) sacct fails on every poll: submitit logs a
"Bypassing sacct error" warning each time and, worse, sees every job as UNKNOWN forever, so a job
cancelled or killed before writing its result leaves the sweep waiting for ever.

This watcher asks sacct first, as submitit does. When sacct answers that accounting is disabled
(and only then) it says so once and asks `squeue --states=all` from then on: the controller keeps
finished jobs, with their final state (COMPLETED, CANCELLED, FAILED, TIMEOUT, ...), for
MinJobAge (300 s by default), and the watcher polls more often than that. A job squeue no longer
lists at all has finished and been purged: it is reported as NOT_FOUND, which submitit treats as
done, so a job without a result is reported as failed instead of waited on.
"""

from __future__ import annotations

import logging
import subprocess
import time

from submitit.slurm.slurm import SlurmInfoWatcher

log = logging.getLogger("eald.cluster")

NO_ACCOUNTING = "accounting storage is disabled"  # sacct's message (Slurm 20-24)
SQUEUE_POLL_S = 30.0  # well under Slurm's default MinJobAge (300 s)


class JobStateWatcher(SlurmInfoWatcher):
    def __init__(self, delay_s: int = 60) -> None:
        super().__init__(delay_s=delay_s)
        self.source = "sacct"
        self.errors: list[str] = []  # failed polls other than "no accounting", for the summary

    def _ids(self) -> list[str]:
        return sorted({x.split("_")[0] for x in self._registered - self._finished})

    def update(self) -> None:
        ids = self._ids()
        if not ids:
            return
        self._num_calls += 1
        if self.source == "sacct":
            cmd = ["sacct", "-o", "JobID,State,NodeList", "--parsable2"]
            for jid in ids:
                cmd += ["-j", jid]
            out = self._run(cmd)
            if out is not None:
                self._info_dict.update(self.read_info(out))
        if self.source == "squeue":
            out = self._run(["squeue", "-h", "--states=all", "-o", "%i|%T|%N", "-j", ",".join(ids)])
            if out is not None:
                info = self.read_info("JobID|State|NodeList\n" + out)
                for job_id in self._registered - self._finished:
                    if job_id not in info:  # finished, then purged after MinJobAge
                        info[job_id] = {"JobID": job_id, "State": "NOT_FOUND", "NodeList": ""}
                self._info_dict.update(info)
        self._last_status_check = time.time()
        for job_id in self._registered - self._finished:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)

    def _run(self, cmd: list[str]) -> str | None:
        """The command's stdout; None (and the reason kept) when it failed."""
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as err:
            self._failed(f"{cmd[0]}: {err}")
            return None
        if res.returncode == 0:
            return res.stdout
        err = (res.stderr or res.stdout).strip()
        if cmd[0] == "sacct" and NO_ACCOUNTING in err:
            log.info("SLURM accounting is off (sacct: %s): job states come from squeue", err)
            self.source = "squeue"
            self._delay_s = min(self._delay_s, SQUEUE_POLL_S)
            return None
        self._failed(f"{' '.join(cmd[:2])} exited {res.returncode}: {err}")
        return None

    def _failed(self, msg: str) -> None:
        # A real error (controller down, timeout): logged once per distinct message, and kept;
        # the job states stay as last seen, as submitit does.
        if msg not in self.errors:
            self.errors.append(msg)
            log.warning("job state poll failed: %s", msg)
