"""Group-level summary rows and their Markdown / LaTeX tables, laid out like the paper's."""

from __future__ import annotations

import math
import statistics
from importlib import resources
from typing import Any

import yaml

from eald.report.collect import SETTING_KEYS, Run, Setting

METRICS = (("accuracy", "Accuracy"), ("f1", "F-score"), ("precision", "Precision"),
           ("score", "Score"))  # fmt: skip
# Column titles as the paper words them (backbones are "MLLM", baselines are "Method").
_HEADS = {"backbone.name": "MLLM", "baseline.name": "Method", "task": "Task",
          "judge.name": "Judge", "protocol.name": "Protocol", "variant": "Variant"}  # fmt: skip
PAPER_TABLES = ("table3", "table4", "supp1", "supp2", "supp3")


def paper_table(name: str) -> dict[str, Any]:
    text = resources.files("eald.report").joinpath("paper_results.yaml").read_text()
    return yaml.safe_load(text)[name]


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def summarize(groups: dict[Setting, list[Run]]) -> list[dict[str, Any]]:
    """One row per setting: mean/std over seeds (percent for fractions), n, n_failed, confusion."""
    rows = []
    for setting, runs in groups.items():
        row: dict[str, Any] = {"setting": dict(setting), "seeds": [r.seed for r in runs],
                               "runs": [str(r.path) for r in runs]}  # fmt: skip
        for key, _ in METRICS:
            scale = 1.0 if key == "score" else 100.0
            vals = [r.metrics.get(key) for r in runs]  # type: ignore[union-attr]
            m, s = _mean_std([None if v is None else scale * v for v in vals])
            row[key], row[key + "_std"] = m, s
        ns = sorted({int(r.metrics.get("n") or 0) for r in runs})  # type: ignore[union-attr]
        # n is per run (videos scored by one seed); a range shows seeds that scored differently.
        row["n"] = str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
        row["n_failed"] = sum(int(r.metrics.get("n_failed") or 0) for r in runs)  # type: ignore
        conf = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
        for r in runs:
            for k, v in ((r.metrics or {}).get("confusion") or {}).items():
                conf[k] = conf.get(k, 0) + int(v)
        row["confusion"] = conf
        rows.append(row)
    return rows


# The table name of a setting, then what tells apart same-named settings (eald.report.collect).
LABEL_KEYS = (*SETTING_KEYS, "variant")


def _varying(rows: list[dict[str, Any]]) -> list[str]:
    return [k for k in LABEL_KEYS if len({repr(r["setting"].get(k)) for r in rows}) > 1]


def label_columns(rows: list[dict[str, Any]], tex: bool) -> tuple[list[str], list[list[str]]]:
    """Paper-style row labels: modality check marks, sequence length, MLLM, else key=value."""
    check = r"\checkmark" if tex else "✓"
    heads: list[str] = []
    cells: list[list[str]] = [[] for _ in rows]
    # Paper rows we did not run carry only their match keys, so they must not decide the layout.
    varying = _varying([r for r in rows if not r.get("missing")])
    for key in varying:
        if key == "modality.name":
            heads += ["Video", "Audio", "NFBL"]
            for c, r in zip(cells, rows, strict=True):
                name = str(r["setting"].get(key) or "")
                c += [check if ch in name else "" for ch in "van"]
        elif key == "sequence.fraction":
            heads.append("Sequence length (%)")
            for c, r in zip(cells, rows, strict=True):
                f = r["setting"].get(key)
                c.append("–" if f is None else f"{100 * float(f):g}")
        else:
            heads.append(_HEADS.get(key, key))
            for c, r in zip(cells, rows, strict=True):
                v = r["setting"].get(key)
                c.append("" if v is None and key == "variant" else str(v))
    if not varying:  # a single setting: name it fully
        heads.append("Setting")
        for c, r in zip(cells, rows, strict=True):
            c.append(", ".join(f"{k}={v}" for k, v in r["setting"].items() if v is not None))
    return heads, cells


def setting_names(rows: list[dict[str, Any]]) -> list[str]:
    """Short plain-text names for settings (stats tables, plot titles, wandb)."""
    keys = _varying(rows) or list(SETTING_KEYS)
    return [", ".join(f"{k.split('.')[0]}={r['setting'].get(k)}" for k in keys
                      if r["setting"].get(k) is not None) or "-" for r in rows]  # fmt: skip


def matches_setting(setting: dict[str, Any], match: dict[str, Any]) -> bool:
    for k, want in match.items():
        got = setting.get(k)
        if isinstance(want, float) and got is not None:
            if not math.isclose(float(got), want, abs_tol=1e-9):
                return False
        elif str(got) != str(want):
            return False
    return True


def attach_paper(rows: list[dict[str, Any]], table: str) -> list[dict[str, Any]]:
    """Adds `paper` (the reported numbers) to matching rows; unmatched paper rows become rows."""
    taken: set[int] = set()
    extra = []
    for pr in paper_table(table)["rows"]:
        cands = [i for i, r in enumerate(rows)
                 if i not in taken and not r.get("missing") and matches_setting(r["setting"], pr["match"])]  # fmt: skip
        if not cands:
            extra.append({"setting": dict(pr["match"]), "paper": pr, "paper_name": pr["name"],
                          "missing": True})  # fmt: skip
            continue
        # Among matches, the one on the paper's protocol wins (then the first, in setting order).
        prefer = pr.get("prefer") or {}
        best = max(cands, key=lambda i: (matches_setting(rows[i]["setting"], prefer), -i))
        rows[best]["paper"], rows[best]["paper_name"] = pr, pr["name"]
        taken.add(best)
    return rows + extra


def _fmt(row: dict[str, Any], key: str, tex: bool) -> str:
    if row.get("missing"):
        return "not run"
    m, s = row.get(key), row.get(key + "_std")
    if m is None:
        return "–"
    pm = r" $\pm$ " if tex else " ± "
    return f"{m:.2f}{pm}{'–' if s is None else f'{s:.2f}'}"


def render(rows: list[dict[str, Any]], fmt: str, paper: str | None = None) -> str:
    tex = fmt == "latex"
    heads, labels = label_columns(rows, tex)
    if paper:  # the paper's row name makes the match visible (and names rows we did not run)
        heads = ["Paper row", *heads]
        labels = [
            [str(r.get("paper_name", "–")), *lab] for r, lab in zip(rows, labels, strict=True)
        ]
    cols = list(heads)
    for _, title in METRICS:
        cols.append(title + (r" (\%)" if tex and title != "Score" else ""))
        if paper:
            cols.append("Paper")
    cols += ["n", "n_failed"]
    body = []
    for r, lab in zip(rows, labels, strict=True):
        cells = list(lab)
        for key, _ in METRICS:
            cells.append(_fmt(r, key, tex))
            if paper:
                v = (r.get("paper") or {}).get(key)
                cells.append("–" if v is None else f"{v:.2f}")
        cells += [str(r.get("n", "–")), str(r.get("n_failed", "–"))]
        body.append(cells)
    if tex:
        spec = "l" * len(heads) + "r" * (len(cols) - len(heads))
        lines = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(cols) + r" \\",
                 r"\midrule", *(" & ".join(c.replace("_", r"\_") for c in b) + r" \\"
                                for b in body), r"\bottomrule", r"\end{tabular}"]  # fmt: skip
        lines[2] = lines[2].replace("n_failed", r"n\_failed")
        return "\n".join(lines).replace("–", "--")  # plain ASCII dashes for any TeX engine
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(b) + " |" for b in body]
    return "\n".join(lines)
