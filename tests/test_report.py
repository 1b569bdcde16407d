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
from matplotlib.image import imread
from matplotlib.text import Text

from eald.metrics import compute_metrics
from eald.report import plots
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


def _sequence_groups(root: Path) -> dict:
    """Two modalities x two lengths x two seeds (full protocol), and a baseline run at 100 %."""
    for mod, tp in (("va", 2), ("van", 3)):
        for frac in (0.2, 0.5):
            for seed in (0, 1):
                make_run(root / f"{mod}-{frac}-{seed}", preds_from_confusion(tp + seed, 2, 2, 1),
                         seed, modality=mod, sequence=frac, protocol="full")  # fmt: skip
    make_run(root / "tsm", preds_from_confusion(3, 1, 3, 1), baseline="tsm", backbone="none")
    return group(collect([root]))


def _assert_readable(fig) -> None:
    """Everything drawn lies inside the figure (nothing clipped) and no two titles overlap."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    drawn = fig.get_tightbbox(r)  # inches, of what was drawn (ticks in view, titles, legends)
    w, h = fig.get_size_inches()
    assert drawn.x0 >= -0.01 and drawn.y0 >= -0.01 and drawn.x1 <= w + 0.01 and drawn.y1 <= h + 0.01
    titles = [ax.title.get_window_extent(r) for ax in fig.axes if ax.get_title()]
    assert not any(a.overlaps(b) for i, a in enumerate(titles) for b in titles[i + 1 :])


def test_describe_names_by_what_varies():
    a = {"task": "zeroshot", "modality.name": "va", "backbone.name": "video_llama", "variant": None}
    b = {**a, "modality.name": "van"}
    assert plots.describe([a, b]) == (["modality=va", "modality=van"],
                                      "task=zeroshot, backbone=video_llama")  # fmt: skip
    assert plots.describe([a]) == ([""], "task=zeroshot, modality=va, backbone=video_llama")


def test_paper_points_follow_the_matching_curve():
    va = {"task": "zeroshot", "protocol.name": "full", "modality.name": "va",
          "backbone.name": "video_llama"}  # fmt: skip
    van = {**va, "modality.name": "van"}
    assert plots.paper_points([va, van], "supp1") == {
        1: [(20.0, 54.25), (50.0, 55.27), (70.0, 56.72), (100.0, 58.54)]
    }
    assert plots.paper_points([va, van], "table4") == {1: [(100.0, 58.10)]}  # EALD-MLLM only
    panda = {**van, "backbone.name": "pandagpt"}
    assert plots.paper_points([van, panda], "supp2") == {0: [(100.0, 58.54)], 1: [(100.0, 64.0)]}
    assert plots.paper_points([va], "supp1") == {}  # no paper point beside a setting not in it
    # Table 4 is on the `part` split: with a `part` run in the report (a lone point, no curve),
    # its number is compared with that run, not drawn on the `full` curve.
    part = {**van, "protocol.name": "part", plots.FRACTION: 1.0}
    assert plots.paper_points([van], "table4", [part]) == {}


def test_sequence_curve_labels_caption_error_bars_and_paper(tmp_path):
    groups = _sequence_groups(tmp_path / "runs")
    fig = plots.sequence_figure(groups, "supp1")
    ax = fig.axes[0]
    [legend] = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "modality=va",
        "modality=van",
        "paper (Supp. Table 1)",
    ]
    caption = ax.get_title().replace("\n", " ")
    assert "protocol=full" in caption and "baseline=none" in caption
    assert ".name" not in caption and "modality" not in caption and "tsm" not in caption
    curves = {c.get_label(): c for c in ax.containers}
    van = curves["modality=van"]
    assert list(van.lines[0].get_xdata()) == [20.0, 50.0]
    assert list(van.lines[0].get_ydata()) == pytest.approx([(62.5 + 200 / 3) / 2] * 2)
    assert van.has_yerr and len(van.lines[2][0].get_segments()) == 2  # std over the two seeds
    [paper] = [line for line in ax.get_lines() if line.get_gid() == "paper"]
    assert list(paper.get_xdata()) == [20.0, 50.0, 70.0, 100.0]
    assert list(paper.get_ydata()) == [54.25, 55.27, 56.72, 58.54]
    assert paper.get_markerfacecolor() == "none" and paper.get_linestyle() == "--"
    assert paper.get_color() == van.lines[0].get_color()  # drawn on the curve it matches
    r = (fig.canvas.draw(), fig.canvas.get_renderer())[1]
    below = legend.get_window_extent(r).y1 <= ax.get_tightbbox(r).y0 + 1
    assert below  # the legend covers neither the points nor the axis label
    _assert_readable(fig)
    no_paper = plots.sequence_figure(groups)
    assert not [line for line in no_paper.axes[0].get_lines() if line.get_gid() == "paper"]
    assert len(no_paper.legends[0].get_texts()) == 2
    png, pdf = plots.sequence_curve(groups, tmp_path / "out", "supp1")
    assert imread(png).shape[1] == 525  # 3.5 in at dpi 150: one column, no resizing
    assert b"/MediaBox [ 0 0 252 " in pdf.read_bytes()  # 3.5 in = 252 pt


def test_panels_named_by_what_varies_and_whole(tmp_path):
    groups = _sequence_groups(tmp_path / "runs")
    rows = summarize(groups)
    for fig in (plots.confusion_figure(rows), plots.confidence_figure(groups)):
        titles = [ax.get_title().replace("\n", " ") for ax in fig.axes]
        # the baseline's panel makes protocol, backbone and baseline vary too; none is cut short
        assert (
            "protocol=full, modality=va, sequence=0.2, backbone=video_llama, baseline=none"
            in titles
        )
        assert all(".name" not in t and "task" not in t for t in titles)  # task is shared
        assert "task=zeroshot" in fig.get_suptitle()
        _assert_readable(fig)
        assert fig.get_figwidth() <= 7.0  # at most a text width


def test_nfbl_distribution_names_classes_integer_counts_no_path(tmp_path):
    root = tmp_path / "where_the_data_lives"
    root.mkdir()
    ids = ["N3"] * 3 + ["N13"] * 2 + ["N34", "N9"]
    lines = [f"0,{i},{i + 1},{c}\n" for i, c in enumerate(ids)]
    (root / "nfbl.csv").write_text("video_id,start_s,end_s,class_id\n" + "".join(lines))
    fig = plots.nfbl_figure(root)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert all(float(t).is_integer() for t in ax.get_xticks())  # counts: no 0.5 steps
    labels = [t.get_text().replace("\n", " ") for t in ax.get_yticklabels()]
    assert len(labels) == 35 and labels[0] == "N0 turtle neck"
    assert "N3 touching or scratching head" in labels
    assert "N13 buckle button / pulling collar / adjusting tie" in labels
    assert [p.get_width() for p in ax.patches][3] == 3
    texts = " ".join(t.get_text() for t in fig.findobj(Text))
    assert str(tmp_path) not in texts and "where_the_data_lives" not in texts
    r = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(r) for t in ax.get_yticklabels()]
    assert not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:], strict=False))
    _assert_readable(fig)
    png, pdf = plots.nfbl_distribution(root, tmp_path / "out")
    assert imread(png).shape[1] == 525 and pdf.stat().st_size > 0
