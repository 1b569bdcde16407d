"""CONTRIBUTING.md's worked example is real: its two files, taken from the document, add a judge
to an installed eald with nothing else edited, and eald-run runs it, checks it and caches it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

DOC = REPO / "CONTRIBUTING.md"


def _files() -> dict[str, str]:
    blocks = re.findall(r"<!-- file: (\S+) -->\n```\w+\n(.*?)```", DOC.read_text(), re.S)
    return dict(blocks)


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("plugin")
    files = _files()
    assert set(files) == {"keyword_judge.py", "judge/keyword.yaml"}
    (root / "pkgs").mkdir()
    (root / "pkgs" / "keyword_judge.py").write_text(files["keyword_judge.py"])
    conf = root / "home" / ".config" / "eald" / "judge"
    conf.mkdir(parents=True)
    (conf / "keyword.yaml").write_text(files["judge/keyword.yaml"])
    return {"root": root, "home": root / "home", "pkgs": root / "pkgs"}


def _run(plugin, demo_root, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(plugin["home"]), "WANDB_MODE": "offline",
           "PYTHONPATH": f"{plugin['pkgs']}{os.pathsep}{REPO}"}  # fmt: skip
    args = ["backbone=tiny", "judge=keyword", f"dataset.root={demo_root}", "protocol=full",
            "limit=2", f"cache.dir={plugin['root'] / 'cache'}", f"hydra.run.dir={out}", *extra]  # fmt: skip
    return subprocess.run([sys.executable, "-m", "eald.run", *args], cwd=plugin["root"], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_new_judge_runs_from_two_files(plugin, demo_root):
    out = plugin["root"] / "run1"
    proc = _run(plugin, demo_root, out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["judge_status"] == "ok" for r in rows)
    # The verdict is the documented rule applied to the response the backbone gave.
    sys.path.insert(0, str(plugin["pkgs"]))
    try:
        import keyword_judge as kj
    finally:
        sys.path.remove(str(plugin["pkgs"]))
    from eald.judge import JudgeRequest

    judge = kj.KeywordJudge(kj.KeywordJudgeConf())
    for r in rows:
        want = judge.judge([JudgeRequest(r["video_id"], r["response"], r.get("nfbl"))])[0]
        assert (r["prediction"], r["confidence"]) == (want.emotion, want.confidence)
    ident = json.loads((out / "identity.json").read_text())
    assert ident["components"]["judge"] == kj.identity(kj.KeywordJudgeConf())
    # A rerun answers from the cache: the judge is identified by its declared identity.
    again = _run(plugin, demo_root, plugin["root"] / "run2")
    assert again.returncode == 0 and "judge 0" in again.stdout


@pytest.mark.parametrize(
    ("override", "named"),
    [("judge.positive=3", "judge.positive"), ("+judge.positve=[glad]", "judge.positve")],
)
def test_new_judge_config_is_checked_by_its_schema(plugin, demo_root, override, named):
    proc = _run(plugin, demo_root, plugin["root"] / "bad", override)
    assert proc.returncode != 0 and named in proc.stderr, proc.stderr[-2000:]
