"""The stage-2 pipeline (eald.tasks.pipeline) and task=zeroshot on it: bounded prefetch, batches,
failures isolated, determinism across batch sizes and concurrency, the judge starting early, and
kill -9 resume on the concurrent path (real CLI runs, the real openai client, a real server)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from eald.data.demo import generate_demo
from eald.data.media import MediaError
from eald.mllm import BackboneError
from eald.tasks.pipeline import Item, PipelineConf, run_pipeline
from eald.testing.openai_server import FakeOpenAIServer, Reply
from tests.conftest import run_cli, start_cli

# -- the scheduler, on plain items --------------------------------------------------------------


def _run(n: int, conf: PipelineConf, bad_sample=(), bad_describe=(), sleep_s=0.0):
    live, peak, batches, lock = [0], [0], [], threading.Lock()
    described, judged = {}, {}

    def sample(it: Item):
        if it.index in bad_sample:
            raise MediaError(f"video {it.index}: truncated")
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        time.sleep(sleep_s)
        return it.index

    def describe(samples):
        batches.append(list(samples))
        if any(s in bad_describe for s in samples):
            raise BackboneError(f"bad video among {samples}")
        return [f"text {s}" for s in samples]

    def on_described(it: Item, text):
        described[it.index] = text if isinstance(text, str) else type(text).__name__
        if it.sample is not None:
            with lock:
                live[0] -= 1  # the pipeline drops the sample right after this
        return it.index if isinstance(text, str) else None

    out = run_pipeline(
        [Item(i, None) for i in range(n)], conf, sample, describe, on_described,
        judge=lambda req: f"judged {req}", on_judged=judged.__setitem__, bars=False,
    )  # fmt: skip
    return out, described, judged, batches, peak[0]


def test_batches_are_full_in_order_and_memory_stays_bounded():
    conf = PipelineConf(sample_workers=3, prefetch=5, batch_size=4)
    out, described, judged, batches, peak = _run(23, conf, sleep_s=0.01)
    assert described == {i: f"text {i}" for i in range(23)}
    assert judged == {i: f"judged {i}" for i in range(23)}
    assert all(len(b) <= 4 for b in batches) and sum(map(len, batches)) == 23
    assert [s for b in batches for s in b] == list(range(23))  # protocol order
    assert peak <= 5  # never more sampled videos held than prefetch
    assert (out["backbone"], out["judge"]) == (23, 23)


def test_a_failing_video_fails_alone():
    conf = PipelineConf(prefetch=8, batch_size=4)
    _, described, judged, batches, _ = _run(8, conf, bad_sample={2}, bad_describe={5})
    assert described[2] == "MediaError" and described[5] == "BackboneError"
    assert {i for i, t in described.items() if t.startswith("text")} == {0, 1, 3, 4, 6, 7}
    assert set(judged) == {0, 1, 3, 4, 6, 7}
    assert [5] in batches  # the failing batch was retried one by one


@pytest.mark.parametrize("bad", [dict(prefetch=0), dict(batch_size=0), dict(concurrency=0)])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        PipelineConf(**bad)


# -- task=zeroshot through the CLI ---------------------------------------------------------------

VIDEOS = 10
ARGS = ["backbone=openai", "backbone.api_key_env=null", "backbone.max_frames=2",
        "judge=openai", "judge.api_key_env=null", "sampling.num_frames=4",
        "sampling.audio_clips=2", "backbone.send_audio=false"]  # fmt: skip


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    return generate_demo(tmp_path_factory.mktemp("many") / "data", videos=VIDEOS, seconds=3.0)


def _is_judge(body: dict) -> bool:
    return isinstance(body["messages"][-1]["content"], str)


def _counts(srv: FakeOpenAIServer) -> dict[str, int]:
    """Describe ("d") and judge ("j") requests the server received."""
    judge = sum(map(_is_judge, srv.requests))
    return {"d": len(srv.requests) - judge, "j": judge}


def _script(describe_delay: float = 0.0):
    """Answers that depend only on what was asked (never on arrival order)."""

    def script(n: int, body: dict):
        if _is_judge(body):
            text = body["messages"][-1]["content"]
            label = "positive" if sum(map(ord, text)) % 2 else "negative"
            return json.dumps({"emotion": label, "score": 1 + len(text) % 10})
        parts = body["messages"][0]["content"]
        nfbl = next(p["text"] for p in parts if "body language" in p.get("text", ""))
        return Reply(content=f"The speaker seems calm. [{len(nfbl)}:{nfbl[-30:]}]",
                     delay_s=describe_delay)  # fmt: skip

    return script


def _outputs(run: Path) -> tuple[list[dict], dict]:
    rows = [json.loads(x) for x in (run / "predictions.jsonl").read_text().splitlines()]
    rows = [{k: v for k, v in r.items() if k not in ("cache",)} for r in rows]
    m = json.loads((run / "metrics.json").read_text())
    drop = ("seconds", "stage_seconds", "cache")
    return rows, {k: v for k, v in m.items() if k not in drop}


def test_outputs_identical_whatever_the_concurrency(many: Path, tmp_path: Path):
    runs = {}
    for name, extra in {
        "serial": ["backbone.concurrency=1", "judge.concurrency=1", "pipeline.sample_workers=1",
                   "pipeline.prefetch=1"],
        "concurrent": ["backbone.concurrency=4", "judge.concurrency=3",
                       "pipeline.sample_workers=2", "pipeline.prefetch=6"],
    }.items():  # fmt: skip
        with FakeOpenAIServer(_script(0.05)) as srv:
            r = run_cli(*ARGS, f"backbone.base_url={srv.base_url}", f"judge.base_url={srv.base_url}",
                        f"dataset.root={many}", f"cache.dir={tmp_path}/{name}/cache", *extra,
                        f"hydra.run.dir={tmp_path}/{name}/run", cwd=tmp_path)  # fmt: skip
            assert r.returncode == 0, r.stderr[-3000:]
            runs[name] = (_outputs(tmp_path / name / "run"), srv.max_in_flight)
    (serial, one), (concurrent, peak) = runs["serial"], runs["concurrent"]
    assert serial == concurrent  # predictions.jsonl (in protocol order) and metrics.json
    assert [r["video_id"] for r in serial[0]] == [str(i) for i in range(VIDEOS)]
    assert serial[1]["n"] == VIDEOS and one == 1 and peak >= 3  # it really ran concurrently


def test_the_judge_starts_while_videos_are_still_described(many: Path, tmp_path: Path):
    with FakeOpenAIServer(_script(0.4)) as srv:
        r = run_cli(*ARGS, f"backbone.base_url={srv.base_url}", f"judge.base_url={srv.base_url}",
                    f"dataset.root={many}", f"cache.dir={tmp_path}/cache",
                    "backbone.concurrency=1", "judge.concurrency=2",
                    f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        kinds = ["j" if _is_judge(b) else "d" for b in srv.requests]
    # one description at a time, 0.4 s each: the first judgement is asked for long before the
    # last video is described
    assert kinds.count("d") == kinds.count("j") == VIDEOS
    assert kinds.index("j") < len(kinds) - 1 - kinds[::-1].index("d") - 5


def _count(db: Path, stage: str) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db, timeout=10) as con:
        try:
            q = "SELECT COUNT(*) FROM entries WHERE stage=?"
            return con.execute(q, (stage,)).fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def test_kill_9_on_the_concurrent_path_loses_and_repeats_nothing(many: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    db = cache / "stages.sqlite3"
    with FakeOpenAIServer(_script(0.3)) as srv:
        args = [*ARGS, f"backbone.base_url={srv.base_url}", f"judge.base_url={srv.base_url}",
                f"dataset.root={many}", f"cache.dir={cache}", "backbone.concurrency=3",
                "judge.concurrency=3"]  # fmt: skip
        proc = start_cli(*args, f"hydra.run.dir={tmp_path}/r1", cwd=tmp_path)
        deadline = time.time() + 240
        while _count(db, "describe") < 4 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        described, judged = _count(db, "describe"), _count(db, "judge")
        assert 4 <= described < VIDEOS, "killed mid-way through describing"
        assert not (tmp_path / "r1" / "metrics.json").exists()
        time.sleep(0.5)  # requests already sent by the killed run finish arriving
        before = _counts(srv)

        r = run_cli(*args, f"hydra.run.dir={tmp_path}/r2", cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        after = _counts(srv)
    m = json.loads((tmp_path / "r2" / "metrics.json").read_text())
    # Every answer that existed at the kill was kept; only those missing were asked for again.
    assert m["calls"] == {"backbone": VIDEOS - described, "judge": VIDEOS - judged}
    assert (after["d"] - before["d"], after["j"] - before["j"]) == (
        VIDEOS - described, VIDEOS - judged)  # fmt: skip
    rows = [json.loads(x) for x in (tmp_path / "r2" / "predictions.jsonl").read_text().split("\n")
            if x]  # fmt: skip
    assert [r["video_id"] for r in rows] == [str(i) for i in range(VIDEOS)]
    assert all(r["status"] == "ok" for r in rows)
    assert (_count(db, "describe"), _count(db, "judge")) == (VIDEOS, VIDEOS)


def test_tiny_batch_size_never_changes_the_results(demo_root: Path, tmp_path: Path):
    out = {}
    for bs in (1, 3):
        r = run_cli("backbone=tiny", "judge=offline", f"backbone.batch_size={bs}",
                    "backbone.max_new_tokens=24", "sampling.num_frames=8",
                    f"dataset.root={demo_root}", f"cache.dir={tmp_path}/c{bs}",
                    f"hydra.run.dir={tmp_path}/r{bs}", cwd=tmp_path)  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        out[bs] = _outputs(tmp_path / f"r{bs}")
    assert out[1] == out[3]
