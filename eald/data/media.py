"""Media access with PyAV: probing, frame-exact seeking, windowed audio decoding.

Frames are addressed by index (frame i has presentation time i / fps after the stream's start).
We seek to the keyframe before each wanted frame and decode forward, never the whole file, and
verify each returned frame's timestamp maps to the index asked for, so a result is exact or an
error, never a neighbouring frame.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


class MediaError(RuntimeError):
    """A per-video media problem (unreadable, truncated, variable frame rate, no audio)."""


@dataclass(frozen=True)
class MediaInfo:
    duration_s: float
    fps: float
    num_frames: int
    width: int
    height: int
    has_audio: bool
    average_fps: float
    vfr: bool  # average rate disagrees with the nominal rate: frame-exact indexing is not possible


def file_fingerprint(path: Path, edge: int = 1 << 20) -> str:
    """sha256 of the size and the first and last MiB: cheap on 7-minute videos, and it changes
    when a file is re-encoded or de-identified under the same name (a cache must notice)."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with path.open("rb") as fh:
        h.update(fh.read(edge))
        if size > edge:
            fh.seek(max(edge, size - edge))
            h.update(fh.read(edge))
    return h.hexdigest()[:32]


def fingerprint_files(paths: Iterable[str | Path]) -> str:
    """Cheap content fingerprint for cache keys: per file its name, size and the sha256 of its
    first and last MiB, in the given order (order matters: files may play different roles).

    Reading 2 MiB instead of multi-GB weights keeps it instant; any re-export changes at least
    the size or the head (pickle/safetensors headers hold shapes and offsets).
    """
    h = hashlib.sha256()
    for p in map(Path, paths):
        h.update(f"{p.name}\0{file_fingerprint(p)}\0".encode())
    return h.hexdigest()


def _rate(r: Fraction | None) -> float:
    return float(r) if r else 0.0


def probe(path: Path) -> MediaInfo:
    """Container metadata without decoding. Raises MediaError naming the file."""
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise MediaError(f"{path}: no video stream")
            vs = c.streams.video[0]
            fps = _rate(vs.base_rate) or _rate(vs.guessed_rate) or _rate(vs.average_rate)
            if fps <= 0:
                raise MediaError(f"{path}: frame rate unknown")
            if vs.duration is not None and vs.time_base is not None:
                duration = float(vs.duration * vs.time_base)
            elif c.duration is not None:
                duration = c.duration / av.time_base
            else:
                raise MediaError(f"{path}: duration unknown")
            n = vs.frames or int(round(duration * fps))
            avg = _rate(vs.average_rate)
            vfr = avg > 0 and abs(avg - fps) / fps > 0.005
            has_audio = bool(c.streams.audio)
            return MediaInfo(duration, fps, n, vs.width, vs.height, has_audio, avg, vfr)
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as err:
        raise MediaError(f"{path}: cannot open ({err})") from err


def rgb24(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame as uint8 RGB (H, W, 3), converted by swscale on this thread. PyAV's default
    (threads=0) starts a slice-thread pool per conversion: on 2 cores that made each 320x240
    conversion 5x slower and stalled the other decoding threads; the pixels are the same."""
    return frame.to_ndarray(format="rgb24", threads=1)


def _frame_index(pts: int, start: int, tb: float, fps: float) -> float:
    """Frame position of a timestamp. `tb` is the time base as a float: Fraction arithmetic per
    packet cost more Python time than decoding a lossless frame, and the result is only rounded
    (a frame off the grid by > 0.25 is an error anyway)."""
    return (pts - start) * tb * fps


def read_frames(
    path: Path,
    indices: np.ndarray | list[int],
    fps: float,
    seek_gap: int | None = None,
    workers: int | None = None,
) -> np.ndarray:
    """Decode exactly the frames `indices` (any order, repeats allowed) as uint8 RGB (n, H, W, 3).

    Seeks to the keyframe before a wanted frame when it is more than `seek_gap` frames ahead
    (default: one second), otherwise decodes forward. Non-reference frames far before a target
    are skipped by the decoder (they cannot affect later frames); a frame found missing is retried
    once without skipping before it is reported. The sorted targets are split into contiguous
    runs decoded by `workers` threads, each with its own demuxer and decoder (PyAV releases the
    GIL while decoding; default: one per core, at most 4).
    """
    wanted = sorted({int(i) for i in indices})
    if not wanted:
        return np.zeros((0, 0, 0, 3), np.uint8)
    gap = int(seek_gap if seek_gap is not None else max(1, round(fps)))
    n_workers = max(1, min(workers or min(os.cpu_count() or 1, 4), len(wanted)))
    chunks = [c.tolist() for c in np.array_split(np.array(wanted), n_workers) if len(c)]
    got: dict[int, np.ndarray] = {}
    try:
        if len(chunks) == 1:
            got.update(_decode_chunk(path, chunks[0], fps, gap))
        else:
            with ThreadPoolExecutor(len(chunks)) as pool:
                for part in pool.map(lambda c: _decode_chunk(path, c, fps, gap), chunks):
                    got.update(part)
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as err:
        raise MediaError(f"{path}: decoding failed ({err})") from err
    missing = [i for i in wanted if i not in got]
    if missing:
        raise MediaError(
            f"{path}: frames {missing[:5]}{'...' if len(missing) > 5 else ''} could not be decoded "
            "(file truncated?)"
        )
    first = got[wanted[0]]
    out = np.empty((len(indices), *first.shape), np.uint8)
    for k, i in enumerate(indices):
        out[k] = got[int(i)]
    return out


def _decode_chunk(path: Path, wanted: list[int], fps: float, gap: int) -> dict[int, np.ndarray]:
    got: dict[int, np.ndarray] = {}
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        # No frame threading inside a decoder: measured on 2 cores it was slower even alone (94
        # vs 81 ms a 20-s 320x240 video) and stalled decoders running beside it (76 vs 44 ms);
        # the parallelism comes from read_frames' chunks and from the callers' sampling threads.
        vs.thread_type = "SLICE"
        _decode_into(c, vs, wanted, fps, gap, got, skip_nonref=True)
        missing = [i for i in wanted if i not in got]
        if missing:
            _decode_into(c, vs, missing, fps, gap, got, skip_nonref=False)
    return got


def _decode_into(c, vs, wanted, fps, gap, got, skip_nonref: bool) -> None:
    tb = float(vs.time_base)
    start = vs.start_time or 0
    state = {"target": wanted[0]}
    wanted_set = set(wanted)
    frames = None  # a decode iterator, kept across nearby targets and replaced on each seek
    pos: int | None = None  # index of the last decoded frame
    for target in wanted:
        if target in got:
            continue
        state["target"] = target
        if frames is None or pos is None or target <= pos or target - pos > gap:
            c.seek(start + int(target / fps / tb), stream=vs, backward=True, any_frame=False)
            frames = _frames(c, vs, state, fps, tb, start, skip_nonref)
            pos = None
        for frame in frames:
            fi = _frame_index(frame.pts, start, tb, fps)
            idx = round(fi)
            if abs(fi - idx) > 0.25:
                raise MediaError(
                    f"frame at {(frame.pts - start) * tb:.4f} s is off the {fps:g} fps grid: "
                    "variable frame rate; re-encode at a constant rate (ffmpeg -fps_mode cfr)"
                )
            pos = idx
            if idx not in got and idx in wanted_set:
                got[idx] = rgb24(frame)
            if idx >= target:
                break
        else:
            frames, pos = None, None  # stream ended before the target: it stays missing


def _frames(c, vs, state, fps, tb, start, skip_nonref):
    """Decode forward from the current position. Far before the target, non-reference frames are
    skipped: nothing depends on them, so the frames we keep are bit-identical."""
    near = 8  # frames of margin: covers B-frame reordering around the target
    cc = vs.codec_context
    cc.skip_frame = "DEFAULT"  # an abandoned earlier generator may have left NONREF set
    skipping = False
    for packet in c.demux(vs):
        if skip_nonref and packet.pts is not None:
            far = _frame_index(packet.pts, start, tb, fps) < state["target"] - near
            if far != skipping:  # set on change only: each set is a call into the codec
                cc.skip_frame = "NONREF" if far else "DEFAULT"
                skipping = far
        yield from packet.decode()
    cc.skip_frame = "DEFAULT"


_AUDIO_GROUP = 1 << 19  # input samples resampled per call (about 11 s at 48 kHz)


def _resampled(res: av.AudioResampler, parts: list[np.ndarray], fmt: tuple) -> list[np.ndarray]:
    """Frames' samples joined into one frame (planar: along samples; packed: along the row) and
    resampled."""
    joined = av.AudioFrame.from_ndarray(np.concatenate(parts, axis=1), format=fmt[0], layout=fmt[1])
    joined.sample_rate = fmt[2]
    return [out.to_ndarray().reshape(-1) for out in res.resample(joined)]


def read_audio(path: Path, start_s: float, end_s: float, sample_rate: int) -> np.ndarray:
    """Mono float32 samples of [start_s, end_s) at `sample_rate`, zero-padded at the end if the
    track is shorter. Raises MediaError when the file has no audio stream."""
    n_out = int(round((end_s - start_s) * sample_rate))
    try:
        with av.open(str(path)) as c:
            if not c.streams.audio:
                raise MediaError(f"{path}: no audio stream")
            st = c.streams.audio[0]
            tb = st.time_base
            t_start = float((st.start_time or 0) * tb) if st.start_time is not None else 0.0
            if start_s > 0.5:
                c.seek(int((start_s - 0.5 + t_start) / tb), stream=st, backward=True)
            # Decoded frames are resampled in groups of about 10 s: swresample is a stream, so
            # the output equals frame-by-frame resampling, at a few Python calls instead of
            # hundreds, and memory stays bounded on long windows.
            res = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            chunks: list[np.ndarray] = []
            group: list[np.ndarray] = []
            t_first: float | None = None
            have = grouped = 0
            src: tuple | None = None
            for frame in c.decode(st):
                fmt = (frame.format.name, frame.layout.name, frame.sample_rate)
                if t_first is None:
                    t_first = (float(frame.pts * tb) - t_start) if frame.pts is not None else 0.0
                    src = fmt
                elif fmt != src:
                    raise MediaError(f"{path}: audio format changes mid-stream ({src} -> {fmt})")
                group.append(frame.to_ndarray())
                have += frame.samples
                grouped += frame.samples
                done = t_first + have / frame.sample_rate >= end_s
                if done or grouped >= _AUDIO_GROUP:
                    chunks += _resampled(res, group, src)
                    group, grouped = [], 0
                if done:
                    break
            if group:
                chunks += _resampled(res, group, src)
            chunks += [out.to_ndarray().reshape(-1) for out in res.resample(None)]
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as err:
        raise MediaError(f"{path}: audio decoding failed ({err})") from err
    if t_first is None:
        raise MediaError(f"{path}: audio stream has no decodable frames")
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    off = int(round((start_s - t_first) * sample_rate))
    if off < 0:  # track starts after the window start: pad the front with silence
        samples = np.concatenate([np.zeros(-off, np.float32), samples])
        off = 0
    out = samples[off : off + n_out]
    if out.size < n_out:
        out = np.concatenate([out, np.zeros(n_out - out.size, np.float32)])
    return out.astype(np.float32, copy=False)
