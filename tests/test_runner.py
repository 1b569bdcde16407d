"""The runner as users run it: real `eald-run` subprocesses, real Hydra sweeps, real wandb offline."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from eald.log import redact
from tests.conftest import run_cli
from tests.wandb_files import summarize_run


def _rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "predictions.jsonl").read_text().splitlines()]


def test_sweep_writes_one_run_dir_per_job_and_logs_to_wandb(demo_root: Path, tmp_path: Path):
    sweep = tmp_path / "multirun" / "my-sweep"
    r = run_cli(
        "-m",
        "task=check",
        "modality=v,va",
        "logger=wandb",
        f"dataset.root={demo_root}",
        "sampling.num_frames=4",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    for job, mod in zip(jobs, ["v", "va"], strict=True):
        cfg = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        assert cfg["modality"]["name"] == mod
        assert f"modality={mod}" in (job / ".hydra" / "overrides.yaml").read_text()
        rows = _rows(job)
        assert [x["video_id"] for x in rows] == ["0", "1", "2", "3"]
        assert all(x["status"] == "ok" and x["prediction"] is None for x in rows)
        has_audio = "audio_clips" in rows[0]["inputs"]
        assert has_audio == (mod == "va")
        assert len(rows[0]["inputs"]["frame_indices"]) == 4
        metrics = json.loads((job / "metrics.json").read_text())
        assert (metrics["n"], metrics["n_failed"]) == (0, 0)
        # wandb, offline: one run per job, grouped by the sweep's name, config + metrics + table.
        (wb,) = (job / "wandb").glob("offline-run-*")
        info = summarize_run(wb)
        assert info["group"] == "my-sweep"
        assert info["name"] == f"check-{job.name}"
        assert info["config"]["modality"]["name"] == mod
        assert info["history"]["n_failed"] == 0
        assert info["exit_code"] == 0
        (table,) = info["tables"]
        t = json.loads(table.read_text())
        assert t["columns"][:5] == ["video_id", "label", "prediction", "confidence", "status"]
        assert [row[0] for row in t["data"]] == ["0", "1", "2", "3"]


def test_wandb_run_is_finished_on_error(demo_root: Path, tmp_path: Path):
    run = tmp_path / "run"
    r = run_cli(
        "task=check",
        "logger=wandb",
        f"dataset.root={demo_root}",
        "protocol.test=[0,99]",  # id 99 is absent: check fails
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    assert r.returncode == 2
    (wb,) = (run / "wandb").glob("offline-run-*")
    assert summarize_run(wb)["exit_code"] == 1


def test_redact_keeps_settings_that_merely_contain_a_word():
    cfg = {"backbone": {"max_new_tokens": 128, "tokenizer": "/w/tok", "pad_token_id": 0},
           "judge": {"max_tokens": 64, "hf_token": "abc", "client_secret": "s"},
           "note": "sk-" + "proj0123456789abcdefXYZ",  # key-shaped, built so no literal key
           "auth": "Bearer abc.def"}  # fmt: skip
    assert redact(cfg) == {
        "backbone": {"max_new_tokens": 128, "tokenizer": "/w/tok", "pad_token_id": 0},
        "judge": {"max_tokens": 64, "hf_token": "<redacted>", "client_secret": "<redacted>"},
        "note": "<redacted>", "auth": "<redacted>",
    }  # fmt: skip


def test_redact_hides_credentials_but_keeps_env_var_names():
    cfg = {"judge": {"api_key": "sk-abc", "api_key_env": "OPENAI_API_KEY", "model": "m"},
           "x": [{"token": "t"}], "password": None}  # fmt: skip
    assert redact(cfg) == {
        "judge": {"api_key": "<redacted>", "api_key_env": "OPENAI_API_KEY", "model": "m"},
        "x": [{"token": "<redacted>"}],
        "password": None,
    }
