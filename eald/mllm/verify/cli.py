"""eald-verify-port: run the original Video-LLaMA and eald's port on the same tiny random
weights (written in the released files' layouts) and the same inputs, and print the difference
at every stage. No network; nothing of the original is copied here.

  eald-verify-port --original ~/src/Video-LLaMA --python ~/envs/videollama/bin/python

`--python` is an interpreter of the original's environment (transformers 4.28, timm, einops,
omegaconf, iopath, ftfy, regex, sentencepiece, pandas, pyyaml; see the README). Exit status: 0
when every stage agrees within --tol, 1 when one differs, 2 when the original could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from eald.io import atomic_write_text
from eald.mllm.verify import video_llama as verify

DRIVER = Path(__file__).with_name("original_video_llama.py")


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="eald-verify-port", description=__doc__.splitlines()[0])
    p.add_argument("--original", required=True, type=Path, help="Video-LLaMA checkout")
    p.add_argument("--python", required=True, help="python of the original's environment")
    p.add_argument("--workdir", type=Path, help="keep files and results here (default: temp)")
    p.add_argument("--seed", type=int, default=0, help="tiny weights and inputs")
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--clips", type=int, default=3, help="audio clips (fbanks)")
    p.add_argument("--max-new-tokens", type=int, default=12)
    p.add_argument("--template", default="llama2", choices=("llama2",))
    p.add_argument("--tol", type=float, default=1e-4, help="relative to max(1, max |x|)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    if not (a.original / "video_llama" / "models" / "video_llama.py").is_file():
        sys.exit(f"--original {a.original}: no video_llama/models/video_llama.py there")
    work = a.workdir or Path(tempfile.mkdtemp(prefix="eald-verify-"))
    work.mkdir(parents=True, exist_ok=True)
    spec = verify.prepare(work, seed=a.seed, frames=a.frames, clips=a.clips,
                          max_new_tokens=a.max_new_tokens, template=a.template,
                          sample_seed=a.seed)  # fmt: skip
    out = work / "original.pt"
    env = {**os.environ, "PYTHONNOUSERSITE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HUB_OFFLINE": "1"}  # fmt: skip
    proc = subprocess.run([a.python, str(DRIVER), "--repo", str(a.original), "--spec",
                           str(work / "spec.json"), "--out", str(out)],
                          capture_output=True, text=True, env=env)  # fmt: skip
    if proc.returncode != 0:
        print(proc.stdout[-3000:] + proc.stderr[-6000:], file=sys.stderr)
        print(f"eald-verify-port: the original failed (exit {proc.returncode}); files in {work}",
              file=sys.stderr)  # fmt: skip
        return 2
    original = torch.load(out, weights_only=False)
    rows = verify.compare(original, verify.run_port(spec), a.tol)
    v = original["versions"]
    print(f"original: transformers {v['transformers']}, torch {v['torch']}; notes "
          f"{json.dumps(original['report'])}")  # fmt: skip
    print(verify.table(rows))
    atomic_write_text(work / "verify.json", json.dumps({"rows": rows, "original": v}, indent=2))
    print(f"files and verify.json in {work}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
