"""McAdams voice anonymisation speed: the numba kernel against the per-frame reference loop.

One minute of synthetic voiced 16 kHz audio (a jittered glottal pulse train through vowel formants
that change every 250 ms, with pauses of exact silence) goes through
:func:`eald.deid.voice.mcadams_reference` (librosa.lpc, tf2zpk, np.poly, lfilter per frame, as
VoicePrivacy B2) and :func:`eald.deid.voice.mcadams`, both on one core: BLAS/OpenMP limited to one
thread, numba single-threaded, the process pinned to one CPU. The kernel is warmed up first, and
its first call (numba compile, or load from numba's cache) is reported on its own, as is a cold
compile in a fresh process with an empty numba cache.
Target: mcadams >= 10x faster than the reference, with outputs equal within 1e-5.
For context it also times batched ``np.linalg.eigvals`` on the (frames, 20, 20) companion-matrix
stack alone (np.roots's method, batched; LPC not included), and counts the frames the kernel
handed to the per-frame fallback.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import librosa
import numba
import numpy as np
from scipy.signal import lfilter
from threadpoolctl import threadpool_limits

from eald.bench.common import fmt, table, timed, version
from eald.deid import voice
from eald.io import write_json

SR, SECONDS, LAM, TARGET = 16000, 60.0, 0.8, 10.0
VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480))


def synthetic_voice(seconds: float = SECONDS, sr: int = SR, seed: int = 0) -> np.ndarray:
    """Vowels of 250 ms at 100-180 Hz with 2% pitch jitter; every 8th segment is silence."""
    rng = np.random.default_rng(seed)
    seg = sr // 4
    parts = []
    for k in range(int(seconds * sr) // seg):
        if k % 8 == 7:
            parts.append(np.zeros(seg))
            continue
        period = sr / rng.uniform(100, 180)
        pos = np.cumsum(period * (1 + 0.02 * rng.standard_normal(int(seg / period) + 2)))
        src = np.zeros(seg)
        src[pos[pos < seg].astype(int)] = 1.0
        y = lfilter([1.0, -0.9], [1.0], src)
        for f in VOWELS[rng.integers(len(VOWELS))]:
            r = np.exp(-np.pi * (60 + 0.04 * f) / sr)
            y = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * f / sr), r * r], y)
        parts.append(y + 1e-3 * np.std(y) * rng.standard_normal(seg))
    return np.concatenate(parts)


@contextmanager
def one_core() -> Iterator[None]:
    """One BLAS/OpenMP thread, one numba thread, and (on Linux) one CPU for the process."""
    pinned = hasattr(os, "sched_setaffinity")
    cpus = os.sched_getaffinity(0) if pinned else set()
    threads = numba.get_num_threads()
    try:
        if pinned:
            os.sched_setaffinity(0, {min(cpus)})
        numba.set_num_threads(1)
        with threadpool_limits(limits=1):
            yield
    finally:
        numba.set_num_threads(threads)
        if pinned:
            os.sched_setaffinity(0, cpus)


def eigvals_only(x: np.ndarray) -> float:
    """Seconds for batched np.linalg.eigvals on every non-silent frame's companion matrix."""
    y, w, hop, n_frames = voice._prepare(x, SR, LAM, 20, 10, 20)
    idx = np.arange(n_frames)[:, None] * hop + np.arange(len(w))
    frames = y[idx] * w
    a = librosa.lpc(frames[np.any(frames, axis=1)], order=20)
    comp = np.zeros((len(a), 20, 20))
    comp[:, 0, :] = -a[:, 1:]
    comp[:, np.arange(1, 20), np.arange(19)] = 1.0
    wall, _, _ = timed(lambda: np.linalg.eigvals(comp), 3, 5.0)
    return min(wall)


def cold_compile_s() -> float | None:
    """Seconds for mcadams's first call in a fresh interpreter with an empty numba cache."""
    code = (  # noise, not a tone: no frame may fall back (that would JIT librosa's lpc too)
        "import time, numpy as np; from eald.deid.voice import mcadams; t = time.perf_counter(); "
        "mcadams(np.random.default_rng(0).standard_normal(4000), 16000); "
        "print(time.perf_counter() - t)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "NUMBA_CACHE_DIR": tmp}
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return float(run.stdout.split()[-1]) if run.returncode == 0 else None


def fallback_frames(x: np.ndarray) -> tuple[int, int]:
    """(frames the numba kernel could not do, all frames)."""
    y, w, hop, n_frames = voice._prepare(x, SR, LAM, 20, 10, 20)
    failed = np.zeros(n_frames, dtype=np.bool_)
    voice._kernel(y, w, hop, 20, LAM, voice._STARTS, np.zeros_like(y), failed)
    return int(failed.sum()), n_frames


def run(cache: Path) -> dict[str, Any]:
    x = synthetic_voice()
    with one_core():
        t0 = time.perf_counter()
        voice.mcadams(x[:SR], SR, LAM)  # warm-up: compile or load the numba kernel
        first_s = time.perf_counter() - t0
        hits = sum(voice._kernel.stats.cache_hits.values())
        ref_wall, ref_cpu, ref = timed(lambda: voice.mcadams_reference(x, SR, LAM), 3, 5.0)
        fast_wall, fast_cpu, fast = timed(lambda: voice.mcadams(x, SR, LAM), 5, 5.0)
        eig_s = eigvals_only(x)
    n_fallback, n_frames = fallback_frames(x)
    compile_s = cold_compile_s()
    err = float(np.max(np.abs(fast - ref)))
    speedup = min(ref_wall) / min(fast_wall)
    ok = speedup >= TARGET and err < 1e-5
    res: dict[str, Any] = {
        "audio_s": SECONDS, "sr": SR, "lam": LAM, "threads": 1,
        "reference": {"wall_s": ref_wall, "cpu_s": ref_cpu, "x_realtime": SECONDS / min(ref_wall)},
        "mcadams": {"wall_s": fast_wall, "cpu_s": fast_cpu, "x_realtime": SECONDS / min(fast_wall)},
        "first_call_s": first_s, "first_call": "numba cache load" if hits else "numba compile",
        "cold_compile_s": compile_s,
        "eigvals_only_s": eig_s, "fallback_frames": n_fallback, "frames": n_frames,
        "speedup": speedup, "speedup_cpu": min(ref_cpu) / min(fast_cpu), "max_abs_err": err,
        "target": TARGET, "pass": ok,
        "versions": {d: version(d) for d in ("numpy", "scipy", "librosa", "numba")},
    }  # fmt: skip
    print(f"\nvoice: McAdams lam={LAM}, {SECONDS:.0f} s of {SR // 1000} kHz synthetic voice, "
          f"one core (min of repeats; CPU = process time)\n")  # fmt: skip
    rows = []
    for name, key in (("per-frame reference", "reference"), ("mcadams (numba)", "mcadams")):
        r = res[key]
        speedup_r = min(ref_wall) / min(r["wall_s"])
        rows.append([name, fmt(min(r["wall_s"]), digits=3), fmt(min(r["cpu_s"]), digits=3),
                     fmt(r["x_realtime"], "x", 0), fmt(speedup_r, "x", 1)])  # fmt: skip
    rows.append(["batched np.linalg.eigvals only", fmt(eig_s, digits=3), "-",
                 fmt(SECONDS / eig_s, "x", 0), fmt(min(ref_wall) / eig_s, "x", 1)])  # fmt: skip
    print(table(["method", "seconds", "cpu s", "x real time", "speed-up"], rows))
    print(f"\nspeed-up {speedup:.1f}x (target >= {TARGET:.0f}x), max |mcadams - reference| "
          f"{err:.1e} (< 1e-5): {'PASS' if ok else 'FAIL'}; first call "
          f"{first_s:.2f} s ({res['first_call']}), excluded from the timings; cold numba compile "
          f"{fmt(compile_s, ' s')} (fresh process, empty cache); "
          f"{n_fallback}/{n_frames} frames went to the per-frame fallback")  # fmt: skip
    write_json(Path(cache) / "voice.json", res)
    return res
