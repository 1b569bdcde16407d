"""`eald-report`: tables, statistics and plots over `eald-run` output directories.

Collects single runs and multirun sweeps (any directory holding `.hydra/`), merges them, groups
runs into *settings* (task, protocol, modality, sequence fraction, backbone, judge, baseline) and
aggregates seeds as mean ± std (ddof=1). It writes `report.md`, `report.tex`, `summary.json` and
`plots/` and can place the paper's numbers (`paper_results.yaml`) beside ours (`--paper`).

Rounding note: we round to two decimals, the paper truncates. The 74-video part-protocol test with
TP 31, FP 25, TN 12, FN 6 gives accuracy 58.11, F-score 66.67 and precision 55.36 here, while the
paper's Table 4 prints 58.10 / 66.67 / 55.35 for the same confusion matrix.

Statistics (`stats.py`) are computed on scored videos only (failed videos are counted in
`n_failed`, not as errors); with 74 test videos the bootstrap intervals are wide.
"""
