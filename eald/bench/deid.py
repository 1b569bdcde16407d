"""Face de-identification: what each preset leaves visible, and its speed, beside deface.

Clip: the leak issue's case. 1280x720, 32 fps H.264, 8 s: the skimage astronaut (an 80 px face)
and cameraman (115 px, a three-quarter profile) moving over a moving texture (eald.testing.faces,
ground-truth face boxes known for every frame). The benchmark thread and the processes it starts
are pinned to 2 cores.

Presets, each with the verification gate as configured:
- default: ``[cnn, centerface]`` (the torch CNN at 640 px, CenterFace at full size), gate + MTCNN,
  at stride 8 and 4 on the 8-s clip, and at stride 1 on its first second beside the same preset
  with dlib's own CNN (``cnn_dlib``, ~2.6 s a 640-px frame here);
- hog: ``[hog]`` (upsampled once to see 40 px faces), gate + MTCNN, stride 8;
- paper: ``[cnn]`` at ``min_face_px=80`` (full size), gate + MTCNN, stride 8, on the first second,
  beside ``[cnn_dlib]`` (~10 s a 720p frame).

Per preset: fps (frames / wall s of the whole call; no audio track, as deface drops it);
"masker missed": frames where a known face is < 90% inside the masker's own boxes (before the
gate); "gate re-masked": frames the gate blurred whole; "left (verifier)": every 8th frame
(offset 1, frames the gate's every-4th scan from 2 never looks at) where the preset's verifier
detectors find a face outside the published masks; "left (MTCNN)": frames where MTCNN finds a
face at a known face place in the published output, every frame. deface (CenterFace, its
defaults) is timed on the same clip and checked the same way.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eald.bench.common import fmt, table, timed, version
from eald.deid.detectors import UnionDetector, plan_detectors
from eald.deid.face import make_detector
from eald.deid.settings import FaceDeidConf
from eald.deid.verify import covered_fraction
from eald.deid.video import deidentify_video
from eald.io import write_json
from eald.testing.faces import FaceTrack, face_clip, frames_of, hits

SECONDS, WIDTH, HEIGHT, FPS, CORES = 8, 1280, 720, 32, 2
TRACKS = [FaceTrack("astronaut", 80, (200, 200), (420, 300)),
          FaceTrack("cameraman", 115, (820, 140), (740, 330))]  # fmt: skip
# (name, settings, seconds of the clip)
DLIB_DEFAULT = ["cnn_dlib", "centerface"]
PRESETS: tuple[tuple[str, FaceDeidConf, int], ...] = (
    ("default", FaceDeidConf(stride=8), SECONDS),
    ("default stride 4", FaceDeidConf(stride=4), SECONDS),
    ("default stride 1", FaceDeidConf(stride=1), 1),
    ("default stride 1, cnn_dlib", FaceDeidConf(detectors=DLIB_DEFAULT, stride=1), 1),
    ("hog", FaceDeidConf(detectors=["hog"], stride=8), SECONDS),
    ("paper [cnn]", FaceDeidConf(detectors=["cnn"], min_face_px=80, stride=8), 1),
    ("paper [cnn_dlib]", FaceDeidConf(detectors=["cnn_dlib"], min_face_px=80, stride=8), 1),
)  # fmt: skip
VERIFIER_EVERY, VERIFIER_OFFSET = 8, 1


@contextmanager
def pinned(n: int) -> Iterator[int]:
    """Pin this thread (and the threads / processes it starts) to at most `n` of its CPUs."""
    if not hasattr(os, "sched_setaffinity"):
        yield os.cpu_count() or 1
        return
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, sorted(old)[:n])
    try:
        yield len(os.sched_getaffinity(0))
    finally:
        os.sched_setaffinity(0, old)


def deface(src: Path, args: list[str], out: Path, frames: int) -> dict[str, Any]:
    """Time the deface CLI on `src` (a subprocess, output to `out`); fps over `frames`."""
    exe = Path(sys.executable).with_name("deface")
    cmd = [str(exe) if exe.exists() else (shutil.which("deface") or "deface"), str(src),
           "-o", str(out), *args]  # fmt: skip
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as err:
        return {"args": args, "error": f"{type(err).__name__}: {err}"}
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
    if proc.returncode != 0 or not out.exists() or out.stat().st_size == 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"args": args, "error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    return {"args": args, "frames": frames, "wall_s": wall, "cpu_s": cpu, "fps": frames / wall}


def _at_known_faces(frames: list, truth: list, mtcnn: Any, every_face: bool = False) -> int:
    """Frames where MTCNN finds a face at a known face place (with ``every_face``: all of them)."""
    agg = all if every_face else any
    return sum(agg(hits(mtcnn.detect(f), b) for b in truth[i]) for i, f in enumerate(frames))


def _left(frames: list, masks: list, truth: list, verifier: Any, mtcnn: Any) -> dict[str, Any]:
    """What a published output still shows (see the module docstring)."""
    v_frames = list(range(VERIFIER_OFFSET, len(frames), VERIFIER_EVERY))
    v_left = sum(
        any(covered_fraction(d, masks[i], frames[i].shape[:2]) < 0.9
            for d in verifier.detect(frames[i]))
        for i in v_frames
    )  # fmt: skip
    return {"verifier_frames": len(v_frames), "verifier_left": v_left,
            "mtcnn_frames": len(frames), "mtcnn_left": _at_known_faces(frames, truth, mtcnn)}  # fmt: skip


def _missed(masks: list, truth: list) -> int:
    return sum(
        any(b is not None and covered_fraction(b, masks[i], (HEIGHT, WIDTH)) < 0.9 for b in bs)
        for i, bs in enumerate(truth)
    )


def preset(conf: FaceDeidConf, src: Path, truth: list, out: Path, mtcnn: Any) -> dict:
    wall, cpu, rep = timed(lambda: deidentify_video(src, out, conf, return_boxes=True), 1)
    n, v = rep["frames"], rep["verification"]
    masks = [[tuple(b) for b in bs] for bs in rep["boxes"]]
    verifier = make_detector(conf, WIDTH, HEIGHT, verify=True)
    return {
        "frames": n, "wall_s": wall[0], "cpu_s": cpu[0], "fps": n / wall[0],
        "timings": rep["timings"], "detectors": rep["detectors"],
        "verifier": [d["name"] for d in v["detectors"]],
        "masker_missed": _missed([[tuple(b) for b in bs] for bs in rep["mask_boxes"]], truth),
        "gate_remasked": v["remasked_frames"], "gate_rounds": len(v["rounds"]),
        **_left(frames_of(out), masks, truth, verifier, mtcnn),
    }  # fmt: skip


def run(cache: Path) -> dict[str, Any]:
    clips = {}
    for secs in sorted({s for _, _, s in PRESETS}):
        path = Path(cache) / "deid_faces" / f"{secs}s.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        truth = face_clip(path, TRACKS, secs * FPS, fps=FPS, seed=0)
        clips[secs] = (path, truth)
    mtcnn = UnionDetector(plan_detectors(["mtcnn"], 40, WIDTH, HEIGHT))
    src8, truth8 = clips[SECONDS]
    seen = _at_known_faces(frames_of(src8), truth8, mtcnn, every_face=True)
    res: dict[str, dict[str, Any]] = {}
    load0 = os.getloadavg()
    with pinned(CORES) as cores, tempfile.TemporaryDirectory() as tmp:
        for name, conf, secs in PRESETS:
            print(f"  {name}: {conf.detectors}, {secs} s", flush=True)
            src, truth = clips[secs]
            res[name] = preset(conf, src, truth, Path(tmp) / f"{secs}.mp4", mtcnn)
            res[name]["seconds"] = secs
        print("  deface (defaults)", flush=True)
        out = Path(tmp) / "deface.mp4"
        d = deface(src8, [], out, SECONDS * FPS)
        if "error" not in d:
            frames = frames_of(out)
            d["mtcnn_frames"] = len(frames)
            d["mtcnn_left"] = _at_known_faces(frames[: len(truth8)], truth8, mtcnn)
        res["deface default"] = {**d, "seconds": SECONDS}
    summary = {
        "benchmark": "deid", "clip": {"seconds": SECONDS, "width": WIDTH, "height": HEIGHT,
                                      "fps": FPS, "faces": [t.__dict__ for t in TRACKS]},
        "mtcnn_sees_both_faces_in_original": f"{seen}/{len(truth8)}",
        "cores": cores, "loadavg": [load0, os.getloadavg()], "presets": res,
        "targets": {
            "default leaves 0 faces (MTCNN)": res["default"]["mtcnn_left"] == 0,
            "default leaves 0 faces (verifier)": res["default"]["verifier_left"] == 0,
            "default 8-s clip under 600 s": res["default"]["wall_s"] < 600,
            "stride 1: torch cnn >= 4x cnn_dlib": res["default stride 1"]["fps"]
            >= 4 * res["default stride 1, cnn_dlib"]["fps"],
            "stride 4: >= deface's fps, 0 faces left (verifier)":
            res["default stride 4"]["fps"] >= (res["deface default"].get("fps") or float("inf"))
            and res["default stride 4"]["verifier_left"] == 0,
        },
        "versions": {d: version(d) for d in ("dlib-bin", "deface", "facenet-pytorch", "av")},
    }  # fmt: skip
    show(summary)
    write_json(Path(cache) / "deid.json", summary)
    print(f"\nresults: {Path(cache) / 'deid.json'}")
    return summary


def show(s: dict[str, Any]) -> None:
    p = s["presets"]
    base = p["deface default"].get("fps")
    print(f"\ndeid: {WIDTH}x{HEIGHT} {FPS} fps, astronaut 80 px + cameraman 115 px moving; "
          f"{s['cores']} cores; MTCNN sees both faces in {s['mtcnn_sees_both_faces_in_original']} "
          "original frames\n")  # fmt: skip

    def frac(k: int | None, n: int | None) -> str:
        return "-" if k is None or not n else f"{k}/{n} ({100 * k / n:.1f}%)"

    rows = []
    for name, r in p.items():
        n = r.get("frames")
        rows.append([
            name, f"{r['seconds']} s", "+".join(r.get("verifier", [])) or "-",
            fmt(r.get("fps"), digits=2), fmt(r["fps"] / base, "x") if base and r.get("fps") else "-",
            frac(r.get("masker_missed"), n), frac(r.get("gate_remasked"), n),
            frac(r.get("verifier_left"), r.get("verifier_frames")),
            frac(r.get("mtcnn_left"), r.get("mtcnn_frames")),
        ])  # fmt: skip
    print(table(["preset", "clip", "verifier", "fps", "vs deface", "masker missed",
                 "gate re-masked", "left (verifier)", "left (MTCNN)"], rows))  # fmt: skip
    if "error" in p["deface default"]:
        print(f"\ndeface could not run: {p['deface default']['error']}")
    print("\nwhere the time goes (s)\n")
    keys = ("decode", "detect", "mask", "encode", "verify")
    print(table(["preset", "wall", *keys],
                [[n, fmt(r["wall_s"]), *(fmt(r["timings"][k]) for k in keys)]
                 for n, r in p.items() if "timings" in r]))  # fmt: skip
    print()
    for key, ok in s["targets"].items():
        print(f"target {key}: {'PASS' if ok else 'FAIL'}")
