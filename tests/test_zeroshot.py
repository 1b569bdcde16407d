"""task=zeroshot end to end: real eald-run subprocesses, the real openai client against a real
HTTP server on 127.0.0.1, the stage cache, resume after kill -9, and secrets."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from eald.testing.openai_server import FakeOpenAIServer, Reply
from tests.conftest import run_cli, start_cli

FAST = ["sampling.num_frames=8", "sampling.audio_clips=2", "backbone.max_new_tokens=16"]


def _rows(run: Path) -> dict[str, dict]:
    rows = [json.loads(x) for x in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == len({r["video_id"] for r in rows}), "a video appears twice"
    return {r["video_id"]: r for r in rows}


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _stable(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("cache", "inputs")}


def test_tiny_offline_run_then_rerun_hits_cache_bit_for_bit(demo_root: Path, tmp_path: Path):
    args = ["backbone=tiny", "judge=offline", f"dataset.root={demo_root}",
            f"cache.dir={tmp_path}/cache", *FAST]  # fmt: skip
    r1 = run_cli(*args, f"hydra.run.dir={tmp_path}/r1", cwd=tmp_path)
    assert r1.returncode == 0, r1.stderr[-3000:]
    assert "random weights: its descriptions are noise" in r1.stdout
    rows = _rows(tmp_path / "r1")
    assert list(rows) == ["0", "1", "2", "3"]
    for r in rows.values():
        assert r["status"] == "ok" and r["prediction"] in ("positive", "negative")
        assert 1 <= r["confidence"] <= 10
        assert r["response"] and json.loads(r["judge_raw"])["emotion"] == r["prediction"]
        assert r["cache"] == {"describe": "miss", "judge": "miss"}
        assert r["window"] == {"start_s": 0.0, "end_s": 6.0, "fraction": 1.0, "seed": None}
        assert r["nfbl"].startswith("Non-facial body language")
    m1 = _metrics(tmp_path / "r1")
    assert m1["calls"] == {"backbone": 4, "judge": 4}
    assert m1["n"] == 4 and m1["n_failed"] == 0

    r2 = run_cli(*args, f"hydra.run.dir={tmp_path}/r2", cwd=tmp_path)
    assert r2.returncode == 0, r2.stderr[-3000:]
    m2 = _metrics(tmp_path / "r2")
    assert m2["calls"] == {"backbone": 0, "judge": 0}
    assert (m1["backbone_loaded"], m2["backbone_loaded"]) == (True, False)
    assert m2["cache"] == {"describe": {"hits": 4, "misses": 0}, "judge": {"hits": 4, "misses": 0}}
    rows2 = _rows(tmp_path / "r2")
    assert {k: _stable(v) for k, v in rows2.items()} == {k: _stable(v) for k, v in rows.items()}
    for k in ("accuracy", "precision", "recall", "f1", "score"):
        assert m2[k] == m1[k]


def _judge_script(n: int, body: dict) -> Reply | str:
    """Four videos, one request at a time: every failure mode once."""
    return {
        0: Reply(status=429, headers={"Retry-After": "0.05"}, error_type="rate_limit"),
        1: '{"emotion": "positive", "score": 8}',  # video 0
        2: Reply(status=500),
        3: '```json\n{"emotion": "negative", "score": 6}\n```',  # video 1
        4: Reply(content='{"emotion": "positive", "score": 9}', delay_s=3.0),  # > timeout
        5: "Emotion: Negative, Score: 7",  # video 2 (tolerant parse)
    }.get(n, "I cannot tell from this description.")  # video 3: never parsable


def test_openai_judge_over_http_failures_are_rows_and_never_cached(demo_root: Path, tmp_path: Path):
    secret = "sk-test-" + os.urandom(12).hex()
    judge = ["judge=openai", "judge.concurrency=1", "judge.max_retries=3",
             "judge.timeout_s=0.5", "judge.parse_retries=1", "judge.backoff_base_s=0.01"]  # fmt: skip
    common = ["backbone=tiny", f"dataset.root={demo_root}", f"cache.dir={tmp_path}/cache",
              "logger=wandb", *FAST, *judge]  # fmt: skip
    env = {"OPENAI_API_KEY": secret}
    with FakeOpenAIServer(_judge_script) as server:
        url = f"judge.base_url={server.base_url}"
        r = run_cli(*common, url, f"hydra.run.dir={tmp_path}/r1", cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        first = server.count
        rows = _rows(tmp_path / "r1")
        assert [rows[v]["prediction"] for v in "012"] == ["positive", "negative", "negative"]
        assert [rows[v]["confidence"] for v in "012"] == [8, 6, 7]
        assert rows["3"]["status"] == "judge_unparsable" and rows["3"]["prediction"] is None
        assert rows["3"]["judge_raw"] == "I cannot tell from this description."
        for row in rows.values():  # every video: correctly predicted or explicitly failed
            assert (row["status"] == "ok") == (row["prediction"] is not None)
        m = _metrics(tmp_path / "r1")
        assert (m["n"], m["n_failed"]) == (3, 1)
        assert m["accuracy"] == pytest.approx(2 / 3)
        assert m["judge_usage"]["total_tokens"] > 0
        assert first == 8  # 2 + 2 + 2 (+ the timed-out one) + 2 parse attempts
        assert server.requests[1]["model"] == "gpt-3.5-turbo-0125"
        assert server.requests[1]["temperature"] == 0
        assert set(server.auth_headers) == {f"Bearer {secret}"}

        # Rerun: ok answers come from the cache; the failure is asked again (never cached).
        r = run_cli(*common, url, f"hydra.run.dir={tmp_path}/r2", cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        assert server.count - first == 2
        m2 = _metrics(tmp_path / "r2")
        assert m2["calls"] == {"backbone": 0, "judge": 1}
        assert m2["cache"]["judge"] == {"hits": 3, "misses": 1}

    # The key came from the environment only: nowhere in outputs, logs, wandb or the cache.
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaks == []
    assert secret not in r.stdout + r.stderr


def test_missing_api_key_is_a_clear_error(demo_root: Path, tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    os_env = {"OPENAI_API_KEY": ""}
    r = run_cli("judge=openai", f"dataset.root={demo_root}", f"hydra.run.dir={tmp_path}/r",
                cwd=tmp_path, env={**env, **os_env})  # fmt: skip
    assert r.returncode == 2
    assert "judge.api_key_env" in r.stderr and "OPENAI_API_KEY" in r.stderr


def _judge_count(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db, timeout=10) as con:
        try:
            return con.execute("SELECT COUNT(*) FROM entries WHERE stage='judge'").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def test_kill_9_mid_run_resumes_without_duplicates_or_losses(demo_root: Path, tmp_path: Path):
    verdict = {"0": "positive", "1": "negative", "2": "positive", "3": "negative"}

    def script(n: int, body: dict) -> str:
        return '{"emotion": "negative", "score": 5}'

    cache = tmp_path / "cache"
    with FakeOpenAIServer(script, latency_s=0.6) as server:
        args = ["backbone=tiny", "judge=openai", "judge.api_key_env=null",
                f"judge.base_url={server.base_url}", "judge.concurrency=1",
                f"dataset.root={demo_root}", f"cache.dir={cache}", *FAST]  # fmt: skip
        proc = start_cli(*args, f"hydra.run.dir={tmp_path}/r1", cwd=tmp_path)
        db = cache / "stages.sqlite3"
        deadline = time.time() + 240
        while _judge_count(db) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        done = _judge_count(db)
        assert 2 <= done < 4, "the run must be killed mid-way through the judge stage"
        assert not (tmp_path / "r1" / "metrics.json").exists()
        before = server.count

        r = run_cli(*args, f"hydra.run.dir={tmp_path}/r2", cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        m = _metrics(tmp_path / "r2")
        assert m["calls"] == {"backbone": 0, "judge": 4 - done}
        assert server.count - before == 4 - done
        rows = _rows(tmp_path / "r2")
        assert sorted(rows) == sorted(verdict)
        assert all(r["status"] == "ok" and r["prediction"] == "negative" for r in rows.values())
        assert _judge_count(db) == 4


@pytest.mark.parametrize("backbone", ["video_llama_tiny", "pandagpt_tiny"])
def test_ported_backbones_run_end_to_end_through_the_cli(backbone, demo_root: Path, tmp_path: Path):
    r = run_cli(f"backbone={backbone}", "judge=offline", f"dataset.root={demo_root}", "limit=2",
                f"cache.dir={tmp_path}/cache", *FAST, f"hydra.run.dir={tmp_path}/r",
                cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    rows = _rows(tmp_path / "r")
    assert list(rows) == ["0", "1"]
    for row in rows.values():
        assert row["status"] == "ok" and row["prediction"] in ("positive", "negative")
        assert isinstance(row["response"], str)
    m = _metrics(tmp_path / "r")
    assert m["calls"]["backbone"] == 2 and m["backbone"] == backbone.removesuffix("_tiny")


def test_a_run_that_scores_nothing_exits_nonzero_and_says_why(demo_root: Path, tmp_path: Path):
    # protocol=demo tests ids 4-7; this dataset has 0-3 only
    args = ["backbone=tiny", "judge=offline", f"dataset.root={demo_root}", "protocol=demo",
            f"cache.dir={tmp_path}/cache", *FAST]  # fmt: skip
    r = run_cli(*args, f"hydra.run.dir={tmp_path}/r", cwd=tmp_path)
    assert r.returncode == 2
    line = next(x for x in r.stderr.splitlines() if x.startswith("eald-run: error:"))
    assert (
        "nothing scored: all 4 ids of the protocol are missing from the dataset (4, 5, 6, 7)"
        in line
    )
    assert len(_rows(tmp_path / "r")) == 4  # the rows are written all the same
