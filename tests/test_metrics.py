import pytest

from eald.metrics import compute_metrics


def rows_from_confusion(tp: int, fp: int, tn: int, fn: int) -> list[dict]:
    rows = []
    for label, pred, n in [
        ("positive", "positive", tp),
        ("negative", "positive", fp),
        ("negative", "negative", tn),
        ("positive", "negative", fn),
    ]:
        rows += [{"label": label, "prediction": pred, "status": "ok", "confidence": 7}] * n
    return rows


def test_known_confusion_matrix_exact_values():
    # 74 test videos: TP 31, FP 25, TN 12, FN 6 (the paper's Table 4 EALD-MLLM row).
    m = compute_metrics(rows_from_confusion(31, 25, 12, 6))
    assert m["accuracy"] == pytest.approx(43 / 74, abs=1e-15)
    assert m["precision"] == pytest.approx(31 / 56, abs=1e-15)
    assert m["recall"] == pytest.approx(31 / 37, abs=1e-15)
    assert m["f1"] == pytest.approx(2 * 31 / (2 * 31 + 25 + 6), abs=1e-15)
    assert round(100 * m["accuracy"], 2) == 58.11
    assert round(100 * m["f1"], 2) == 66.67
    assert round(100 * m["precision"], 2) == 55.36
    assert m["confusion"] == {"tp": 31, "fp": 25, "tn": 12, "fn": 6}
    assert (m["n"], m["n_failed"], m["score"]) == (74, 0, 7.0)


def test_failures_are_counted_never_mapped_to_a_class():
    rows = rows_from_confusion(2, 1, 1, 0)
    rows.append({"label": "positive", "prediction": None, "status": "judge_unparsable"})
    rows.append({"label": "negative", "prediction": None, "status": "media_error"})
    m = compute_metrics(rows)
    assert (m["n"], m["n_failed"]) == (4, 2)
    assert m["accuracy"] == 0.75
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == 1.0


def test_score_is_mean_confidence_and_no_positive_predictions():
    rows = [
        {"label": "positive", "prediction": "negative", "status": "ok", "confidence": 3},
        {"label": "negative", "prediction": "negative", "status": "ok", "confidence": 8},
    ]
    m = compute_metrics(rows)
    assert m["score"] == 5.5
    assert (m["precision"], m["recall"], m["f1"], m["accuracy"]) == (0.0, 0.0, 0.0, 0.5)


def test_nothing_scored_gives_nulls():
    m = compute_metrics([{"label": "positive", "prediction": None, "status": "media_error"}])
    assert m["accuracy"] is None and m["n"] == 0 and m["n_failed"] == 1
