"""Report figures (matplotlib Agg), each saved as PNG (dpi 150) and PDF.

Sized for a paper: a one-panel figure is one column wide (3.5 in) and a grid of panels at most a
text width (7 in), with 6-8 pt fonts, so a figure printed at that width, or shown 600-800 px wide
in an HTML page, reads without zooming. Lines and panels are named only by the setting keys that
differ between them; the keys they share go into a caption above the axes.

Each figure has a `*_figure` builder that returns the Figure (tests read what was drawn) and a
saver named as before that writes it and returns the written paths.
"""

from __future__ import annotations

import csv
import math
import statistics
import textwrap
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: reports are built on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from eald.data.taxonomy import NFBL_CLASSES, class_order  # noqa: E402
from eald.report.collect import Run, Setting  # noqa: E402
from eald.report.tables import matches_setting, paper_table  # noqa: E402

COLUMN_IN = 3.5  # a single column of a two-column paper
PANEL_IN = 1.75  # two panels per column, four per text width
FRACTION = "sequence.fraction"
# Font sizes are set per figure (rc_context), not globally: importing the report must not restyle
# someone else's plots in the same process. TrueType fonts in PDFs (fonttype 42): camera-ready
# checks reject Type 3 fonts.
_STYLE = {"font.size": 8, "axes.titlesize": 7, "axes.labelsize": 8, "xtick.labelsize": 7,
          "ytick.labelsize": 7, "legend.fontsize": 7, "figure.titlesize": 7,
          "pdf.fonttype": 42}  # fmt: skip
# The shared settings: quieter than the data; about 15 characters an inch.
_CAPTION = {"fontsize": 6.5, "color": "0.3"}


def _save(fig: Figure, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    with plt.rc_context(_STYLE):  # ticks are made at draw time: draw under the same style
        for p in paths:
            fig.savefig(p, dpi=150 if p.suffix == ".png" else None)
    plt.close(fig)
    return paths


def _wrap(text: str, width: int) -> str:
    """Lines of at most `width` characters, broken between words only (never mid-name)."""
    return textwrap.fill(text, width, break_long_words=False, break_on_hyphens=False)


def _short(key: str) -> str:
    return key.split(".")[0]  # `modality.name` -> `modality`, as tables.setting_names writes it


def describe(settings: list[dict[str, Any]]) -> tuple[list[str], str]:
    """A label per setting naming only the keys that vary between them, and a caption naming
    the keys they share ("" for a lone setting: the caption names it). Labels read as
    tables.setting_names writes them (`modality=va`), so a panel and its table row agree."""
    keys = list(dict.fromkeys(k for s in settings for k in s))
    varying = [k for k in keys if len({repr(s.get(k)) for s in settings}) > 1]

    def name(s: dict[str, Any], ks: list[str]) -> str:
        return ", ".join(f"{_short(k)}={s[k]}" for k in ks if s.get(k) is not None)

    labels = [name(s, varying) or ("-" if varying else "") for s in settings]
    caption = name(settings[0], [k for k in keys if k not in varying]) if settings else ""
    return labels, caption


def _grid(n: int, height: float, caption: str) -> tuple[Figure, list[Any]]:
    """n panels, two per column width, at most four a row (a text width), under a caption."""
    ncols = min(n, 4, max(2, math.ceil(math.sqrt(n))))
    nrows = math.ceil(n / ncols)
    width = max(PANEL_IN * ncols, 2.6)  # one panel: room for the caption
    text = _wrap(caption, int(15 * width))
    size = (width, height * nrows + 0.12 * (text.count("\n") + 2))  # + caption lines
    fig, axes = plt.subplots(nrows, ncols, figsize=size, squeeze=False, layout="constrained")
    fig.suptitle(text, **_CAPTION)
    for ax in axes.flat[n:]:
        ax.remove()
    return fig, list(axes.flat[:n])


def _outer_labels(ax: Any, k: int, n: int, xlabel: str, ylabel: str) -> None:
    """Axis labels on the grid's outer panels only: between rows, an x label would crowd the
    titles of the panels below."""
    ncols = ax.get_subplotspec().get_gridspec().ncols
    if k + ncols >= n:  # no panel below
        ax.set_xlabel(xlabel)
    if k % ncols == 0:
        ax.set_ylabel(ylabel)


def paper_points(
    curves: list[dict[str, Any]], table: str, others: Sequence[dict[str, Any]] = ()
) -> dict[int, list[tuple[float, float]]]:
    """The paper's accuracy (%) per sequence length (%), keyed by the index of the curve (its
    settings, sequence fraction aside) each row of `table` belongs to. A row belongs to the curve
    its `match` selects; its `prefer`, then the first curve, breaks ties (as attach_paper does).
    Not drawn: rows with no fraction or accuracy, rows matching no curve (a paper point beside a
    setting we did not run would read as a comparison), and rows whose curve misses `prefer`
    while one of `others` (the report's other settings) has it: the tables compare the row with
    that run (e.g. Table 4's EALD-MLLM, on the `part` split, is no point of a `full` curve)."""
    out: dict[int, list[tuple[float, float]]] = {}
    for pr in paper_table(table)["rows"]:
        match = dict(pr["match"])
        frac = match.pop(FRACTION, None)
        cands = [i for i, c in enumerate(curves) if matches_setting(c, match)]
        if frac is None or pr.get("accuracy") is None or not cands:
            continue
        prefer = pr.get("prefer") or {}
        best = max(cands, key=lambda i: (matches_setting(curves[i], prefer), -i))
        if not matches_setting(curves[best], prefer) and any(
            matches_setting(o, {**pr["match"], **prefer}) for o in others
        ):
            continue
        out.setdefault(best, []).append((100 * float(frac), float(pr["accuracy"])))
    return {i: sorted(pts) for i, pts in out.items()}


def sequence_figure(groups: dict[Setting, list[Run]], paper: str | None = None) -> Figure | None:
    """Accuracy (mean ± std over seeds) vs sequence length, one line per other setting, and the
    paper's points (hollow, dashed) when `paper` names a table that has them."""
    curves: dict[Setting, list[tuple[float, float, float]]] = {}
    for setting, runs in groups.items():
        d = dict(setting)
        accs = [100 * r.metrics["accuracy"] for r in runs if r.metrics.get("accuracy") is not None]
        if d.get(FRACTION) is None or not accs:
            continue
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        rest = tuple((k, v) for k, v in setting if k != FRACTION)
        curves.setdefault(rest, []).append((100 * float(d[FRACTION]), statistics.fmean(accs), sd))
    # A curve needs two lengths; lone points (e.g. baselines, run at 100 % only) are left out,
    # or their keys would lengthen every label.
    curves = {k: sorted(v) for k, v in curves.items() if len(v) > 1}
    if not curves:
        return None
    settings = [dict(k) for k in curves]
    labels, caption = describe(settings)
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(COLUMN_IN, 2.9), layout="constrained")
        colors = []
        for pts, label in zip(curves.values(), labels, strict=True):
            x, y, e = zip(*pts, strict=True)
            bars = ax.errorbar(x, y, yerr=e, marker="o", ms=3.5, lw=1.2, capsize=2.5,
                               label=label if len(curves) > 1 else "ours")  # fmt: skip
            colors.append(bars.lines[0].get_color())
        handles, names = ax.get_legend_handles_labels()
        others = [dict(k) for k in groups]
        drawn = paper_points(settings, paper, others) if paper else {}
        for i, pts in drawn.items():  # in its curve's colour, so it is clear which it matches
            px, py = zip(*pts, strict=True)
            ax.plot(px, py, ls="--", lw=1, marker="o", ms=4, mfc="none", color=colors[i],
                    gid="paper")  # fmt: skip
        if drawn:
            name = str(paper_table(paper)["title"]).split(":")[0]
            handles.append(Line2D([], [], ls="--", lw=1, marker="o", ms=4, mfc="none", color="k"))
            names.append(f"paper ({name})")
        xs = sorted({x for pts in curves.values() for x, _, _ in pts})
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.set(xlabel="Sequence length (%)", ylabel="Accuracy (%)")
        ax.set_title(_wrap(f"{caption}; mean ± std over seeds", int(15 * COLUMN_IN)), **_CAPTION)
        if len(handles) > 1:  # below the axes: inside it would hide points or the axis label
            # ~4 pt a character at 7 pt, plus the handle: as many columns as a column width holds
            ncols = max(1, min(len(names), 240 // (4 * max(map(len, names)) + 30)))
            fig.legend(handles, names, loc="outside lower center", ncols=ncols, frameon=False)
    return fig


def sequence_curve(
    groups: dict[Setting, list[Run]], out: Path, paper: str | None = None
) -> list[Path]:
    """Saves sequence_figure as sequence_curve.png/.pdf; none when no setting has two lengths."""
    fig = sequence_figure(groups, paper)
    return [] if fig is None else _save(fig, out, "sequence_curve")


def confusion_figure(rows: list[dict[str, Any]]) -> Figure | None:
    """One 2x2 matrix per setting, summed over seeds (rows: true, columns: predicted)."""
    rows = [r for r in rows if sum(r["confusion"].values())]
    if not rows:
        return None
    labels, caption = describe([r["setting"] for r in rows])
    with plt.rc_context(_STYLE):
        fig, axes = _grid(len(rows), 1.9, f"{caption}; videos summed over seeds")
        for k, (ax, r, label) in enumerate(zip(axes, rows, labels, strict=True)):
            c = r["confusion"]
            m = [[c["tn"], c["fp"]], [c["fn"], c["tp"]]]
            top = max(max(row) for row in m)
            ax.imshow(m, cmap="Blues", vmin=0, vmax=top)
            for i in range(2):
                for j in range(2):  # white text on the dark cells
                    ax.text(j, i, str(m[i][j]), ha="center", va="center", fontsize=8,
                            color="w" if m[i][j] > top / 2 else "k")  # fmt: skip
            ax.set_xticks([0, 1], ["neg", "pos"])
            ax.set_yticks([0, 1], ["neg", "pos"])
            ax.set_title(_wrap(label, 22))
            _outer_labels(ax, k, len(rows), "predicted", "true")
    return fig


def confusion_matrices(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """Saves confusion_figure as confusion.png/.pdf; none when no setting scored a video."""
    fig = confusion_figure(rows)
    return [] if fig is None else _save(fig, out, "confusion")


def confidence_figure(groups: dict[Setting, list[Run]]) -> Figure | None:
    """Judge confidence (1-10) per true class, one panel per setting with any confidences."""
    panels = []
    for setting, runs in groups.items():
        by: dict[str, list[float]] = {"positive": [], "negative": []}
        for r in runs:
            for p in r.predictions:
                if p.get("confidence") is not None and p.get("label") in by:
                    by[p["label"]].append(float(p["confidence"]))
        if by["positive"] or by["negative"]:
            panels.append((dict(setting), by))
    if not panels:
        return None
    labels, caption = describe([s for s, _ in panels])
    with plt.rc_context(_STYLE):
        fig, axes = _grid(len(panels), 1.8, f"{caption}; videos of all seeds")
        bins = [b + 0.5 for b in range(0, 11)]
        for k, (ax, (_, by), label) in enumerate(zip(axes, panels, labels, strict=True)):
            for cls, vals in by.items():
                ax.hist(vals, bins=bins, alpha=0.6, label=f"true {cls}")
            ax.set_xticks([1, 4, 7, 10])
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(_wrap(label, 22))
            _outer_labels(ax, k, len(panels), "confidence", "videos")
        # One legend for all panels, below them: in a panel it covers bars.
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside lower center", ncols=2, frameon=False)
    return fig


def confidence_hist(groups: dict[Setting, list[Run]], out: Path) -> list[Path]:
    """Saves confidence_figure as confidence_hist.png/.pdf; none without judge confidences."""
    fig = confidence_figure(groups)
    return [] if fig is None else _save(fig, out, "confidence_hist")


def nfbl_label(class_id: str) -> str:
    """`N3 touching or scratching head`; the unnamed classes already carry their id."""
    name = NFBL_CLASSES.get(class_id, "")
    return name if class_id in name else f"{class_id} {name}".strip()


def nfbl_figure(root: Path) -> Figure:
    """Counts per NFBL class from `nfbl.csv`, like the paper's Fig. 4, as horizontal bars so the
    class names read level. One colour: the paper colours three groups but never lists which
    class is in which, and guessing a mapping would look like data. The title names no path: a
    figure goes into papers and onto other machines."""
    with open(Path(root) / "nfbl.csv", newline="") as f:
        counts = Counter(row["class_id"] for row in csv.DictReader(f))
    classes = sorted(set(NFBL_CLASSES) | set(counts), key=class_order)
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(COLUMN_IN, 0.75 + 0.155 * len(classes)),
                               layout="constrained")  # fmt: skip
        pos = list(range(len(classes)))
        bars = ax.barh(pos, [counts.get(c, 0) for c in classes], height=0.7, color="tab:blue")
        ax.set_yticks(pos, [_wrap(nfbl_label(c), 32) for c in classes], fontsize=6)
        ax.set_ylim(len(classes) - 0.4, -0.6)  # N0 at the top, as a list reads; no blank rows
        ax.bar_label(bars, fontsize=6, padding=1.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no 2.5 steps
        ax.margins(x=0.12)  # room for the count at the longest bar's end
        ax.set(xlabel="annotated segments",
               title=f"NFBL classes ({sum(counts.values())} segments)")  # fmt: skip
    return fig


def nfbl_distribution(root: Path, out: Path) -> list[Path]:
    """Saves nfbl_figure as nfbl_distribution.png/.pdf."""
    return _save(nfbl_figure(root), out, "nfbl_distribution")
