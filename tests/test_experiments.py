"""Every paper experiment as a real `eald-run -m` sweep on demo data with the CPU overrides, then
`eald-report` over the sweeps: tables (with the paper's numbers beside ours) and plots."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from eald.data.demo import generate_demo
from tests.conftest import REPO, run_cli


@pytest.fixture(scope="module")
def long_demo(tmp_path_factory) -> Path:
    # 10-s videos: TimeSformer's native clip spans 225 frames (9 s at 25 fps).
    return generate_demo(tmp_path_factory.mktemp("exp") / "data", videos=4, seconds=10.0)


CPU = ["judge=offline", "sampling.num_frames=8", "sampling.audio_clips=2",
       "backbone.max_new_tokens=8"]  # fmt: skip
SWEEPS = {
    "table3_modalities": (["backbone=tiny"], 3),
    "supp_table1_sequence": (["backbone=tiny", "limit=2"], 20),
    "supp_table2_backbones": (
        ["hydra.sweeper.params.backbone='video_llama_tiny,pandagpt_tiny'", "limit=2"],
        2,
    ),  # fmt: skip
    "table4_comparison": (
        [
            "backbone=tiny",
            "protocol.train=[0,1]",
            "protocol.test=[2,3]",
            "baseline.tiny=true",
            "baseline.num_clips=1",
        ],
        7,
    ),  # fmt: skip
}


def test_every_experiment_sweeps_on_cpu_and_reports(long_demo: Path, tmp_path: Path):
    cache = f"cache.dir={tmp_path}/cache"
    for name, (extra, jobs) in SWEEPS.items():
        sweep = tmp_path / "multirun" / name
        r = run_cli("-m", f"experiment={name}", f"dataset.root={long_demo}", cache, *CPU, *extra,
                    f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=900)  # fmt: skip
        assert r.returncode == 0, (name, r.stderr[-3000:])
        done = [p for p in sweep.iterdir() if (p / "metrics.json").is_file()]
        assert len(done) == jobs, name

    out = tmp_path / "report"
    r = subprocess.run(
        [sys.executable, "-m", "eald.report.cli", str(tmp_path / "multirun" / "table4_comparison"),
         "--out", str(out), "--paper", "table4", "--bootstrap", "200"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    md = (out / "report.md").read_text()
    # backbone=tiny overrides both EALD-MLLM rows (video_llama, pandagpt): one setting twice, a
    # collision the report names (jobs 5 and 6), not a silent merge
    rows = _report_matches_the_runs(tmp_path / "multirun" / "table4_comparison", out, 6)
    (coll,) = json.loads((out / "summary.json").read_text())["collisions"]
    assert {Path(coll["kept"]).name, Path(coll["dropped"]).name} == {"5", "6"}
    assert "## Collisions (1)" in md
    assert {r["setting"]["baseline.name"] for r in rows} >= {
        "slowfast", "tsm", "timesformer", "video_swin", "beats"
    }  # fmt: skip
    assert "52.70" in md and "58.10" in md  # the paper's SlowFast and EALD-MLLM, beside ours
    assert (out / "report.tex").is_file() and list((out / "plots").glob("*.png"))

    r = subprocess.run(
        [sys.executable, "-m", "eald.report.cli", str(tmp_path / "multirun" / "supp_table1_sequence"),
         "--out", str(tmp_path / "rep1"), "--paper", "supp1", "--bootstrap", "200"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    rows = _report_matches_the_runs(tmp_path / "multirun" / "supp_table1_sequence",
                                    tmp_path / "rep1", 4)  # fmt: skip
    assert sorted(r["setting"]["sequence.fraction"] for r in rows) == [0.2, 0.5, 0.7, 1.0]
    assert all(len(r["seeds"]) == 5 for r in rows)  # seeds 0-4 grouped, never merged away
    assert list((tmp_path / "rep1" / "plots").glob("*sequence*.png"))


def _report_matches_the_runs(sweep: Path, out: Path, settings: int) -> list[dict]:
    """The report's numbers, recomputed from the sweep's own metrics.json files: every finished
    job in exactly one setting, each setting's mean accuracy and F-score (percent) over its
    seeds, and that mean printed in report.md."""
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["settings"]
    assert len(rows) == settings
    dropped = {c["dropped"] for c in summary["collisions"]}
    jobs = sorted(str(p.resolve()) for p in sweep.iterdir() if (p / "metrics.json").is_file())
    assert sorted(run for r in rows for run in r["runs"]) == sorted(set(jobs) - dropped)
    md = (out / "report.md").read_text()
    for r in rows:
        metrics = [json.loads((Path(run) / "metrics.json").read_text()) for run in r["runs"]]
        for key in ("accuracy", "f1"):
            vals = [100 * m[key] for m in metrics if m.get(key) is not None]
            assert r[key] == pytest.approx(statistics.fmean(vals), abs=1e-9), (r["setting"], key)
        assert f"{r['accuracy']:.2f}" in md, r["setting"]
        assert r["n"] == str(metrics[0]["n"]) or "–" in r["n"]
    return rows
