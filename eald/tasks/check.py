"""task=check: validate a dataset and sample every video of the split exactly as a model would
receive it. Every problem is reported at once; any problem makes the run exit non-zero.

Until a model is chosen, this is also what `make demo` runs: each row of predictions.jsonl shows
the window, the frame indices and times, the audio clips and the NFBL text a backbone would get.
"""

from __future__ import annotations

import time

from omegaconf import DictConfig
from tqdm import tqdm

from eald.data.dataset import Problem
from eald.io import write_json
from eald.tasks.common import (
    EaldError,
    RunContext,
    TaskResult,
    iter_samples,
    load_split,
    write_outputs,
)


def run_check(cfg: DictConfig, ctx: RunContext) -> TaskResult:
    t0 = time.perf_counter()
    ds, ids, missing = load_split(cfg)
    # Report problems anywhere in the dataset, not only in the split: check is about the data.
    problems = list(ds.problems) + missing
    bad_ids = {p.video_id for p in problems}  # already reported by the loader
    rows = []
    for row, sample in tqdm(iter_samples(cfg, ds, ids), total=len(ids), desc="check", unit="video"):
        if sample is not None:
            row["inputs"] = sample.summary()
        elif row["status"] == "media_error" and row["video_id"] not in bad_ids:
            problems.append(Problem(row["video_id"], row["error"], row["video_id"]))
        rows.append(row)
    metrics = write_outputs(ctx, rows)
    report = {
        "dataset": str(ds.root),
        "videos": len(ds.videos),
        "split": cfg.protocol.split,
        "checked": len(ids),
        "problems": [str(p) for p in problems],
        "seconds": round(time.perf_counter() - t0, 3),
    }
    write_json(ctx.run_dir / "check.json", report)
    _print(rows, report)
    if problems:
        raise EaldError(
            f"check failed: {len(problems)} problem(s) in {ds.root} (listed above and in "
            f"{ctx.run_dir / 'check.json'})"
        )
    return TaskResult(rows, metrics, problems)


def _print(rows: list[dict], report: dict) -> None:
    print(f"\n{'video':>8} {'label':>9} {'status':>12} {'window (s)':>17} frames  clips  nfbl")
    for r in rows:
        inp = r.get("inputs", {})
        w = r.get("window")
        win = f"{w['start_s']:7.2f}-{w['end_s']:7.2f}" if w else "-"
        nf = len(inp.get("frame_indices", []))
        nc = len(inp.get("audio_clips", []))
        nfbl = inp.get("nfbl_text", "")
        nev = max(0, len(nfbl.splitlines()) - 2) if nfbl else 0
        print(
            f"{r['video_id']:>8} {str(r['label']):>9} {r['status']:>12} {win:>17} {nf:6d} {nc:6d} {nev:5d}"
        )
    print(f"\n{report['checked']} videos checked in {report['seconds']} s; "
          f"{len(report['problems'])} problem(s).")  # fmt: skip
    for p in report["problems"]:
        print(f"  PROBLEM {p}")
