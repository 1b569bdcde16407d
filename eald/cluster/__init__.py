"""Cluster runs: Hydra's submitit SLURM launcher with eald's job-state watcher and sweep summary
(`launcher.py`, `watcher.py`). README section "Running on a cluster"."""

SUMMARY = "sweep_summary.json"  # written into the sweep dir; eald-report reads it
