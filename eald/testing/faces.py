"""Clips of real faces at known sizes and places, for testing and benchmarking de-identification.

The faces are real photographs that ship with installed packages (no download): scikit-image's
astronaut (Eileen Collins, frontal) and cameraman (a three-quarter profile behind a camera), and
matplotlib's Grace Hopper portrait (frontal). Each photo's face box was read off dlib's CNN on the
original photo and checked by eye; a clip pastes a head-and-shoulders crop so that the face box
is ``size`` pixels wide, moving from ``start`` to ``end`` over a moving textured background, and
returns every frame's ground-truth face boxes. Checks then run a detector on those known places.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from eald.data.synth import write_mp4
from eald.deid.detectors import Box, iou

# name -> (face box x0, y0, x1, y1 in the photo, pose)
PHOTOS: dict[str, tuple[Box, str]] = {
    "astronaut": ((168, 69, 264, 165), "frontal"),
    "cameraman": ((180, 116, 260, 196), "three-quarter profile"),
    "hopper": ((191, 146, 356, 311), "frontal"),
}


@cache
def photo(name: str) -> np.ndarray:
    """The photograph as RGB uint8."""
    if name == "astronaut":
        from skimage import data

        return data.astronaut()
    if name == "cameraman":
        from skimage import data

        return cv2.cvtColor(data.camera(), cv2.COLOR_GRAY2RGB)
    if name == "hopper":
        import matplotlib.cbook as cbook
        from PIL import Image

        with cbook.get_sample_data("grace_hopper.jpg") as fh:
            return np.asarray(Image.open(fh).convert("RGB"))
    raise KeyError(f"no face photo {name!r}: choose from {sorted(PHOTOS)}")


@dataclass(frozen=True)
class FaceTrack:
    """One face: ``size`` px wide, its box's top-left moving from ``start`` to ``end``."""

    photo: str
    size: int
    start: tuple[int, int]
    end: tuple[int, int] | None = None  # None: still
    flip: bool = False


def _head(name: str, size: int, flip: bool) -> tuple[np.ndarray, int, int]:
    """(head-and-shoulders crop scaled so the face is ``size`` px, face x0, face y0 in it)."""
    img, ((x0, y0, x1, y1), _) = photo(name), PHOTOS[name]
    fw = x1 - x0
    h, w = img.shape[:2]
    cx0, cy0 = max(0, round(x0 - 0.5 * fw)), max(0, round(y0 - 0.45 * fw))
    cx1, cy1 = min(w, round(x1 + 0.5 * fw)), min(h, round(y1 + 0.8 * fw))
    crop = img[cy0:cy1, cx0:cx1]
    fx, fy = x0 - cx0, y0 - cy0
    if flip:
        crop, fx = crop[:, ::-1], (cx1 - cx0) - (x1 - cx0)
    s = size / fw
    out = cv2.resize(
        np.ascontiguousarray(crop),
        (max(1, round(crop.shape[1] * s)), max(1, round(crop.shape[0] * s))),
        interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC,
    )
    return out, round(fx * s), round(fy * s)


def _background(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.integers(0, 255, (height, width * 2, 3), dtype=np.uint8), (0, 0), 5)
    return cv2.normalize(tex, None, 50, 190, cv2.NORM_MINMAX)


def render(tracks: list[FaceTrack], n: int, width: int = 1280, height: int = 720, seed: int = 0):
    """(frame_fn(i) -> RGB, ground truth: per frame, per track, the visible face box or None)."""
    bg = _background(width, height, seed)
    heads = [_head(t.photo, t.size, t.flip) for t in tracks]

    def place(k: int, i: int) -> tuple[int, int]:
        t, a = tracks[k], i / max(1, n - 1)
        end = t.end or t.start
        return round(t.start[0] + a * (end[0] - t.start[0])), round(
            t.start[1] + a * (end[1] - t.start[1])
        )

    def frame(i: int) -> np.ndarray:
        off = (3 * i) % width  # the background slides: encoder and tracker see motion
        img = np.ascontiguousarray(bg[:, off : off + width])
        for k, (head, fx, fy) in enumerate(heads):
            x, y = place(k, i)
            x0, y0 = x - fx, y - fy  # the crop's top-left
            hh, hw = head.shape[:2]
            a, b = max(0, x0), max(0, y0)
            c, d = min(width, x0 + hw), min(height, y0 + hh)
            if c > a and d > b:
                img[b:d, a:c] = head[b - y0 : d - y0, a - x0 : c - x0]
        return img

    truth = []
    for i in range(n):
        row: list[Box | None] = []
        for k, t in enumerate(tracks):
            x, y = place(k, i)
            box = (max(0, x), max(0, y), min(width, x + t.size), min(height, y + t.size))
            row.append(box if box[2] > box[0] and box[3] > box[1] else None)
        truth.append(row)
    return frame, truth


def face_clip(
    path: str | Path,
    tracks: list[FaceTrack],
    frames: int,
    fps: int = 8,
    width: int = 1280,
    height: int = 720,
    audio: np.ndarray | None = None,
    seed: int = 0,
) -> list[list[Box | None]]:
    """Write an H.264 (+ AAC if ``audio``) clip of ``tracks``; returns the per-frame truth."""
    frame, truth = render(tracks, frames, width, height, seed)
    write_mp4(path, frame, frames, fps, audio=audio, crf=18)
    return truth


def frames_of(path: str | Path) -> list[np.ndarray]:
    """Every frame of a video, decoded in order, as RGB."""
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]


def hits(dets: list, box: Box | None, thr: float = 0.3) -> bool:
    """Whether any detection overlaps the known face ``box`` (IoU >= thr, or centre inside)."""
    if box is None:
        return False
    for d in dets:
        cx, cy = (d[0] + d[2]) / 2, (d[1] + d[3]) / 2
        if iou(tuple(d[:4]), box) >= thr or (box[0] <= cx < box[2] and box[1] <= cy < box[3]):
            return True
    return False
