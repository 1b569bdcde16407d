"""Judge throughput and warm-cache reruns, against a real local OpenAI-compatible server.

- throughput: 200 judge requests to a server on 127.0.0.1 that answers after 100 ms, through the
  real openai client; the peer is the ideal `200 x 0.1 s / concurrency`. Target: within 1.5x.
- warm cache: a task=zeroshot run on 8 demo videos (backbone=tiny, judge=openai on that server),
  then the same run again. Target: the rerun takes <= 2% of the cold run.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir

from eald.bench.common import fmt, table
from eald.config import register_configs
from eald.data.demo import generate_demo
from eald.io import write_json
from eald.judge import JudgeRequest
from eald.log import NoneLogger
from eald.registry import REGISTRY
from eald.tasks import run_identity
from eald.tasks.common import RunContext
from eald.tasks.zeroshot import run_zeroshot
from eald.testing.openai_server import FakeOpenAIServer

CONF = str(Path(__file__).resolve().parents[1] / "conf")
N_REQUESTS, LATENCY_S = 200, 0.1
ANSWER = '{"emotion": "positive", "score": 7}'


def _cfg(overrides: list[str]) -> Any:
    register_configs()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=overrides)


def throughput(server: FakeOpenAIServer, concurrency: int) -> dict[str, Any]:
    cfg = _cfg(["judge=openai", f"judge.base_url={server.base_url}", "judge.api_key_env=null",
                f"judge.concurrency={concurrency}"])  # fmt: skip
    judge = REGISTRY.build("judge", cfg.judge)
    reqs = [JudgeRequest(str(i), f"description {i}", None) for i in range(N_REQUESTS)]
    t0 = time.perf_counter()
    out = judge.judge(reqs)
    wall = time.perf_counter() - t0
    ideal = N_REQUESTS * LATENCY_S / concurrency
    ok = sum(j.status == "ok" for j in out)
    return {"concurrency": concurrency, "seconds": wall, "ideal_s": ideal, "ratio": wall / ideal,
            "ok": ok, "pass": wall <= 1.5 * ideal and ok == N_REQUESTS}  # fmt: skip


def warm_cache(server: FakeOpenAIServer, cache: Path) -> dict[str, Any]:
    demo = generate_demo(cache / "demo", videos=8, seconds=20.0, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _cfg(["backbone=tiny", "judge=openai", f"judge.base_url={server.base_url}",
                    "judge.api_key_env=null", f"dataset.root={demo}", f"cache.dir={tmp}/cache"])  # fmt: skip
        times, calls = [], []
        for k in range(2):
            ctx = RunContext(Path(tmp) / f"run{k}", NoneLogger(), run_identity(cfg))
            t0 = time.perf_counter()
            res = run_zeroshot(cfg, ctx)
            times.append(time.perf_counter() - t0)
            calls.append(res.metrics["calls"])
    return {"cold_s": times[0], "warm_s": times[1], "ratio": times[1] / times[0],
            "cold_calls": calls[0], "warm_calls": calls[1],
            "pass": times[1] <= 0.02 * times[0] and calls[1] == {"backbone": 0, "judge": 0}}  # fmt: skip


def run(cache: Path) -> dict[str, Any]:
    with FakeOpenAIServer(lambda n, body: ANSWER, latency_s=LATENCY_S) as server:
        rows = [throughput(server, c) for c in (8, 16, 32)]
        warm = warm_cache(server, cache)
    print(f"\njudge throughput: {N_REQUESTS} requests, server latency {LATENCY_S * 1000:.0f} ms, "
          "peer = ideal 200 x 0.1 s / concurrency\n")  # fmt: skip
    print(table(
        ["concurrency", "seconds", "ideal s", "ratio", "ok", "target <= 1.5x"],
        [[str(r["concurrency"]), fmt(r["seconds"], digits=3), fmt(r["ideal_s"], digits=3),
          fmt(r["ratio"], "x"), f"{r['ok']}/{N_REQUESTS}", "PASS" if r["pass"] else "FAIL"]
         for r in rows],
    ))  # fmt: skip
    print("\nwarm cache: task=zeroshot on 8 demo videos (tiny backbone, judge over HTTP), "
          "rerun vs cold run\n")  # fmt: skip
    print(table(
        ["run", "seconds", "backbone calls", "judge calls", "ratio", "target <= 2%"],
        [["cold", fmt(warm["cold_s"], digits=3), str(warm["cold_calls"]["backbone"]),
          str(warm["cold_calls"]["judge"]), "1.00", ""],
         ["warm", fmt(warm["warm_s"], digits=3), str(warm["warm_calls"]["backbone"]),
          str(warm["warm_calls"]["judge"]), f"{100 * warm['ratio']:.2f}%",
          "PASS" if warm["pass"] else "FAIL"]],
    ))  # fmt: skip
    summary = {"benchmark": "judge", "throughput": rows, "warm_cache": warm, "cpus": os.cpu_count()}
    write_json(cache / "judge.json", summary)
    print(f"\nresults: {cache / 'judge.json'}")
    return summary
