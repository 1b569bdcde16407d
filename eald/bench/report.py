"""The results explorer at the paper's scale: 275 videos × 16 settings (modalities v, va, van, n ×
sequence fractions 0.2, 0.5, 0.7, 1), built by `eald-report --html --no-frames` (thumbnails are
not counted; they are cached by content). Peer: the Markdown/LaTeX report of the same runs,
built by the same command without --html, in the same run. Target: the site in under 60 s.

The runs are written here as eald-run writes them (config, overrides, metrics, predictions with
windows from the sampler's own function); the 275 videos are copies of one real H.264 file, so
the dataset is probed as a real one is.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from eald.bench.common import fmt, table
from eald.data.sampling import sequence_window
from eald.data.synth import write_mp4
from eald.data.taxonomy import NFBL_CLASSES
from eald.io import write_json

VIDEOS, SECONDS, FPS = 275, 20.0, 25
MODALITIES = {"v": (1, 0, 0), "va": (1, 1, 0), "van": (1, 1, 1), "n": (0, 0, 1)}
FRACTIONS = (0.2, 0.5, 0.7, 1.0)


def _dataset(root: Path) -> None:
    if (root / "labels.csv").is_file():
        return
    (root / "videos").mkdir(parents=True, exist_ok=True)
    one = write_mp4(root / "one.mp4", lambda i: np.full((48, 64, 3), i % 255, np.uint8),
                    int(SECONDS * FPS), FPS)  # fmt: skip
    rng = random.Random(0)
    labels, nfbl = ["video_id,label"], ["video_id,start_s,end_s,class_id"]
    classes = sorted(NFBL_CLASSES)
    for v in range(VIDEOS):
        shutil.copyfile(one, root / "videos" / f"{v}.mp4")
        labels.append(f"{v},{'positive' if v % 2 == 0 else 'negative'}")
        for _ in range(rng.randint(3, 12)):
            a = rng.uniform(0, SECONDS - 1)
            nfbl.append(
                f"{v},{a:.2f},{min(SECONDS, a + rng.uniform(0.3, 4)):.2f},{rng.choice(classes)}"
            )
    one.unlink()
    (root / "labels.csv").write_text("\n".join(labels) + "\n")
    (root / "nfbl.csv").write_text("\n".join(nfbl) + "\n")


def _runs(root: Path, sweep: Path) -> None:
    rng = random.Random(1)
    job = 0
    for mod, (v, a, n) in MODALITIES.items():
        for frac in FRACTIONS:
            run = sweep / str(job)
            (run / ".hydra").mkdir(parents=True, exist_ok=True)
            cfg = {"task": "zeroshot", "seed": 0, "dataset": {"name": "bench", "root": str(root)},
                   "protocol": {"name": "full"}, "backbone": {"name": "tiny"},
                   "judge": {"name": "offline"}, "sequence": {"fraction": frac},
                   "modality": {"name": mod, "video": bool(v), "audio": bool(a), "nfbl": bool(n)},
                   "sampling": {"num_frames": 32, "audio_clips": 8, "audio_clip_s": 2.0}}  # fmt: skip
            (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
            (run / ".hydra" / "overrides.yaml").write_text(
                yaml.safe_dump([f"modality={mod}", f"sequence.fraction={frac}"])
            )
            rows, right = [], 0
            for vid in range(VIDEOS):
                label = "positive" if vid % 2 == 0 else "negative"
                pred = (
                    label
                    if rng.random() < 0.6
                    else ("negative" if label == "positive" else "positive")
                )
                right += pred == label
                w = sequence_window(str(vid), SECONDS, frac, 0).as_dict()
                rows.append({"video_id": str(vid), "label": label, "status": "ok", "window": w,
                             "prediction": pred, "confidence": rng.randint(1, 10),
                             "response": "The speaker sounds calm. " * 8, "judge_raw": "{}",
                             "nfbl": "NFBL events: ..." if n else None})  # fmt: skip
            (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            acc = right / VIDEOS
            write_json(run / "metrics.json", {"accuracy": acc, "f1": acc, "precision": acc,
                                              "score": 5.0, "n": VIDEOS, "n_failed": 0})  # fmt: skip
            job += 1


def _report(sweep: Path, out: Path, *extra: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "eald.report.cli", str(sweep), "--out", str(out),
                        "--bootstrap", "0", *extra], capture_output=True, text=True)  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"eald-report failed: {r.stderr[-2000:]}")
    return time.perf_counter() - t0, r.stdout


def run(cache: Path) -> dict[str, Any]:
    root, work = Path(cache) / "report_dataset", Path(cache) / "report_runs"
    _dataset(root)
    shutil.rmtree(work, ignore_errors=True)
    _runs(root, work / "sweep")
    report_s, _ = _report(work / "sweep", work / "report")
    whole_s, out = _report(
        work / "sweep", work / "report2", "--html", str(work / "site"), "--no-frames"
    )
    pages = sum(1 for _ in (work / "site").rglob("*.html"))
    site_s = whole_s - report_s  # the same report is built first, then the site
    res = {"videos": VIDEOS, "settings": len(MODALITIES) * len(FRACTIONS), "pages": pages,
           "report_s": report_s, "report_and_site_s": whole_s, "site_s": site_s,
           "ratio": whole_s / report_s, "pass": site_s < 60}  # fmt: skip
    write_json(Path(cache) / "report.json", res)
    print("\nresults explorer at the paper's scale\n")
    print(table(["work", "measured", "peer", "ratio", "target", ""], [
        [f"eald-report --html --no-frames, {VIDEOS} videos x {res['settings']} settings "
         f"({pages} pages)", fmt(whole_s, " s"), f"report alone {fmt(report_s, ' s')}",
         fmt(res["ratio"], "x"), f"site {fmt(site_s, ' s')} < 60 s",
         "PASS" if res["pass"] else "FAIL"],
    ]))  # fmt: skip
    return res
