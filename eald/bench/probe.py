"""Linear probe with cached features vs the naive approach (every clip through the frozen
backbone every epoch), in the same run, on demo data with a small real backbone (tiny TSM from
mmaction2's config, random weights).

- cached: features extracted once (timed apart), then a 30-epoch probe on the cached vectors;
- naive: each epoch pushes every training clip through the backbone, then trains the head one
  epoch on those features. It is measured for NAIVE_EPOCHS epochs and its per-epoch time
  (stable: the same work every epoch) is multiplied out to 30 epochs; the table says so.
Target: the cached probe >= 20x faster than the naive one.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from baselines.probe import ProbeSettings, labels_to_targets, train_probe
from eald.bench.common import fmt, table
from eald.data.dataset import load_dataset
from eald.data.demo import generate_demo
from eald.data.sampling import sequence_window
from eald.io import write_json
from eald.registry import REGISTRY

EPOCHS, NAIVE_EPOCHS = 30, 2
CONF = {"name": "tsm", "checkpoint": None, "tiny": True, "num_clips": 2, "device": "cpu",
        "batch_size": 4, "seed": 0, "variant": "paper"}  # fmt: skip


def run(cache: Path) -> dict[str, Any]:
    root = generate_demo(cache / "probe_demo", videos=8, seconds=6.0, seed=0)
    ds = load_dataset(root)
    videos = list(ds.videos.values())
    windows = [sequence_window(v.id, v.duration_s, 1.0, 0) for v in videos]
    y = labels_to_targets([v.label for v in videos])
    model = REGISTRY.build("baseline", OmegaConf.create(CONF))
    settings = ProbeSettings(epochs=EPOCHS, batch_size=4, seed=0)

    t0 = time.perf_counter()
    feats = np.stack([model.features(v, w) for v, w in zip(videos, windows, strict=True)])
    extract_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    train_probe(feats, y, settings)
    cached_s = time.perf_counter() - t0

    one_epoch = replace(settings, epochs=1)
    t0 = time.perf_counter()
    for _ in range(NAIVE_EPOCHS):
        x = np.stack([model.features(v, w) for v, w in zip(videos, windows, strict=True)])
        train_probe(x, y, one_epoch)
    naive_epoch_s = (time.perf_counter() - t0) / NAIVE_EPOCHS
    naive_s = naive_epoch_s * EPOCHS
    ratio = naive_s / cached_s
    rows = [
        ["cached features", fmt(cached_s, digits=3), f"{EPOCHS}", "1.00x",
         f"extraction once: {extract_s:.2f} s"],
        ["naive (backbone every epoch)", fmt(naive_s, digits=2), f"{EPOCHS} (measured "
         f"{NAIVE_EPOCHS} x {naive_epoch_s:.2f} s)", f"{ratio:.0f}x", ""],
    ]  # fmt: skip
    print(f"\nlinear probe, {len(videos)} demo videos, tiny TSM (random weights), "
          f"{CONF['num_clips']} clips per video, {EPOCHS} epochs\n")  # fmt: skip
    print(table(["method", "seconds", "epochs", "naive / cached", "note"], rows))
    flag = "PASS" if ratio >= 20 else "FAIL"
    print(f"\n{flag}  cached probe >= 20x faster than the naive one ({ratio:.0f}x)")
    summary = {"benchmark": "probe", "videos": len(videos), "conf": CONF, "epochs": EPOCHS,
               "extract_s": extract_s, "cached_train_s": cached_s,
               "naive_epoch_s": naive_epoch_s, "naive_s": naive_s, "ratio": ratio,
               "pass": ratio >= 20, "cpus": os.cpu_count()}  # fmt: skip
    write_json(cache / "probe.json", summary)
    return summary
