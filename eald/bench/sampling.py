"""Frame sampling benchmark: 32 uniform frames out of a 7-minute 1280x720 32 fps H.264 video.

Methods, timed side by side on the same file (median of repeats, file already in the page cache):
- ``eald``: :func:`eald.data.media.read_frames` (seek to the keyframe before each target),
- ``full decode``: the naive way, decode every frame with PyAV and keep the wanted ones,
- ``decord``: ``VideoReader(...).get_batch(idx)``, the reader opened inside the timed region.

Every frame carries its index as a code band (eald.data.synth), so each returned frame is checked
against the index asked for; eald's frames must also equal the full decode's bit for bit.
Two encodings: GOP 64 (a keyframe every 2 s, as YouTube delivers H.264) and GOP 250 (x264's
default). Targets: eald >= 20x faster than a full decode, and no slower than decord.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import av
import numpy as np

from eald.bench.common import atomic_output, fmt, table, timed, version
from eald.data.media import MediaError, probe, read_frames, rgb24
from eald.data.sampling import frame_indices, sequence_window
from eald.data.synth import index_code_pattern, read_index_code
from eald.io import write_json

WIDTH, HEIGHT, FPS, SECONDS = 1280, 720, 32, 420
N_FRAMES = FPS * SECONDS  # 13440
N_WANTED = 32
GOPS = (64, 250)
# ultrafast keeps generation near 1.5 min on 2 cores; B-frames and CABAC are switched back on so
# the stream has what delivered H.264 has (non-reference B-frames, CABAC) and decodes at its cost.
X264 = {"preset": "ultrafast", "crf": "23", "x264-params": "bframes=3:cabac=1", "threads": "1"}
NOISE = 10  # luma noise amplitude: ~1.3 Mbit/s, a YouTube-like 720p bitrate
RECIPE = 1  # bump when the video recipe changes: cached file names carry it
SPEEDUP_TARGET = 20.0  # eald at least this many times faster than a full decode
DECORD_TARGET = 1.0  # eald time / decord time at most this
SLOW_S = 5.0  # a method whose first run takes longer than this is not repeated
REPEATS = 3
COLUMNS = "video|method|runs|seconds|cpu s|speed-up|vs decord|correct|== full".split("|")


class _Frames:
    """Frame i as a yuv420p array: gradient background, per-frame luma noise, a moving rectangle
    and the index code band. Built in YUV: an RGB->YUV conversion would cost more than x264."""

    def __init__(self) -> None:
        h, w = HEIGHT, WIDTH
        yy, xx = np.mgrid[0:h, 0:w]
        self.y = (40 + xx * 120 // w + yy * 60 // h).astype(np.uint8)
        self.u = (100 + xx[::2, ::2] * 50 // w).astype(np.uint8)
        self.v = (110 + yy[::2, ::2] * 40 // h).astype(np.uint8)
        self.noise = np.random.default_rng(0).integers(0, NOISE, (16, h, w), dtype=np.uint8)
        self.buf = np.empty((h * 3 // 2, w), np.uint8)

    def __call__(self, i: int) -> np.ndarray:
        h, w = HEIGHT, WIDTH
        y, (u, v) = self.buf[:h], self.buf[h:].reshape(2, h // 2, w // 2)
        np.add(self.y, self.noise[i % len(self.noise)], out=y)
        u[:], v[:] = self.u, self.v
        x0, y0 = (i * 7) % (w - 160) // 2 * 2, (40 + (i * 3) % (h - 200)) // 2 * 2
        y[y0 : y0 + 120, x0 : x0 + 160] = 80
        u[y0 // 2 : y0 // 2 + 60, x0 // 2 : x0 // 2 + 80] = 90
        v[y0 // 2 : y0 // 2 + 60, x0 // 2 : x0 // 2 + 80] = 220
        band = index_code_pattern(i, w)[:, :, 0]  # black/white: video-range luma, neutral chroma
        y[: len(band)] = np.where(band > 0, 235, 16)
        u[: len(band) // 2], v[: len(band) // 2] = 128, 128
        return self.buf


def video_path(cache: Path, gop: int) -> Path:
    return cache / f"sampling_r{RECIPE}_{WIDTH}x{HEIGHT}_{FPS}fps_{SECONDS}s_gop{gop}.mp4"


def generate(path: str, gop: int) -> float:
    """Encode the benchmark video to `path` atomically (temp file, then rename); seconds taken."""
    t0 = time.perf_counter()
    make = _Frames()
    with atomic_output(Path(path)) as tmp, av.open(str(tmp), mode="w", format="mp4") as c:
        vs = c.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        vs.codec_context.thread_count = 1
        vs.options = {**X264, "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
        for i in range(N_FRAMES):
            frame = av.VideoFrame.from_ndarray(make(i), format="yuv420p")
            frame.pts = i
            c.mux(vs.encode(frame))
        c.mux(vs.encode(None))
    return time.perf_counter() - t0


def _valid(path: Path) -> bool:
    try:
        return probe(path).num_frames == N_FRAMES
    except MediaError:
        return False


def ensure_videos(cache: Path) -> dict[int, float | None]:
    """Generate the missing (or unreadable) videos, two at a time on separate cores.
    Returns the generation seconds per GOP, None for a cached file."""
    cache.mkdir(parents=True, exist_ok=True)
    todo = [g for g in GOPS if not _valid(video_path(cache, g))]
    took: dict[int, float | None] = {g: None for g in GOPS}
    if todo:
        print(f"generating {len(todo)} video(s) of {N_FRAMES} frames in {cache} ...", flush=True)
        t0 = time.perf_counter()
        ctx = mp.get_context("spawn")  # torch is imported in this process: do not fork it
        with ProcessPoolExecutor(max_workers=min(2, len(todo)), mp_context=ctx) as pool:
            jobs = {g: pool.submit(generate, str(video_path(cache, g)), g) for g in todo}
            for g, job in jobs.items():
                took[g] = job.result()
                print(f"  GOP {g}: encoded in {took[g]:.1f} s", flush=True)
        print(f"generation: {time.perf_counter() - t0:.1f} s wall", flush=True)
    else:
        print(f"videos cached in {cache} (generation skipped)", flush=True)
    return took


def full_decode(path: Path, idx: np.ndarray, fps: float) -> np.ndarray:
    """Decode every frame in order, keep the wanted ones as rgb24."""
    wanted = {int(i) for i in idx}
    got: dict[int, np.ndarray] = {}
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        for k, frame in enumerate(c.decode(vs)):
            if k in wanted:
                got[k] = rgb24(frame)
    missing = sorted(wanted - got.keys())
    if missing:
        raise RuntimeError(f"full decode ended before frames {missing[:5]}")
    return np.stack([got[int(i)] for i in idx])


def decord_frames(path: Path, idx: np.ndarray, fps: float) -> np.ndarray:
    import decord

    vr = decord.VideoReader(str(path), ctx=decord.cpu(0))
    return vr.get_batch([int(i) for i in idx]).asnumpy()


METHODS: dict[str, Callable[[Path, np.ndarray, float], np.ndarray]] = {
    "full decode": full_decode,
    "eald": read_frames,
    "decord": decord_frames,
}


def _measure(fn: Callable[..., np.ndarray], path: Path, idx: np.ndarray, fps: float) -> dict:
    """Median seconds over the runs, and the frames of the last run checked by index code."""
    try:
        times, cpu, out = timed(lambda: fn(path, idx, fps), REPEATS, SLOW_S)
    except Exception as err:  # a failing peer is a result to report, not a crash
        return {"error": f"{type(err).__name__}: {err}", "frames": None}
    ok_shape = out.shape == (len(idx), HEIGHT, WIDTH, 3)
    got = [read_index_code(f) for f in out] if ok_shape else []
    bad = [(int(i), c) for i, c in zip(idx, got, strict=True) if int(i) != c]
    return {
        "seconds": statistics.median(times),
        "times_s": [round(t, 4) for t in times],
        "cpu_s": statistics.median(cpu),
        "correct": len(idx) - len(bad) if ok_shape else 0,
        "mismatches": bad if ok_shape else f"returned shape {out.shape}",
        "frames": out,
    }


def bench_video(path: Path, gop: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Time and check every method on one video: (rows, target verdicts)."""
    info = probe(path)
    window = sequence_window("bench", info.duration_s, 1.0, 0)
    idx = frame_indices(window, info.fps, info.num_frames, N_WANTED)
    path.read_bytes()  # the page cache is warm for every method alike
    video = f"GOP {gop}"
    res = {name: _measure(fn, path, idx, info.fps) for name, fn in METHODS.items()}
    full, dec = res["full decode"].get("seconds"), res["decord"].get("seconds")
    ref = res["full decode"].get("frames")
    rows = []
    for name, r in res.items():
        frames = r.pop("frames")
        row = {"video": video, "gop": gop, "method": name, **r}
        if "error" not in r:
            row["speedup"] = full / r["seconds"] if full else None
            row["vs_decord"] = r["seconds"] / dec if dec else None
            same = name == "eald" and ref is not None
            row["equal_full"] = bool(np.array_equal(frames, ref)) if same else None
        rows.append(row)
    eald = next(r for r in rows if r["method"] == "eald")
    speedup, vs_decord = eald.get("speedup"), eald.get("vs_decord")
    targets = [
        {"video": video, "target": f"speed-up vs full decode >= {SPEEDUP_TARGET:g}x",
         "value": speedup, "pass": speedup is not None and speedup >= SPEEDUP_TARGET},
        {"video": video, "target": f"time / decord time <= {DECORD_TARGET:g}",
         "value": vs_decord, "pass": vs_decord is not None and vs_decord <= DECORD_TARGET},
    ]  # fmt: skip
    return rows, targets


def _cells(r: dict[str, Any]) -> list[str]:
    if "error" in r:
        return [r["video"], r["method"], "error", r["error"][:60], "", "", "", "", ""]
    eq = {True: "yes", False: "NO", None: "-"}[r["equal_full"]]
    runs, secs, cpu = str(len(r["times_s"])), f"{r['seconds']:.3f}", f"{r['cpu_s']:.2f}"
    return [r["video"], r["method"], runs, secs, cpu, fmt(r["speedup"], "x"), fmt(r["vs_decord"]),
            f"{r['correct']}/{N_WANTED}", eq]  # fmt: skip


def run(cache: Path) -> dict[str, Any]:
    """Generate (or reuse) the videos, benchmark each, print the table, write sampling.json."""
    took = ensure_videos(cache)
    rows: list[dict[str, Any]] = []
    targets: list[dict[str, Any]] = []
    for gop in GOPS:
        r, t = bench_video(video_path(cache, gop), gop)
        rows += r
        targets += t
    print(f"\n{N_WANTED} uniform frames of {N_FRAMES} ({SECONDS} s, {WIDTH}x{HEIGHT}, {FPS} fps)")
    print("seconds: median wall time; cpu s: its process CPU time (all threads)")
    print("speed-up = full decode / method; vs decord = method / decord (wall times)\n")
    print(table(COLUMNS, [_cells(r) for r in rows]) + "\n")
    for t in targets:
        flag = "PASS" if t["pass"] else "FAIL"
        print(f"{flag}  {t['video']:<8} eald {t['target']:<34} ({fmt(t['value'])})")
    for r in rows:
        if r.get("mismatches"):
            print(f"MISMATCH {r['video']} {r['method']} (asked, got): {r['mismatches']}")
    sizes = {str(g): video_path(cache, g).stat().st_size for g in GOPS}
    summary = {
        "benchmark": "sampling",
        "video": {"width": WIDTH, "height": HEIGHT, "fps": FPS, "frames": N_FRAMES, "x264": X264,
                  "noise": NOISE, "recipe": RECIPE, "bytes": sizes,
                  "generation_s": {str(g): took[g] for g in GOPS}},
        "env": {"cpus": os.cpu_count(), "pyav": av.__version__,
                "libavcodec": av.library_versions.get("libavcodec"), "decord": version("decord")},
        "rows": rows,
        "targets": targets,
    }  # fmt: skip
    write_json(cache / "sampling.json", summary)
    print(f"\nresults: {cache / 'sampling.json'}")
    return summary
