"""`eald-report PATH... --out DIR`: tables, statistics and plots over eald-run output dirs."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from eald.report import plots
from eald.report.collect import Run, collect, group
from eald.report.stats import bootstrap_ci, mcnemar_pairs
from eald.report.tables import PAPER_TABLES, attach_paper, render, setting_names, summarize

NOTES = """\
Notes:
- Mean ± std over seeds (std with ddof=1; "–" when one seed). n: videos scored per run;
  n_failed: failed videos summed over seeds (they are not scored and not counted as errors).
- Rounding: we round, the paper truncates. TP 31, FP 25, TN 12, FN 6 gives 58.11 / 66.67 / 55.36
  here; the paper's Table 4 prints 58.10 / 66.67 / 55.35 for it.
- 95% bootstrap CIs resample videos ({boot} resamples, seed {seed}) on scored videos only; with 74
  test videos they are wide. McNemar: exact two-sided test on per-video correctness (majority over
  seeds), settings paired on the videos both scored."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="eald-report", description=__doc__)
    ap.add_argument("paths", nargs="+", type=Path, help="run dirs and/or multirun dirs")
    ap.add_argument("--out", type=Path, help="output dir (default: report/ next to first PATH)")
    ap.add_argument("--paper", choices=PAPER_TABLES, help="put the paper's numbers beside ours")
    ap.add_argument("--format", default="md,latex", help="comma list of md, latex")
    ap.add_argument("--bootstrap", type=int, default=2000, help="resamples (0: no CIs)")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap RNG seed")
    ap.add_argument("--nfbl", type=Path, help="dataset root: plot its nfbl.csv class counts")
    ap.add_argument("--wandb", action="store_true", help="log a report run (offline by default)")
    ap.add_argument("--group", help="wandb group (e.g. the sweep name)")
    return ap.parse_args(argv)


def _missing_md(missing: list[Run]) -> str:
    if not missing:
        return ""
    lines = ["", "## Failed or missing jobs (no metrics.json)", ""]
    lines += [f"- `{r.path}`: {' '.join(r.overrides) or '(no overrides)'}" for r in missing]
    return "\n".join(lines)


def _stats_md(rows: list[dict[str, Any]], names: list[str], tests: list[dict]) -> str:
    lines = ["", "## 95% bootstrap CIs (scored videos)", "", "| Setting | Accuracy | F-score |",
             "|---|---|---|"]  # fmt: skip
    for r, name in zip(rows, names, strict=True):
        ci = r.get("ci") or {}
        cells = ["–" if ci.get(k) is None else "[{:.2f}, {:.2f}]".format(*(100 * v for v in ci[k]))
                 for k in ("accuracy", "f1")]  # fmt: skip
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    if tests:
        lines += ["", "## Paired exact McNemar tests", "",
                  "| A | B | videos | only A correct | only B correct | p |", "|---|---|---|---|---|---|"]  # fmt: skip
        lines += [f"| {t['a']} | {t['b']} | {t['n_videos']} | {t['a_only_correct']} | "
                  f"{t['b_only_correct']} | {t['p']:.4g} |" for t in tests]  # fmt: skip
    return "\n".join(lines)


def _log_wandb(out: Path, rows: list[dict[str, Any]], names: list[str], group_: str | None) -> None:
    import wandb

    os.environ.setdefault("WANDB_MODE", "offline")  # never upload unless asked via WANDB_MODE
    run = wandb.init(project="eald", job_type="report", group=group_, dir=str(out))
    cols = ["setting", "accuracy", "accuracy_std", "f1", "f1_std", "precision", "precision_std",
            "score", "score_std", "n", "n_failed"]  # fmt: skip
    data = [[name, *(r.get(c) for c in cols[1:])] for r, name in zip(rows, names, strict=True)]
    log: dict[str, Any] = {"summary": wandb.Table(columns=cols, data=data)}
    for png in sorted((out / "plots").glob("*.png")):
        log[f"plots/{png.stem}"] = wandb.Image(str(png))
    run.log(log)
    run.finish()


def _collisions_md(collisions: list[dict[str, Any]]) -> str:
    if not collisions:
        return ""
    lines = [
        "",
        "",
        f"## Collisions ({len(collisions)})",
        "",
        "Finished runs of the same setting and seed: the newest is kept in the tables.",
        "",
    ]
    lines += [f"- seed {c['seed']}: kept `{c['kept']}`, dropped `{c['dropped']}`"
              for c in collisions]  # fmt: skip
    return "\n".join(lines)


def build(
    args: argparse.Namespace, runs: list[Run], tmp: Path, collisions: list[dict[str, Any]] = ()
) -> str:
    groups = group(runs)
    missing = [r for r in runs if not r.ok]
    rows = summarize(groups)
    names = setting_names(rows)
    for r, runs_ in zip(rows, groups.values(), strict=True):
        r["ci"] = bootstrap_ci(runs_, args.bootstrap, args.seed)
    tests = mcnemar_pairs(groups, dict(zip(groups, names, strict=True)))
    shown = attach_paper([dict(r) for r in rows], args.paper) if args.paper else rows
    md = "# EALD report\n\n" + render(shown, "md", args.paper)
    md += "\n" + _stats_md(rows, names, tests) + _missing_md(missing) + _collisions_md(collisions)
    md += "\n\n" + NOTES.format(boot=args.bootstrap, seed=args.seed) + "\n"
    formats = {f.strip() for f in args.format.split(",")}
    if "md" in formats:
        (tmp / "report.md").write_text(md)
    if "latex" in formats:
        (tmp / "report.tex").write_text(render(shown, "latex", args.paper) + "\n")
    figs = tmp / "plots"
    made = plots.sequence_curve(groups, figs) + plots.confusion_matrices(rows, names, figs)
    made += plots.confidence_hist(groups, names, figs)
    if args.nfbl:
        made += plots.nfbl_distribution(args.nfbl, figs)
    summary = {"settings": rows, "names": names, "mcnemar": tests, "paper": args.paper,
               "missing": [{"path": str(r.path), "overrides": r.overrides} for r in missing],
               "collisions": list(collisions),
               "plots": [str(p.relative_to(tmp)) for p in made]}  # fmt: skip
    (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return md


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    collisions: list[dict[str, Any]] = []
    runs = collect(args.paths, collisions)
    if not runs:
        print(f"eald-report: no run found under {', '.join(map(str, args.paths))} "
              "(looked for directories holding .hydra/)", file=sys.stderr)  # fmt: skip
        return 2
    out = (args.out or args.paths[0].resolve().parent / "report").resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    # Build beside DIR, then swap it in, so a reader never sees a half-written report.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a report is meant to be read
    try:
        md = build(args, runs, tmp, collisions)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out.with_name(f".{out.name}-old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    if args.wandb:
        summary = json.loads((out / "summary.json").read_text())
        _log_wandb(out, summary["settings"], summary["names"], args.group)
    print(md.split("\n\n## ")[0])  # the main table; the rest is in report.md
    print(f"\nreport written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
