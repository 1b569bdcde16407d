"""Paper metrics (eqs. 3-6) for the positive class, computed with scikit-learn.

Only rows with status "ok" and a prediction are scored. Failed rows are counted in `n_failed` and
never mapped to a class: a failure is not a guess. `n` is the number of scored videos.
All values are fractions in [0, 1] except `score`, the mean judge confidence (1-10).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
)

from eald.data.taxonomy import LABELS, POSITIVE

METRIC_KEYS = ("accuracy", "precision", "recall", "f1", "score", "n", "n_failed")


def compute_metrics(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    rows = list(rows)
    scored = [r for r in rows if r.get("status") == "ok" and r.get("prediction") in LABELS]
    failed = [r for r in rows if r.get("status") != "ok"]
    out: dict[str, Any] = {"n": len(scored), "n_failed": len(failed), "n_unscored": 0}
    out["n_unscored"] = len(rows) - len(scored) - len(failed)  # ok rows without a prediction
    if not scored:
        out.update(accuracy=None, precision=None, recall=None, f1=None, score=None)
        out["confusion"] = None
        return out
    y = [r["label"] for r in scored]
    p = [r["prediction"] for r in scored]
    kw = {"pos_label": POSITIVE, "zero_division": 0.0}
    out["accuracy"] = float(accuracy_score(y, p))
    out["precision"] = float(precision_score(y, p, **kw))
    out["recall"] = float(recall_score(y, p, **kw))
    out["f1"] = float(f1_score(y, p, **kw))
    conf = [r["confidence"] for r in scored if r.get("confidence") is not None]
    out["score"] = float(sum(conf) / len(conf)) if conf else None
    # Rows: true negative/positive; columns: predicted negative/positive.
    (tn, fp), (fn, tp) = confusion_matrix(y, p, labels=["negative", POSITIVE]).tolist()
    out["confusion"] = {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
    return out


def format_table(metrics: Mapping[str, Any]) -> str:
    """A small fixed-width table for the console (percentages, as in the paper)."""
    lines = ["metric      value"]
    if metrics.get("accuracy") is None:  # nothing was classified (check, deid, audit)
        return "\n".join([*lines, f"{'n':<11} {metrics.get('n')}",
                           f"{'n_failed':<11} {metrics.get('n_failed')}"])  # fmt: skip
    for k in ("accuracy", "f1", "precision", "recall"):
        v = metrics.get(k)
        lines.append(f"{k:<11} {'-' if v is None else f'{100 * v:6.2f} %'}")
    s = metrics.get("score")
    lines.append(f"{'score':<11} {'-' if s is None else f'{s:6.2f}'}")
    lines.append(f"{'n':<11} {metrics.get('n')}")
    lines.append(f"{'n_failed':<11} {metrics.get('n_failed')}")
    return "\n".join(lines)
