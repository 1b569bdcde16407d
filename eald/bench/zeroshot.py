"""Stage-2 throughput of task=zeroshot (eald.tasks.pipeline), each row against its peer in the run.

- served: backbone=openai against a real local OpenAI-compatible server answering after a fixed
  0.5 s, 64 demo videos (320x240, 20 s), backbone.concurrency 8, judge=openai on the same server
  (concurrency 8). Peer: the ideal 64 x 0.5 s / 8. Targets: the describe stage <= 1.5x the ideal;
  the whole run (judge included) <= 1.3x the describe stage.
- batching: backbone=tiny, batch 8 vs batch 1 on CPU, on the same sampled and prepared inputs
  (32 videos; the pipeline prepares frames in stage 1's threads):
  videos per second of the backbone (best of 3), and identical answers. Target >= 2x.
- overlap: an in-process backbone with a fixed compute time per video, spent off the CPU as on a
  GPU (FixedTimeBackbone, batch 1), set to the measured sampling time per video, 24 videos: the
  whole describe stage vs max(decode, compute) and vs their sum. Target <= 1.2x the max.
- memory: peak RSS of whole runs (backbone=openai at 0 latency, judge=offline) on 256 vs 32
  videos, each in its own process. Target <= 1.2x.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from eald.bench.common import fmt, table
from eald.config import register_configs
from eald.data.dataset import load_dataset
from eald.data.demo import generate_demo
from eald.data.sampling import sample_video
from eald.io import write_json
from eald.log import NoneLogger
from eald.mllm import Preprocess
from eald.registry import REGISTRY, Lazy
from eald.tasks import run_identity
from eald.tasks.common import RunContext
from eald.tasks.zeroshot import run_zeroshot, sample_for_backbone

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def _cfg(overrides: list[str]) -> Any:
    register_configs()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=overrides)


def _zeroshot(cfg: Any, run_dir: Path) -> tuple[float, dict[str, Any]]:
    ctx = RunContext(run_dir, NoneLogger(), run_identity(cfg))
    t0 = time.perf_counter()
    res = run_zeroshot(cfg, ctx)
    return time.perf_counter() - t0, res.metrics


@contextmanager
def _server(latency: float) -> Iterator[str]:
    """The local OpenAI-compatible server in its own process (as a real one runs: its JSON
    parsing does not compete for this process's GIL); yields its base URL."""
    proc = subprocess.Popen([sys.executable, "-m", "eald.testing.openai_server", str(latency)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


def _decode_alone(cfg: Any, n: int) -> float:
    """Seconds to sample the first `n` videos as the run `cfg` samples them (its backbone's
    inputs), with the pipeline's own sampling threads alone."""
    ds = load_dataset(Path(cfg.dataset.root))
    vids = sorted(ds.videos, key=int)[:n]
    backbone = Lazy("backbone", cfg.backbone)
    backbone.get()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(cfg.pipeline.sample_workers) as pool:
        list(pool.map(lambda v: sample_for_backbone(backbone, ds.videos[v], cfg), vids))
    return time.perf_counter() - t0


def served(demo: Path, tmp: Path, n: int = 64, latency: float = 0.5, conc: int = 8) -> dict:
    with _server(latency) as url:
        cfg = _cfg(["backbone=openai", "backbone.api_key_env=null", f"backbone.base_url={url}",
                    f"backbone.concurrency={conc}", "judge=openai", "judge.api_key_env=null",
                    f"judge.base_url={url}", f"judge.concurrency={conc}", f"limit={n}",
                    f"dataset.root={demo}", f"cache.dir={tmp}/served"])  # fmt: skip
        decode = _decode_alone(cfg, n)  # stage 1 alone here: a floor for stage 2 too
        wall, m = _zeroshot(cfg, tmp / "served_run")
    ideal = n * latency / conc
    d, whole = m["stage_seconds"]["describe"], m["stage_seconds"]["judge"]
    return {"videos": n, "latency_s": latency, "concurrency": conc, "ideal_s": ideal,
            "decode_alone_s": decode, "describe_vs_decode": d / decode, "describe_s": d, "whole_s": whole, "wall_s": wall, "calls": m["calls"],
            "describe_ratio": d / ideal, "whole_ratio": whole / d,
            "pass_describe": d <= 1.5 * ideal, "pass_whole": whole <= 1.3 * d}  # fmt: skip


def _samples(demo: Path, n: int, cfg: Any) -> list:
    ds = load_dataset(demo)
    vids = sorted(ds.videos, key=int)[:n]
    return [sample_video(ds.videos[v], cfg) for v in vids]


def batching(demo: Path, n: int = 32) -> dict:
    cfg = _cfg(["backbone=tiny"])
    # prepared as the pipeline prepares them, in stage 1's threads: this row times the model
    prep = REGISTRY.build("backbone", cfg.backbone).prepare
    samples = [prep(s) for s in _samples(demo, n, cfg)]
    out, speed = {}, {}
    for bs in (1, 8):
        bb = REGISTRY.build(
            "backbone", _cfg(["backbone=tiny", f"backbone.batch_size={bs}"]).backbone
        )
        bb.describe(samples[:bs], cfg.prompt)  # warm-up
        best = float("inf")
        for _ in range(3):  # best of 3: a timing's noise only ever adds time
            t0 = time.perf_counter()
            out[bs] = bb.describe(samples, cfg.prompt)
            best = min(best, time.perf_counter() - t0)
        speed[bs] = n / best
    ratio = speed[8] / speed[1]
    return {"videos": n, "videos_per_s_batch1": speed[1], "videos_per_s_batch8": speed[8],
            "ratio": ratio, "identical": out[1] == out[8],
            "pass": ratio >= 2 and out[1] == out[8]}  # fmt: skip


class FixedTimeBackbone:
    """The overlap row's model: takes the sampled inputs as an in-process model does (frames,
    fbank, NFBL), then spends exactly `compute_s` per video off the CPU, as a GPU forward pass
    does; answers name the video."""

    name = "fixed_time"
    deterministic = True

    def __init__(self, conf: Any) -> None:
        self.compute_s = float(conf.compute_s)
        self.preprocess = Preprocess(None, None, None, None, None)

    def identity(self) -> dict[str, Any]:
        return fixed_time_identity(self)

    def describe(self, samples: list, prompt: Any) -> list[str]:
        time.sleep(self.compute_s * len(samples))
        return [f"fixed-time answer for video {s.video_id}" for s in samples]


def fixed_time_identity(conf: Any) -> dict[str, Any]:
    return {"kind": "fixed_time", "compute_s": float(conf.compute_s), "deterministic": True}


def overlap(demo: Path, tmp: Path, n: int = 24) -> dict:
    cfg = _cfg(["judge=offline", f"limit={n}", f"dataset.root={demo}",
                f"cache.dir={tmp}/overlap"])  # fmt: skip
    with open_dict(cfg):
        cfg.backbone = OmegaConf.create({
            "name": "fixed_time", "_component_": f"{__name__}:FixedTimeBackbone",
            "_identity_": f"{__name__}:fixed_time_identity", "compute_s": 0.0,
            "batch_size": 1,
        })  # fmt: skip
    decode = _decode_alone(cfg, n)
    cfg.backbone.compute_s = round(decode / n, 4)  # compute per video = decode: the hardest case
    _, m = _zeroshot(cfg, tmp / "overlap_run")
    compute = n * cfg.backbone.compute_s
    whole = m["stage_seconds"]["describe"]
    best = max(decode, compute)
    return {"videos": n, "decode_s": decode, "compute_s": compute, "whole_s": whole,
            "ratio_to_max": whole / best, "ratio_to_sum": whole / (decode + compute),
            "pass": whole <= 1.2 * best}  # fmt: skip


def _hwm_mib() -> float:
    """This process's peak RSS (VmHWM). Not ru_maxrss: Linux keeps that across execve, so a
    child would start from its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # no /proc: best effort


def _peak_child(demo: str, n: int, tmp: str) -> None:
    """In a fresh process: one whole run on `n` videos; prints the peak RSS (MiB) as JSON."""
    before = _hwm_mib()  # imports, config
    with _server(0.0) as url:
        cfg = _cfg(["backbone=openai", "backbone.api_key_env=null", f"backbone.base_url={url}",
                    "judge=offline", f"limit={n}", f"dataset.root={demo}", f"cache.dir={tmp}/c{n}"])  # fmt: skip
        _, m = _zeroshot(cfg, Path(tmp) / f"peak{n}")
    peak = _hwm_mib()
    print(json.dumps({"videos": n, "peak_mib": peak, "before_run_mib": before, "n": m["n"]}))


def memory(demo: Path, tmp: Path) -> dict:
    res = {}
    for n in (32, 256):
        code = f"from eald.bench.zeroshot import _peak_child; _peak_child({str(demo)!r}, {n}, {str(tmp)!r})"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, "WANDB_MODE": "disabled"}, check=True)  # fmt: skip
        res[n] = json.loads(out.stdout.strip().splitlines()[-1])
    ratio = res[256]["peak_mib"] / res[32]["peak_mib"]
    return {"peak_mib_32": res[32]["peak_mib"], "peak_mib_256": res[256]["peak_mib"],
            "before_run_mib": res[32]["before_run_mib"],
            "ratio": ratio, "pass": ratio <= 1.2 and res[256]["n"] == 256}  # fmt: skip


def run(cache: Path) -> dict[str, Any]:
    demo64 = generate_demo(Path(cache) / "zeroshot_demo", videos=64, seconds=20.0, seed=0)
    demo256 = generate_demo(Path(cache) / "zeroshot_demo256", videos=256, seconds=4.0, seed=0)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        print("  served (openai backbone, 0.5 s latency)", flush=True)
        s = served(demo64, tmp)
        print("  batching (tiny, batch 8 vs 1)", flush=True)
        b = batching(demo64)
        print("  decode overlap", flush=True)
        o = overlap(demo64, tmp)
        print("  peak memory (256 vs 32 videos)", flush=True)
        mem = memory(demo256, tmp)
    summary = {"benchmark": "zeroshot", "served": s, "batching": b, "overlap": o, "memory": mem,
               "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None}  # fmt: skip
    show(summary)
    write_json(Path(cache) / "zeroshot.json", summary)
    return summary


def show(s: dict[str, Any]) -> None:
    sv, b, o, m = s["served"], s["batching"], s["overlap"], s["memory"]
    ok = lambda p: "PASS" if p else "FAIL"  # noqa: E731
    print("\nzeroshot stage 2 (ratios within this run)\n")
    print(table(["work", "measured", "peer", "ratio", "target", ""], [
        [f"describe, openai, {sv['videos']} videos, conc {sv['concurrency']}",
         fmt(sv["describe_s"], " s"), f"ideal {fmt(sv['ideal_s'], ' s')}",
         fmt(sv["describe_ratio"], "x"), "<= 1.5x", ok(sv["pass_describe"])],
        ["  the same vs stage 1 alone", fmt(sv["describe_s"], " s"),
         f"sampling alone {fmt(sv['decode_alone_s'], ' s')}", fmt(sv["describe_vs_decode"], "x"),
         "(context)", ""],
        ["whole run incl. judge", fmt(sv["whole_s"], " s"), f"describe {fmt(sv['describe_s'], ' s')}",
         fmt(sv["whole_ratio"], "x"), "<= 1.3x", ok(sv["pass_whole"])],
        [f"tiny batch 8 vs 1, {b['videos']} videos", fmt(b["videos_per_s_batch8"], " v/s"),
         f"batch 1 {fmt(b['videos_per_s_batch1'], ' v/s')}", fmt(b["ratio"], "x"),
         ">= 2x, same answers", ok(b["pass"])],
        [f"decode overlap, {o['videos']} videos", fmt(o["whole_s"], " s"),
         f"max(decode {fmt(o['decode_s'])}, compute {fmt(o['compute_s'])})",
         fmt(o["ratio_to_max"], "x"), "<= 1.2x", ok(o["pass"])],
        ["peak memory, 256 vs 32 videos", fmt(m["peak_mib_256"], " MiB"),
         f"{fmt(m['peak_mib_32'], ' MiB')} (before the run {fmt(m['before_run_mib'], ' MiB')})", fmt(m["ratio"], "x"), "<= 1.2x", ok(m["pass"])],
    ]))  # fmt: skip
