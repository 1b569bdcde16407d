"""Bootstrap confidence intervals and paired exact McNemar tests.

Both work on *scored* videos (status "ok" with a prediction); failed videos are left out and
counted elsewhere (`n_failed`). With 74 test videos the 95% intervals are wide (about ±11 points
of accuracy), so differences of a few points between settings are rarely significant.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np
from scipy.stats import binom

from eald.data.taxonomy import POSITIVE
from eald.report.collect import Run, Setting


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value on the discordant pairs b, c."""
    if b + c == 0:
        return 1.0
    return float(min(1.0, 2.0 * binom.cdf(min(b, c), b + c, 0.5)))


def scored(run: Run) -> dict[str, tuple[str, str]]:
    """video_id -> (label, prediction) for the videos a run actually classified."""
    return {
        str(p["video_id"]): (p["label"], p["prediction"])
        for p in run.predictions
        if p.get("status") == "ok" and p.get("prediction") in ("positive", "negative")
    }


def _arrays(runs: Sequence[Run]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true_pos, pred_pos, mask) as (seeds, videos) arrays over the union of video ids."""
    per_run = [scored(r) for r in runs]
    ids = sorted({v for s in per_run for v in s})
    shape = (len(runs), len(ids))
    t, p, m = np.zeros(shape, bool), np.zeros(shape, bool), np.zeros(shape, bool)
    for i, s in enumerate(per_run):
        for j, vid in enumerate(ids):
            if vid in s:
                t[i, j], p[i, j], m[i, j] = s[vid][0] == POSITIVE, s[vid][1] == POSITIVE, True
    return t, p, m


def bootstrap_ci(
    runs: Sequence[Run], n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> dict[str, list[float] | None]:
    """Percentile CIs for accuracy and F1, resampling video ids (shared across seeds).

    Each resample draws video ids with replacement; each seed's metric is computed on the videos
    of that resample it scored, then averaged over seeds, so seed noise and video noise both count.
    """
    t, p, m = _arrays(runs)
    if t.shape[1] == 0 or n_boot <= 0:
        return {"accuracy": None, "f1": None}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, t.shape[1], size=(n_boot, t.shape[1]))
    # Counts via weights: w[b, j] = how often video j is drawn in resample b.
    w = np.zeros((n_boot, t.shape[1]))
    np.add.at(w, (np.repeat(np.arange(n_boot), t.shape[1]), idx.ravel()), 1.0)

    def count(a: np.ndarray) -> np.ndarray:  # (boot, seeds)
        return w @ (a & m).T.astype(float)

    tp, fp, fn = count(t & p), count(~t & p), count(t & ~p)
    n = w @ m.T.astype(float)
    correct = count(t == p)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(n > 0, correct / n, np.nan)
        denom = 2 * tp + fp + fn
        f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out: dict[str, list[float] | None] = {}
    for name, vals in (("accuracy", np.nanmean(acc, axis=1)), ("f1", f1.mean(axis=1))):
        vals = vals[~np.isnan(vals)]
        out[name] = [float(np.percentile(vals, lo)), float(np.percentile(vals, hi))]
    return out


def correctness(runs: Sequence[Run]) -> dict[str, bool]:
    """Per video: correct in a strict majority of the seeds that scored it."""
    votes: dict[str, list[bool]] = {}
    for r in runs:
        for vid, (label, pred) in scored(r).items():
            votes.setdefault(vid, []).append(label == pred)
    return {v: sum(c) * 2 > len(c) for v, c in votes.items()}


def mcnemar_pairs(groups: dict[Setting, list[Run]], labels: dict[Setting, str]) -> list[dict]:
    """Exact McNemar for every pair of settings sharing at least one scored video."""
    corr = {s: correctness(rs) for s, rs in groups.items()}
    out: list[dict[str, Any]] = []
    for s1, s2 in combinations(groups, 2):
        shared = sorted(corr[s1].keys() & corr[s2].keys())
        if not shared:
            continue
        b = sum(corr[s1][v] and not corr[s2][v] for v in shared)
        c = sum(corr[s2][v] and not corr[s1][v] for v in shared)
        out.append({"a": labels[s1], "b": labels[s2], "n_videos": len(shared),
                    "a_only_correct": b, "b_only_correct": c, "p": mcnemar_exact(b, c)})  # fmt: skip
    return out
