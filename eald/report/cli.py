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
from eald.report.collect import Run, cluster_job, collect, group
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
    ap.add_argument(
        "--html",
        type=Path,
        metavar="DIR",
        help="also write the results explorer, a static site, to DIR",
    )
    ap.add_argument(
        "--no-frames",
        action="store_true",
        help="explorer without frame thumbnails (no faces from the dataset)",
    )
    ap.add_argument(
        "--thumb-cache",
        type=Path,
        metavar="DIR",
        help="thumbnail cache (default: thumbs/ in the first run's cache.dir)",
    )
    return ap.parse_args(argv)


def _missing_md(missing: list[Run]) -> str:
    if not missing:
        return ""
    lines = ["", "## Failed or missing jobs (no metrics.json)", ""]
    for r in missing:
        lines.append(f"- `{r.path}`: {' '.join(r.overrides) or '(no overrides)'}")
        if (job := cluster_job(r)) is not None:  # the cluster launcher's record of it
            lines.append(f"  - SLURM job {job['slurm_job_id']}: {job['state']}")
            if job.get("error"):
                lines.append("    ```\n" + "\n".join(f"    {x}" for x in job["error"].splitlines())
                             + "\n    ```")  # fmt: skip
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
    made = plots.sequence_curve(groups, figs, args.paper) + plots.confusion_matrices(rows, figs)
    made += plots.confidence_hist(groups, figs)
    if args.nfbl:
        made += plots.nfbl_distribution(args.nfbl, figs)
    summary = {"settings": rows, "names": names, "mcnemar": tests, "paper": args.paper,
               "missing": [{"path": str(r.path), "overrides": r.overrides, "cluster": cluster_job(r)}
                           for r in missing],
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
    if args.html and args.html.resolve() == out:
        print(f"eald-report: --html {args.html} is the report's own directory (--out): "
              "give the site a directory of its own", file=sys.stderr)  # fmt: skip
        return 2
    md = _swap_in(out, lambda tmp: build(args, runs, tmp, collisions))
    if args.html:
        site = args.html.resolve()
        stats = _swap_in(site, lambda tmp: _site(args, runs, out, tmp))
        print(f"explorer: {stats['video_pages']} video pages, {stats['compare_pages']} comparison "
              f"pages, {stats['thumbnail_sets']} frame sets ({stats['thumbnails_decoded']} decoded now, "
              f"the rest from the thumbnail cache), built in {stats['seconds']:.1f} s")  # fmt: skip
        if stats["unredacted_roots"] and not args.no_frames:
            print("WARNING: the explorer shows frames from datasets that are not de-identified "
                  f"(faces visible): {', '.join(stats['unredacted_roots'])}", file=sys.stderr)  # fmt: skip
    if args.wandb:
        summary = json.loads((out / "summary.json").read_text())
        _log_wandb(out, summary["settings"], summary["names"], args.group)
    print(md.split("\n\n## ")[0])  # the main table; the rest is in report.md
    print(f"\nreport written to {out}")
    if args.html:
        print(f"explorer written to {site / 'index.html'}")
    return 0


def _swap_in(out: Path, write: Any) -> Any:
    """`write(tmp)` into a fresh directory beside `out`, then swapped in, so a reader never sees
    a half-written report or site."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a report is meant to be read
    try:
        result = write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out.with_name(f".{out.name}-old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return result


def _site(args: argparse.Namespace, runs: list[Run], report: Path, tmp: Path) -> dict[str, Any]:
    from eald.report.site.build import build_site

    groups = group(runs)
    rows = summarize(groups)
    cache = args.thumb_cache or _run_cache(runs) / "thumbs"
    sources = sorted({str(p) for p in args.paths})
    return build_site(tmp, groups, rows, setting_names(rows), report / "plots",
                      not args.no_frames, cache, sources)  # fmt: skip


def _run_cache(runs: list[Run]) -> Path:
    """The first finished run's cache.dir (relative ones from where that run started)."""
    from eald.report.site.data import run_path

    for r in runs:
        if r.ok and (got := run_path(r, "cache.dir")) is not None:
            return got
    return Path(".cache/eald").resolve()


if __name__ == "__main__":
    sys.exit(main())
