"""The package runs where it is installed: a wheel built from the tracked files, installed
non-editable into a fresh venv, runs `eald-run` from a directory outside the checkout, with the
config tree it ships."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import REPO


def _tracked_copy(dst: Path) -> Path:
    """The checkout's tracked files only (what a clean clone has), so the build leaves no
    artefacts in the checkout and untracked local files cannot leak into the wheel."""
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True,
                           check=True).stdout.decode().split("\0")  # fmt: skip
    for rel in filter(None, files):
        src, out = REPO / rel, dst / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), out)
        elif src.is_file():
            shutil.copy2(src, out)
    return dst


def test_wheel_runs_outside_the_checkout(tmp_path, demo_root):
    src = _tracked_copy(tmp_path / "src")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                            str(tmp_path / "dist"), str(src)], capture_output=True, text=True)  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("eald-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"eald/conf/config.yaml", "eald/conf/backbone/tiny.yaml",
            "eald/conf/hydra/launcher/joblib.yaml", "hydra_plugins/eald_launcher/slurm.py"} <= names  # fmt: skip
    assert not any(n.startswith("eald/conf/local/") and n.endswith(".yaml") for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    # The dependencies come from this environment (a path line, so its editable eald finder is
    # not loaded); eald itself only from the wheel.
    Path(purelib, "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    inst = subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                           str(wheel)], capture_output=True, text=True)  # fmt: skip
    assert inst.returncode == 0, inst.stderr[-3000:]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HOME=str(tmp_path / "home"), WANDB_MODE="offline")
    where = subprocess.run([py, "-c", "import eald; print(eald.__file__)"], cwd=elsewhere,
                           env=env, capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert where.startswith(purelib), where
    run = subprocess.run([venv / "bin" / "eald-run", "task=check", f"dataset.root={demo_root}",
                          "protocol=full", "hydra.run.dir=out"], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert (elsewhere / "out" / "metrics.json").is_file()
    assert (elsewhere / "out" / "identity.json").is_file()
