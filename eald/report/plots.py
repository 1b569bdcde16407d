"""Report figures (matplotlib Agg), each saved as PNG and PDF."""

from __future__ import annotations

import csv
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: reports are built on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402

from eald.data.taxonomy import NFBL_CLASSES, class_order  # noqa: E402
from eald.report.collect import Run, Setting  # noqa: E402


def _save(fig: Any, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    fig.tight_layout()
    for p in paths:
        fig.savefig(p, dpi=150 if p.suffix == ".png" else None)
    plt.close(fig)
    return paths


def sequence_curve(groups: dict[Setting, list[Run]], out: Path) -> list[Path]:
    """Accuracy (mean ± std over seeds) vs sequence fraction, one line per other setting."""
    lines: dict[str, list[tuple[float, float, float]]] = {}
    for setting, runs in groups.items():
        d = dict(setting)
        if d.get("sequence.fraction") is None:
            continue
        accs = [100 * r.metrics["accuracy"] for r in runs if r.metrics.get("accuracy") is not None]
        if not accs:
            continue
        rest = ", ".join(f"{k}={v}" for k, v in d.items() if k != "sequence.fraction" and v)
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        lines.setdefault(rest, []).append((100 * float(d["sequence.fraction"]),
                                           statistics.fmean(accs), sd))  # fmt: skip
    if not any(len(pts) > 1 for pts in lines.values()):  # a curve needs two fractions
        return []
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, pts in lines.items():
        pts.sort()
        x, y, e = zip(*pts, strict=True)
        ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=name)
    ax.set(xlabel="Sequence length (%)", ylabel="Accuracy (%)", title="Accuracy vs sequence")
    ax.legend(fontsize=6)
    return _save(fig, out, "sequence_curve")


def confusion_matrices(rows: list[dict[str, Any]], names: list[str], out: Path) -> list[Path]:
    """One 2x2 matrix per setting, summed over seeds (rows: true, columns: predicted)."""
    rows = [(r, n) for r, n in zip(rows, names, strict=True) if sum(r["confusion"].values())]
    if not rows:
        return []
    fig, axes = plt.subplots(1, len(rows), figsize=(2.8 * len(rows), 3), squeeze=False)
    for ax, (r, name) in zip(axes[0], rows, strict=True):
        c = r["confusion"]
        m = [[c["tn"], c["fp"]], [c["fn"], c["tp"]]]
        ax.imshow(m, cmap="Blues")
        for i in range(2):
            for j in range(2):
                dark = m[i][j] > max(max(m)) / 2  # white text on the dark cells
                ax.text(j, i, str(m[i][j]), ha="center", va="center", color="w" if dark else "k")
        ax.set_xticks([0, 1], ["neg", "pos"])
        ax.set_yticks([0, 1], ["neg", "pos"])
        ax.set(xlabel="predicted", ylabel="true", title=name[:40])
        ax.title.set_fontsize(7)
    return _save(fig, out, "confusion")


def confidence_hist(groups: dict[Setting, list[Run]], names: list[str], out: Path) -> list[Path]:
    """Judge confidence (1-10) per true class, one panel per setting with any confidences."""
    panels = []
    for (_, runs), name in zip(groups.items(), names, strict=True):
        by = {"positive": [], "negative": []}  # type: dict[str, list[float]]
        for r in runs:
            for p in r.predictions:
                if p.get("confidence") is not None and p.get("label") in by:
                    by[p["label"]].append(float(p["confidence"]))
        if by["positive"] or by["negative"]:
            panels.append((name, by))
    if not panels:
        return []
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3), squeeze=False)
    bins = [b + 0.5 for b in range(0, 11)]
    for ax, (name, by) in zip(axes[0], panels, strict=True):
        for label, vals in by.items():
            ax.hist(vals, bins=bins, alpha=0.6, label=f"true {label}")
        ax.set(xlabel="confidence", ylabel="videos", title=name[:40])
        ax.title.set_fontsize(7)
        ax.legend(fontsize=6)
    return _save(fig, out, "confidence_hist")


def nfbl_distribution(root: Path, out: Path) -> list[Path]:
    """Counts per NFBL class (N0..N34) from `nfbl.csv`, like the paper's Fig. 4.

    One colour: the paper colours three groups but never lists which class is in which, and
    guessing a mapping would look like data.
    """
    with open(Path(root) / "nfbl.csv", newline="") as f:
        counts = Counter(row["class_id"] for row in csv.DictReader(f))
    classes = sorted(set(NFBL_CLASSES) | set(counts), key=class_order)
    fig, ax = plt.subplots(figsize=(9, 3.2))
    ax.bar(classes, [counts.get(c, 0) for c in classes], color="tab:blue")
    ax.set(xlabel="NFBL class", ylabel="frequency", title=f"NFBL distribution ({root})")
    ax.title.set_fontsize(8)
    ax.tick_params(axis="x", labelsize=6, rotation=90)
    return _save(fig, out, "nfbl_distribution")
