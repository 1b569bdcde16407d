"""Cluster runs against a real single-node SLURM (tests/slurm/start.sh: slurm-wlm and munge from
apt, started as root in a temporary directory, stopped by pid at the end of this module).

Skipped, with the reason, where that cannot run (not root, no apt). The cluster has no accounting
database, as many small clusters: job states come from squeue (eald.cluster.watcher)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eald.cache import StageCache
from eald.testing.openai_server import FakeOpenAIServer, answer_by_kind
from tests.conftest import REPO, run_cli

SLURM = REPO / "tests" / "slurm"
# One CPU and 2 GB a job: two jobs run at once on a 2-core machine.
LAUNCH = ["hydra/launcher=submitit_slurm", "hydra.launcher.cpus_per_task=1",
          "hydra.launcher.gpus_per_node=0", "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=10"]  # fmt: skip


@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> Iterator[dict[str, str]]:
    """SLURM_CONF for the test cluster (the environment the tests' commands run with)."""
    root = tmp_path_factory.mktemp("slurm")
    r = subprocess.run([str(SLURM / "start.sh"), str(root)], capture_output=True, text=True,
                       timeout=900)  # fmt: skip
    if r.returncode == 3:
        pytest.skip(f"no SLURM here: {r.stderr.strip()}")
    try:
        assert r.returncode == 0, f"start.sh failed:\n{r.stdout}\n{r.stderr}"
        yield {"SLURM_CONF": str(root / "slurm.conf")}
    finally:
        subprocess.run([str(SLURM / "stop.sh"), str(root)], timeout=60)
        pids = [(root / f).read_text().strip() for f in
                ("slurmctld.pid", "slurmd.pid", "munge/munged.pid") if (root / f).exists()]  # fmt: skip
        alive = [p for p in pids if Path(f"/proc/{p}").exists()]
        assert not alive, f"daemons still running after stop.sh: {alive}"


def _sweep(slurm: dict, *args: str, cwd: Path, timeout: int = 600):
    r = run_cli("-m", *args, cwd=cwd, env=slurm, timeout=timeout)
    assert "Bypassing sacct error" not in r.stdout + r.stderr  # the quiet log
    return r


def _summary(sweep: Path) -> dict:
    return json.loads((sweep / "sweep_summary.json").read_text())


def _report(sweep: Path, out: Path) -> dict:
    r = subprocess.run([sys.executable, "-m", "eald.report.cli", str(sweep), "--out", str(out),
                        "--bootstrap", "0"], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


def _results(run: Path) -> tuple[list[dict], dict]:
    """A run's answers and metrics, without what depends on timing or on the cache."""
    rows = [json.loads(x) for x in (run / "predictions.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("cache", None)
    metrics = json.loads((run / "metrics.json").read_text())
    for k in ("seconds", "stage_seconds", "cache", "calls", "backbone_loaded"):
        metrics.pop(k, None)
    return rows, metrics


def test_table3_sweep_on_slurm_equals_local(slurm, demo_root, tmp_path):
    common = ["experiment=table3_modalities", "dataset=demo", f"dataset.root={demo_root}",
              "backbone=tiny", "judge=offline", "logger=none"]  # fmt: skip
    r = _sweep(slurm, *common, *LAUNCH, f"hydra.sweep.dir={tmp_path}/slurm",
               f"cache.dir={tmp_path}/cache_slurm", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s = _summary(tmp_path / "slurm")
    assert [j["state"] for j in s["jobs"]] == ["COMPLETED"] * 3
    assert (s["completed"], s["failed"], s["job_states_from"]) == (3, 0, "squeue")
    assert "sweep summary: 3 of 3 jobs completed" in r.stdout
    local = run_cli("-m", *common, f"hydra.sweep.dir={tmp_path}/local",
                    f"cache.dir={tmp_path}/cache_local", cwd=tmp_path, timeout=600)  # fmt: skip
    assert local.returncode == 0, local.stderr[-3000:]
    for job in range(3):
        assert _results(tmp_path / "slurm" / str(job)) == _results(tmp_path / "local" / str(job))
    rep = _report(tmp_path / "slurm", tmp_path / "report")
    assert len(rep["settings"]) == 3 and rep["missing"] == []
    assert [str(x["n"]) for x in rep["settings"]] == ["4", "4", "4"]


def _has_audio(body: dict) -> bool:
    content = body["messages"][-1]["content"]
    return isinstance(content, list) and any(p.get("type") == "input_audio" for p in content)


def _wait(cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _array_task(slurm: dict, task: int) -> str:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True,
                         env={**os.environ, **slurm}, check=True).stdout.split()  # fmt: skip
    (job,) = [x for x in out if x.endswith(f"_{task}")]
    return job


def test_cancelled_job_then_rerun_computes_only_what_is_missing(slurm, demo_root, tmp_path):
    """scancel one job while it describes, rerun the same command: only the missing descriptions
    are asked for; the summary and eald-report name the cancelled job until the rerun."""
    # 4 s a description: the cancelled job still has about 12 s of work when scancel's SIGTERM
    # comes (submitit lets it run on until SIGKILL, KillWait=5 s later)
    with FakeOpenAIServer(answer_by_kind, latency_s=4.0) as srv:
        args = ["modality=v,va", "dataset=demo", f"dataset.root={demo_root}", "backbone=openai",
                f"backbone.base_url={srv.base_url}", "backbone.api_key_env=null",
                "backbone.concurrency=1", "judge=offline", "logger=none", *LAUNCH,
                f"hydra.sweep.dir={tmp_path}/sweep", f"cache.dir={tmp_path}/cache"]  # fmt: skip
        env = {**os.environ, **slurm, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"}
        with open(tmp_path / "first.log", "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "eald.run", "-m", *args], cwd=tmp_path,
                                    env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
            # job #1 (modality=va) has asked for two descriptions: it is describing
            _wait(lambda: sum(map(_has_audio, list(srv.requests))) >= 2, 180, "job #1 to describe")
            task = _array_task(slurm, 1)
            subprocess.run(["scancel", task], env=env, check=True)
            assert proc.wait(timeout=300) != 0  # a job failed: the sweep command fails
        first = (tmp_path / "first.log").read_text()
        assert "Bypassing sacct error" not in first
        s = _summary(tmp_path / "sweep")
        assert [j["state"] for j in s["jobs"]] == ["COMPLETED", "CANCELLED"]
        assert s["jobs"][1]["slurm_job_id"] == task and "sweep summary: 1 of 2" in first
        rep = _report(tmp_path / "sweep", tmp_path / "report1")
        assert [m["path"] for m in rep["missing"]] == [str(tmp_path / "sweep" / "1")]
        assert "CANCELLED" in (tmp_path / "report1" / "report.md").read_text()

        cache = StageCache(tmp_path / "cache")
        cached = cache.count("describe")
        cache.close()
        assert 4 + 1 <= cached < 8  # job 0 all, job 1 part (its second request may be in flight)
        asked = srv.count
        r = _sweep(slurm, *args, cwd=tmp_path)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert srv.count - asked == 8 - cached  # only what was missing
    m0, m1 = (json.loads((tmp_path / "sweep" / j / "metrics.json").read_text()) for j in "01")
    assert m0["cache"]["describe"] == {"hits": 4, "misses": 0}
    assert m1["cache"]["describe"] == {"hits": cached - 4, "misses": 8 - cached}
    assert [j["state"] for j in _summary(tmp_path / "sweep")["jobs"]] == ["COMPLETED"] * 2
    rep = _report(tmp_path / "sweep", tmp_path / "report2")
    assert rep["missing"] == [] and len(rep["settings"]) == 2


def _requeued(slurm: dict) -> str | None:
    """The id of a job held after requeueing itself (PENDING, reason BeginTime), if any."""
    out = subprocess.run(["squeue", "-h", "-o", "%i|%T|%r"], capture_output=True, text=True,
                         env={**os.environ, **slurm}).stdout  # fmt: skip
    held = [x.split("|")[0] for x in out.split() if x.endswith("|PENDING|BeginTime")]
    return held[0] if held else None


def test_requeue_on_sigusr2_resumes_from_the_cache(slurm, demo_root, tmp_path):
    """timeout_min=2, signal_delay_s=60: SLURM sends SIGUSR2 60 s before the limit (its time-limit
    check runs every 30 s, so 30-60 s into the job), while the job describes (4 videos, 15 s
    each, so 1-3 are done); submitit checkpoints and requeues it, and the requeued job takes the
    finished descriptions from the cache."""
    with FakeOpenAIServer(answer_by_kind, latency_s=15.0) as srv:
        args = ["modality=v", "dataset=demo", f"dataset.root={demo_root}", "backbone=openai",
                f"backbone.base_url={srv.base_url}", "backbone.api_key_env=null",
                "backbone.concurrency=1", "judge=offline", "logger=none", *LAUNCH,
                "hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=60",
                "hydra.launcher.max_num_timeout=3",
                f"hydra.sweep.dir={tmp_path}/sweep", f"cache.dir={tmp_path}/cache"]  # fmt: skip
        env = {**os.environ, **slurm, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"}
        with open(tmp_path / "sweep.log", "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "eald.run", "-m", *args], cwd=tmp_path,
                                    env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
            _wait(lambda: _requeued(slurm) is not None, 240, "the job to requeue itself")
            srv.latency_s = 0.2  # the second attempt ends long before another signal could come
            # SLURM holds a requeued job for 120 s before it may start again: release it now.
            subprocess.run(["scontrol", "update", f"JobId={_requeued(slurm)}", "StartTime=now"],
                           env=env, check=True)  # fmt: skip
            assert proc.wait(timeout=300) == 0, (tmp_path / "sweep.log").read_text()[-3000:]
        asked = srv.count
    assert "Bypassing sacct error" not in (tmp_path / "sweep.log").read_text()
    (job,) = _summary(tmp_path / "sweep")["jobs"]
    assert job["state"] == "COMPLETED"
    logs = Path(job["stderr"]).read_text() + Path(job["stdout"]).read_text()
    assert "Caught signal SIGUSR2" in logs and "Requeued job" in logs
    m = json.loads((tmp_path / "sweep" / "0" / "metrics.json").read_text())
    hits = m["cache"]["describe"]["hits"]
    assert 1 <= hits <= 3 and hits + m["cache"]["describe"]["misses"] == 4  # resumed
    assert asked <= 4 + 1  # at most the one request in flight at the signal is asked again
    assert m["n_failed"] == 0 and m["n"] == 4


def test_sharded_deid_as_an_array(slurm, tmp_path):
    """`task=deid deid.num_shards=2 'deid.shard=range(0,2)'` as a SLURM array: each video
    processed by exactly one shard; a final unsharded run finds the dataset complete."""
    import hashlib

    from eald.data.demo import generate_demo

    # as test_deid_task's local sharded sweep: faces of ~80 px that HOG finds
    src = generate_demo(tmp_path / "src", videos=3, seconds=1.5, width=640, height=480)
    out = tmp_path / "deid"
    common = ["task=deid", f"dataset.root={src}", f"deid.output_root={out}", "logger=none",
              "deid.face.detectors=[hog]", "deid.face.min_face_px=80", "deid.workers=1"]  # fmt: skip
    r = _sweep(slurm, *common, "deid.num_shards=2", "deid.shard=range(0,2)", *LAUNCH,
               f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert [j["state"] for j in _summary(tmp_path / "sweep")["jobs"]] == ["COMPLETED"] * 2
    ids = ["0", "1", "2"]
    seen: list[str] = []
    for shard in (0, 1):
        rows = [json.loads(x) for x in
                (tmp_path / "sweep" / str(shard) / "predictions.jsonl").read_text().splitlines()]  # fmt: skip
        assert all(x["status"] == "ok" and not x.get("skipped") for x in rows)
        got = sorted(x["video_id"] for x in rows)
        assert got == [
            v for v in ids if int(hashlib.sha256(v.encode()).hexdigest(), 16) % 2 == shard
        ]
        seen += got
    assert sorted(seen) == ids  # exactly once across shards
    final = run_cli(*common, f"hydra.run.dir={tmp_path}/final", cwd=tmp_path)
    assert final.returncode == 0, final.stderr[-3000:]
    d = json.loads((tmp_path / "final" / "metrics.json").read_text())["deid"]
    assert (d["videos"], d["processed"], d["skipped"], d["failed"]) == (3, 0, 3, 0)
