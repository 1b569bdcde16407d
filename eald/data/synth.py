"""Low-level writers for real (decodable) synthetic media.

Used by the demo-data generator, the tests and benchmarks. Everything here writes
genuine H.264/AAC/PCM files through PyAV so that the decoding pipeline is exercised
on the same kind of input it sees in production.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
import wave
from collections.abc import Callable
from fractions import Fraction
from math import gcd
from pathlib import Path

import av
import numpy as np
from scipy.signal import lfilter, resample_poly

# Sample rates the native FFmpeg AAC encoder accepts; anything else is resampled to 48 kHz.
_AAC_RATES = {96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000}
# Sub-ticks per frame: frame pts live in a 1/(fps*_TICKS) time base so VFR pts are expressible.
_TICKS = 1000


def index_band_height(width: int, bits: int = 16) -> int:
    """Height in pixels of the index-code band for a frame of ``width`` pixels."""
    return int(np.clip(width // bits, 16, 32))


def index_code_pattern(index: int, width: int, bits: int = 16) -> np.ndarray:
    """Return a (band_h, width, 3) uint8 band encoding ``index`` as black/white blocks.

    Bit ``bits-1`` (MSB) is the leftmost block. Blocks are >= 16 px wide and the band is
    >= 16 px tall, i.e. at least one full H.264 macroblock per bit, so block means stay far
    from the 128 threshold even after lossy compression and 4:2:0 chroma subsampling.
    """
    block = width // bits
    if block < 16:
        raise ValueError(f"width {width} too small for {bits} bits (need >= {16 * bits} px)")
    if not 0 <= index < (1 << bits):
        raise ValueError(f"index {index} does not fit in {bits} bits")
    band = np.zeros((index_band_height(width, bits), width, 3), dtype=np.uint8)
    for b in range(bits):
        if (index >> (bits - 1 - b)) & 1:
            band[:, b * block : (b + 1) * block] = 255
    return band


def read_index_code(frame_rgb: np.ndarray, bits: int = 16) -> int:
    """Decode the index written by :func:`index_code_pattern` from an RGB frame."""
    width = frame_rgb.shape[1]
    block = width // bits
    band_h = index_band_height(width, bits)
    # Use only the interior of each block: edges ring after DCT quantisation.
    m = max(block // 4, 1)
    mv = max(band_h // 4, 1)
    gray = frame_rgb[mv : band_h - mv].astype(np.float32).mean(axis=2)
    value = 0
    for b in range(bits):
        bit = gray[:, b * block + m : (b + 1) * block - m].mean() >= 128.0
        value = (value << 1) | int(bit)
    return value


def _tmp_sibling(path: Path) -> Path:
    # Same directory => os.replace is an atomic rename on the same filesystem.
    # (Not mkstemp: that creates 0600 files, and the result should get normal umask perms.)
    return path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")


def _fit_audio(audio: np.ndarray, n_samples: int) -> np.ndarray:
    a = np.asarray(audio, dtype=np.float32).reshape(-1)
    if a.size >= n_samples:
        return a[:n_samples]
    return np.concatenate([a, np.zeros(n_samples - a.size, dtype=np.float32)])


def write_mp4(
    path: str | os.PathLike[str],
    frame_fn: Callable[[int], np.ndarray],
    n_frames: int,
    fps: int,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    gop: int | None = None,
    crf: int = 23,
    preset: str = "veryfast",
    pts_fn: Callable[[int], int] | None = None,
) -> Path:
    """Write an H.264 (yuv420p) + optional mono AAC mp4 atomically.

    ``frame_fn(i)`` returns frame ``i`` as (H, W, 3) uint8 RGB. Video pts are in a time base
    of ``1/(fps*1000)``; by default frame ``i`` gets ``i*1000`` (constant rate), ``pts_fn``
    overrides that (must be strictly increasing) to produce variable-frame-rate files.
    Audio (float32 mono in [-1, 1] at ``sample_rate``) is padded/trimmed to ``n_frames/fps``.
    """
    path = Path(path)
    if n_frames <= 0:
        raise ValueError("n_frames must be positive")
    first = np.ascontiguousarray(frame_fn(0), dtype=np.uint8)
    height, width = first.shape[:2]
    if first.ndim != 3 or first.shape[2] != 3 or width % 2 or height % 2:
        raise ValueError(f"frames must be (H, W, 3) with even H, W; got {first.shape}")
    tb = Fraction(1, fps * _TICKS)
    tmp = _tmp_sibling(path)
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            vs = container.add_stream("libx264", rate=fps, time_base=tb)
            vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
            # Fixed single thread: x264 output then depends only on the input (determinism).
            vs.codec_context.thread_count = 1
            opts = {"crf": str(crf), "preset": preset, "threads": "1"}
            if gop is not None:
                # Fixed GOP: no scene-cut keyframes, so keyframes sit exactly every `gop` frames.
                opts.update({"g": str(gop), "sc_threshold": "0"})
            vs.options = opts

            chunks: list[av.AudioFrame] = []
            as_ = None
            if audio is not None:
                rate = sample_rate if sample_rate in _AAC_RATES else 48000
                a = _fit_audio(audio, round(n_frames * sample_rate / fps))
                a = np.clip(a, -1.0, 1.0)
                as_ = container.add_stream("aac", rate=rate)
                as_.layout = "mono"
                as_.time_base = Fraction(1, rate)
                frame = av.AudioFrame.from_ndarray(a[None, :], format="fltp", layout="mono")
                frame.sample_rate = sample_rate
                frame.pts, frame.time_base = 0, Fraction(1, sample_rate)
                # The AAC encoder needs fixed 1024-sample frames; the resampler both converts
                # the rate (if needed) and re-chunks, keeping pts continuous.
                rs = av.AudioResampler(format="fltp", layout="mono", rate=rate, frame_size=1024)
                chunks = list(rs.resample(frame)) + list(rs.resample(None))

            ai = 0
            for i in range(n_frames):
                img = first if i == 0 else np.ascontiguousarray(frame_fn(i), dtype=np.uint8)
                # One-thread swscale (PyAV's default, threads=0, splits the conversion over
                # threads): the pixels must not depend on thread scheduling.
                vf = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(
                    format="yuv420p", threads=1
                )
                vf.pts = pts_fn(i) if pts_fn is not None else i * _TICKS
                vf.time_base = tb
                container.mux(vs.encode(vf))
                # Interleave audio up to the current video time so the muxer buffers little.
                t_video = float(vf.pts * tb)
                while as_ is not None and ai < len(chunks) and chunks[ai].time <= t_video:
                    container.mux(as_.encode(chunks[ai]))
                    ai += 1
            container.mux(vs.encode(None))
            if as_ is not None:
                for ch in chunks[ai:]:
                    container.mux(as_.encode(ch))
                container.mux(as_.encode(None))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_wav(path: str | os.PathLike[str], audio: np.ndarray, sample_rate: int) -> Path:
    """Write mono float audio in [-1, 1] as 16-bit PCM WAV, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1, 1) * 32767).astype("<i2")
    tmp = _tmp_sibling(path)
    try:
        with wave.open(str(tmp), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(sample_rate)
            w.writeframes(pcm.tobytes())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def truncate_file(path: str | os.PathLike[str], keep_fraction: float) -> int:
    """Cut a file to ``keep_fraction`` of its size (simulates a partial download).

    Returns the new size in bytes.
    """
    if not 0.0 <= keep_fraction <= 1.0:
        raise ValueError("keep_fraction must be in [0, 1]")
    size = int(os.path.getsize(path) * keep_fraction)
    os.truncate(path, size)
    return size


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise RuntimeError(f"unexpected WAV sample width {w.getsampwidth()} in {path}")
        sr, ch = w.getframerate(), w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32)
    return data.reshape(-1, ch).mean(axis=1) / 32768.0, sr


def _resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return x.astype(np.float32)
    g = gcd(sr_in, sr_out)
    return resample_poly(x, sr_out // g, sr_in // g).astype(np.float32)


def espeak_speech(
    text: str, voice: str, sample_rate: int = 16000, speed: int = 150, pitch: int = 50
) -> np.ndarray | None:
    """Synthesise ``text`` with espeak-ng; float32 mono at ``sample_rate``.

    Returns None when espeak-ng is not installed so callers can fall back to
    :func:`synthetic_voice`; raises RuntimeError if it is installed but fails.
    """
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "speech.wav"
        cmd = [exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(out), text]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0 or not out.exists() or out.stat().st_size <= 44:
            raise RuntimeError(
                f"espeak-ng failed (rc={proc.returncode}) for voice {voice!r}: "
                f"{proc.stderr.strip()[:500]}"
            )
        data, sr = _read_wav(out)
    return np.clip(_resample(data, sr, sample_rate), -1.0, 1.0)


def _resonator(x: np.ndarray, freq: float, bw: float, sr: int) -> np.ndarray:
    # Two-pole resonator (classic formant synthesis), unity gain at DC-ish.
    r = np.exp(-np.pi * bw / sr)
    a = [1.0, -2.0 * r * np.cos(2 * np.pi * freq / sr), r * r]
    return lfilter([1.0 - r], a, x)


def synthetic_voice(
    seconds: float, f0: float, sample_rate: int = 16000, seed: int = 0
) -> np.ndarray:
    """Voice-like fallback signal when espeak-ng is unavailable (deterministic per seed).

    A jittered glottal pulse train at ``f0`` through three formant resonators, gated by a
    ~4 Hz syllable envelope with occasional pauses, so VAD/pitch features behave sensibly.
    """
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    if n <= 0:
        return np.zeros(0, dtype=np.float32)
    t = np.arange(n) / sample_rate
    # Slow intonation drift plus per-period jitter (~1%).
    f_inst = f0 * (1.0 + 0.08 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 2 * np.pi)))
    f_inst *= 1.0 + 0.01 * rng.standard_normal(n).cumsum() / np.sqrt(np.arange(1, n + 1))
    phase = np.cumsum(f_inst / sample_rate)
    pulses = np.diff(np.floor(phase), prepend=0.0)
    # Glottal pulse shape: decaying exponential, then a spectral tilt via a one-pole lowpass.
    glottal = lfilter([1.0], [1.0, -0.9], pulses)
    noise = 0.02 * rng.standard_normal(n)
    src = glottal + noise
    formants = [(rng.uniform(550, 800), 90), (rng.uniform(1100, 1700), 110), (2600, 160)]
    voiced = sum(_resonator(src, f, bw, sample_rate) for f, bw in formants)
    # Syllable envelope: ~4 Hz raised-cosine bumps; roughly every 8th syllable a pause.
    env = np.zeros(n)
    pos = 0.0
    while pos < seconds:
        dur = rng.uniform(0.18, 0.32)
        if rng.random() < 0.12:
            pos += rng.uniform(0.3, 0.8)  # pause between phrases
            continue
        i0, i1 = int(pos * sample_rate), min(int((pos + dur) * sample_rate), n)
        if i1 > i0:
            env[i0:i1] = np.maximum(
                env[i0:i1], rng.uniform(0.5, 1.0) * np.sin(np.linspace(0, np.pi, i1 - i0)) ** 2
            )
        pos += dur + rng.uniform(0.0, 0.08)
    out = voiced * env
    peak = np.abs(out).max()
    return (0.5 * out / peak if peak > 0 else out).astype(np.float32)
