"""eald-report on hand-built run dirs: known answers for tables, statistics, CLI and wandb."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from eald.metrics import compute_metrics
from eald.report.cli import main
from eald.report.collect import collect, group
from eald.report.stats import bootstrap_ci, mcnemar_exact
from eald.report.tables import render, summarize

REPO = Path(__file__).resolve().parents[1]


def preds_from_confusion(tp: int, fp: int, tn: int, fn: int) -> list[dict]:
    spec = [("positive", "positive")] * tp + [("negative", "positive")] * fp
    spec += [("negative", "negative")] * tn + [("positive", "negative")] * fn
    return [{"video_id": str(i), "label": y, "prediction": p, "confidence": 1 + i % 10,
             "status": "ok"} for i, (y, p) in enumerate(spec)]  # fmt: skip


def make_run(path: Path, preds: list[dict] | None, seed: int = 0, **setting) -> Path:
    """A run dir as eald-run writes it; preds=None leaves out metrics.json (a crashed job)."""
    cfg = {"task": "zeroshot", "seed": seed, "dataset": {"root": "/data"},
           "protocol": {"name": "part"}, "modality": {"name": "van"},
           "sequence": {"fraction": 1.0}, "backbone": {"name": "video_llama"},
           "judge": {"name": "offline"}, "baseline": {"name": "none"}}  # fmt: skip
    for key, value in setting.items():
        cfg[key]["name" if key != "sequence" else "fraction"] = value
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    overrides = [f"seed={seed}", *(f"{k}={v}" for k, v in setting.items())]
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if preds is not None:
        (path / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
        (path / "metrics.json").write_text(json.dumps(compute_metrics(preds)))
    return path


def test_mcnemar_known_answers():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(10, 0) == 2 * 0.5**10 == 0.001953125
    assert mcnemar_exact(3, 5) == pytest.approx(0.7265625, abs=1e-12)


def test_bootstrap_known_answers(tmp_path):
    all_ok = make_run(tmp_path / "a", preds_from_confusion(5, 0, 5, 0))
    [run] = collect([all_ok])
    assert bootstrap_ci([run], 500, seed=0) == {"accuracy": [1.0, 1.0], "f1": [1.0, 1.0]}
    half = make_run(tmp_path / "b", preds_from_confusion(10, 10, 10, 10), seed=1)
    [run] = collect([half])
    ci = bootstrap_ci([run], 500, seed=3)
    assert ci["accuracy"][0] < 0.5 < ci["accuracy"][1]
    assert bootstrap_ci([run], 500, seed=3) == ci


def test_known_74_video_table(tmp_path):
    make_run(tmp_path / "r", preds_from_confusion(31, 25, 12, 6))
    md = render(summarize(group(collect([tmp_path]))), "md")
    for value in ("58.11 ± –", "66.67 ± –", "55.36 ± –", "| 74 | 0 |"):
        assert value in md


def test_two_seeds_mean_std(tmp_path):
    make_run(tmp_path / "0", preds_from_confusion(2, 0, 1, 1), seed=0)  # accuracy 75 %
    make_run(tmp_path / "1", preds_from_confusion(1, 1, 1, 1), seed=1)  # accuracy 50 %
    [row] = summarize(group(collect([tmp_path])))
    assert row["accuracy"] == 62.5
    assert row["accuracy_std"] == statistics.stdev([75.0, 50.0])
    assert f"62.50 ± {statistics.stdev([75.0, 50.0]):.2f}" in render([row], "md")


def test_duplicate_run_keeps_newest(tmp_path):
    old = make_run(tmp_path / "old", preds_from_confusion(1, 1, 1, 1))
    new = make_run(tmp_path / "new", preds_from_confusion(2, 0, 2, 0))
    os.utime(old / "metrics.json", (1, 1))
    [run] = collect([tmp_path])
    assert run.path == new.resolve()


def test_no_runs_exits_2(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no run found" in capsys.readouterr().err


def test_cli_subprocess_paper_missing_and_plots(tmp_path):
    sweep = tmp_path / "sweep"
    make_run(sweep / "0", preds_from_confusion(31, 25, 12, 6))
    make_run(sweep / "1", preds_from_confusion(20, 10, 30, 14), baseline="tsm", backbone="none")
    make_run(sweep / "2", None, baseline="beats", backbone="none")  # crashed job
    for i, frac in enumerate((0.2, 0.5)):  # a sequence study: two fractions, two seeds each
        for seed in (0, 1):
            preds = preds_from_confusion(3 + seed + i, 2, 2, 1)
            make_run(tmp_path / "seq" / f"{i}{seed}", preds, seed, sequence=frac, protocol="full")
    # Same method on the full protocol: the paper's Table 4 row must prefer the `part` run.
    make_run(tmp_path / "seq" / "full", preds_from_confusion(5, 5, 5, 5), protocol="full")
    nfbl = tmp_path / "data"
    nfbl.mkdir()
    (nfbl / "nfbl.csv").write_text(
        "video_id,start_s,end_s,class_id\n0,0,1,N9\n0,1,2,N5\n1,0,1,N9\n"
    )
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg"}
    cmd = [sys.executable, "-m", "eald.report.cli", str(sweep), str(tmp_path / "seq"),
           "--out", str(out), "--paper", "table4", "--bootstrap", "200", "--nfbl", str(nfbl)]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    row = next(line for line in res.stdout.splitlines() if line.startswith("| EALD-MLLM"))
    assert "58.11 ± – | 58.10 |" in row and "55.36 ± – | 55.35 |" in row
    assert res.stdout.count("58.10") == 1
    assert "| TSM |" in res.stdout and "not run" in res.stdout  # BEATs crashed: not run
    md = (out / "report.md").read_text()
    assert "Failed or missing jobs" in md and "baseline=beats" in md and "truncates" in md
    tex = (out / "report.tex").read_text()
    assert r"\begin{tabular}" in tex and "58.10" in tex
    summary = json.loads((out / "summary.json").read_text())
    assert [m["overrides"] for m in summary["missing"]] == [["seed=0", "baseline=beats",
                                                             "backbone=none"]]  # fmt: skip
    assert summary["mcnemar"] and all(0 <= t["p"] <= 1 for t in summary["mcnemar"])
    for name in ("sequence_curve", "confusion", "confidence_hist", "nfbl_distribution"):
        for ext in ("png", "pdf"):
            assert (out / "plots" / f"{name}.{ext}").stat().st_size > 0


def test_wandb_offline_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    make_run(tmp_path / "runs" / "0", preds_from_confusion(3, 1, 2, 1))
    out = tmp_path / "out"
    assert main([str(tmp_path / "runs"), "--out", str(out), "--wandb", "--group", "sw",
                 "--bootstrap", "50"]) == 0  # fmt: skip
    runs = list((out / "wandb").glob("offline-run-*"))
    assert runs and list(runs[0].glob("*.wandb"))


def test_settings_differing_outside_the_name_are_not_merged_and_collisions_reported(tmp_path):
    a = make_run(tmp_path / "a", preds_from_confusion(5, 0, 5, 0))
    b = make_run(tmp_path / "b", preds_from_confusion(0, 5, 0, 5))
    cfg = yaml.safe_load((b / ".hydra" / "config.yaml").read_text())
    cfg["dataset"]["root"] = "/other"  # same name, seed and everything else: another dataset
    (b / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    c = make_run(tmp_path / "c", preds_from_confusion(4, 1, 4, 1))  # a true duplicate of a
    os.utime(c / "metrics.json", (2e9, 2e9))  # the newest
    collisions: list = []
    runs = collect([tmp_path], collisions)
    rows = summarize(group(runs))
    assert sorted(r["setting"]["variant"] for r in rows) == [
        "dataset.root=/data",
        "dataset.root=/other",
    ]
    assert sorted(r["accuracy"] for r in rows) == [0.0, 80.0]  # a's twin c won; b stands alone
    assert collisions == [{"kept": str(c.resolve()), "dropped": str(a.resolve()), "seed": 0}]
    md = render(rows, "md")
    assert "| Variant |" in md and "dataset.root=/other" in md
    out = tmp_path / "rep"
    assert (
        main([str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c"), "--out", str(out)])
        == 0
    )
    text = (out / "report.md").read_text()
    assert "## Collisions (1)" in text and f"dropped `{a.resolve()}`" in text


def test_declared_identities_define_settings(tmp_path):
    """Equal configs whose runs declared different component identities (the weight files at
    the same path changed) are two settings; equal declarations of one seed are a collision."""
    ident = {"version": 1, "task": "zeroshot", "config": {"dataset": {"root": "/data"}},
             "components": {"backbone": {"kind": "video_llama", "weights": {"fingerprint": "a"}}}}  # fmt: skip
    runs = {}
    for name, fp, preds in (
        ("a", "a", (5, 0, 5, 0)),
        ("b", "b", (0, 5, 0, 5)),
        ("c", "a", (4, 1, 4, 1)),
    ):
        runs[name] = make_run(tmp_path / name, preds_from_confusion(*preds))
        ident["components"]["backbone"]["weights"]["fingerprint"] = fp
        (runs[name] / "identity.json").write_text(json.dumps(ident))
    os.utime(runs["c"] / "metrics.json", (2e9, 2e9))
    collisions: list = []
    rows = summarize(group(collect([tmp_path], collisions)))
    assert sorted(r["setting"]["variant"] for r in rows) == [
        "components.backbone.weights.fingerprint=a",
        "components.backbone.weights.fingerprint=b",
    ]
    assert sorted(r["accuracy"] for r in rows) == [0.0, 80.0]
    assert collisions == [{"kept": str(runs["c"].resolve()), "dropped": str(runs["a"].resolve()),
                           "seed": 0}]  # fmt: skip
