"""Shared fixtures: a small real demo dataset (H.264/AAC, espeak-ng voices) and a CLI helper."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from eald.data.demo import generate_demo

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if not has_gpu:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """4 videos x 6 s (ids 0-3; even ids positive), generated once per test session."""
    return generate_demo(tmp_path_factory.mktemp("demo") / "data", videos=4, seconds=6.0, seed=0)


def sample_cfg(fraction: float = 1.0, seed: int = 0, mods: str = "van", **sampling):
    """The config slice sample_video reads, from conf/config.yaml with overrides."""
    from omegaconf import OmegaConf

    base = OmegaConf.load(REPO / "eald" / "conf" / "config.yaml")
    return OmegaConf.create({
        "seed": seed, "sequence": {"fraction": fraction}, "nfbl_text": base.nfbl_text,
        "sampling": {**base.sampling, **sampling},
        "modality": {"video": "v" in mods, "audio": "a" in mods, "nfbl": "n" in mods},
    })  # fmt: skip


def start_cli(*args: str, cwd: Path) -> subprocess.Popen:
    """Start `eald-run ARGS` in its own process group (for kill -9 tests), output discarded."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"}
    return subprocess.Popen(
        [sys.executable, "-m", "eald.run", *args], cwd=cwd, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300):
    """Run `eald-run ARGS` as a real subprocess (the console script's module)."""
    full_env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env or {})}
    full_env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "eald.run", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
