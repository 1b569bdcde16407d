"""The paper's face detector: the torch MMOD network (`cnn`) against dlib-bin's own CNN
(`cnn_dlib`, no CUDA, no BLAS) on the same 1280x720 frames of the face clip (eald.testing.faces:
the astronaut at 80 px and the cameraman at 115 px), 2 cores; detections compared frame by frame.
With a CUDA device, the torch network's frames per second at batch 32 too.

Both run at the frame's full size (the scale `min_face_px=80` needs; 40 px would need 2x)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from eald.bench.common import fmt, table, timed, version
from eald.bench.deid import FPS, HEIGHT, TRACKS, WIDTH, pinned
from eald.deid.detectors import Plan, build_detector, iou
from eald.io import write_json
from eald.testing.faces import face_clip, frames_of

FRAMES, CORES = 4, 2


def _compare(a: list, b: list) -> tuple[bool, float, float]:
    """Same count per frame; worst IoU and confidence gap of matched boxes."""
    same, worst_iou, worst_gap = True, 1.0, 0.0
    for da, db in zip(a, b, strict=True):
        same &= len(da) == len(db)
        for box, conf in da:
            if db:
                best = max(db, key=lambda d: iou(d[0], box))
                worst_iou = min(worst_iou, iou(best[0], box))
                worst_gap = max(worst_gap, abs(best[1] - conf))
    return same, worst_iou, worst_gap


def run(cache: Path) -> dict[str, Any]:
    import dlib
    import torch

    from eald.deid.detectors import dlib_model_path

    clip = Path(cache) / "deid_faces" / "mmod.mp4"
    clip.parent.mkdir(parents=True, exist_ok=True)
    face_clip(clip, TRACKS, FRAMES, fps=FPS, seed=0)
    frames = frames_of(clip)[:FRAMES]
    ref = dlib.cnn_face_detection_model_v1(str(dlib_model_path("mmod_human_face_detector.dat")))
    res: dict[str, Any] = {}
    with pinned(CORES) as cores:
        threads = torch.get_num_threads()
        torch.set_num_threads(cores)
        mine = build_detector(Plan("cnn", 1.0, 0, 0.0, "cpu"))
        mine.run_batch(frames[:1])  # warm-up (weights, allocator)

        def dlib_all() -> list:
            return [[((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()),
                      d.confidence) for d in ref(f, 0)] for f in frames]  # fmt: skip

        wall, _, want = timed(dlib_all, 1)
        res["cnn_dlib"] = {"fps": FRAMES / wall[0], "s_per_frame": wall[0] / FRAMES}
        for batch in (1, FRAMES):

            def torch_all(b: int = batch) -> list:
                return [d for i in range(0, FRAMES, b) for d in mine.run_batch(frames[i : i + b])]

            wall, _, got = timed(torch_all, 3)
            same, worst_iou, worst_gap = _compare(want, got)
            res[f"cnn batch {batch}"] = {"fps": FRAMES / min(wall), "s_per_frame": min(wall) / FRAMES,
                                         "same_count": same, "worst_iou": worst_iou,
                                         "worst_conf_gap": worst_gap}  # fmt: skip
        torch.set_num_threads(threads)
    res["faces"] = sum(len(d) for d in want)
    if torch.cuda.is_available():
        gpu = build_detector(Plan("cnn", 1.0, 0, 0.0, "cuda"))
        batch = [frames[i % FRAMES] for i in range(32)]
        gpu.run_batch(batch)
        torch.cuda.synchronize()
        wall, _, _ = timed(lambda: gpu.run_batch(batch), 3)
        res["cnn cuda batch 32"] = {"fps": 32 / min(wall), "s_per_frame": min(wall) / 32}
    summary = {"benchmark": "mmod", "frames": FRAMES, "size": [WIDTH, HEIGHT], "cores": cores,
               "loadavg": os.getloadavg(), "results": res,
               "targets": {"torch >= 8x dlib-bin (CPU)":
                           res[f"cnn batch {FRAMES}"]["fps"] / res["cnn_dlib"]["fps"] >= 8,
                           "same detections": all(res[k]["same_count"] and res[k]["worst_iou"]
                                                  >= 0.9 and res[k]["worst_conf_gap"] <= 0.05
                                                  for k in res if k.startswith("cnn batch"))},
               "versions": {d: version(d) for d in ("dlib-bin", "torch")}}  # fmt: skip
    show(summary)
    write_json(Path(cache) / "mmod.json", summary)
    return summary


def show(s: dict[str, Any]) -> None:
    r = s["results"]
    base = r["cnn_dlib"]["fps"]
    print(f"\nmmod: dlib's CNN face detector on {s['frames']} {s['size'][0]}x{s['size'][1]} frames "
          f"({r['faces']} faces), {s['cores']} cores\n")  # fmt: skip
    rows = [[k, fmt(v["s_per_frame"], " s", 3), fmt(v["fps"], digits=2), fmt(v["fps"] / base, "x"),
             {True: "yes", False: "NO"}.get(v.get("same_count"), "-"),
             fmt(v.get("worst_iou"), digits=4), fmt(v.get("worst_conf_gap"), digits=6)]
            for k, v in r.items() if isinstance(v, dict)]  # fmt: skip
    print(table(["detector", "per frame", "fps", "vs dlib-bin", "same count", "worst IoU",
                 "worst conf gap"], rows))  # fmt: skip
    for key, ok in s["targets"].items():
        print(f"target {key}: {'PASS' if ok else 'FAIL'}")
