"""Face masking for de-identification (paper stage 1: dlib CNN faces blurred in every frame).

Levers: detector (dlib CNN/MMOD as the paper, or HOG) and its input size, a detection stride,
dilation, blur or fill. Fails closed: detector errors and lost faces blur whole frames.

Temporal rule (``FaceMasker``). The detector runs on "anchor" frames (every ``stride``-th and the
last); faces are linked across anchors into tracks (IoU / centre distance). A frame is decided
once the anchors ``max_lost + stride`` frames later are known:
* an anchor masks its own detections (box x ``dilate``); other frames use, x ``safety_dilate``
  more: the track's box interpolated between its anchors (or the earlier one held), also across
  missed detections (a track still held at the previous anchor can be found again); for a track
  first seen at anchor t, its box (swept back along its motion) down to the previous anchor; for
  a track last seen at anchor s, its box (swept on along its motion) up to frame s + ``max_lost``;
* ``on_lost=blur_frame``: with F the last anchor <= f that found any face, frame f is blurred
  whole when ``max_lost < f - F <= 2 * max_lost`` (lost longer than held boxes last; after
  another ``max_lost`` frames without faces the people are taken to have left);
* ``on_error=blur_frame``: an anchor whose detector raises is blurred whole, and so is every
  frame between it and its neighbouring anchors (nothing is known about them).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
from bisect import bisect_left, bisect_right
from collections import deque
from pathlib import Path
from time import perf_counter
from typing import Any, NamedTuple, Protocol

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, end-exclusive


def dlib_model_path(name: str) -> Path:
    """A dlib model file from `face-recognition-models`, located without importing the package
    (its ``__init__`` needs pkg_resources, often absent)."""
    candidates: list[Path] = []
    try:
        dist = importlib.metadata.distribution("face-recognition-models")
        candidates.append(Path(str(dist.locate_file(f"face_recognition_models/models/{name}"))))
    except importlib.metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec("face_recognition_models")  # finds, does not execute
    for loc in (spec.submodule_search_locations or []) if spec else []:
        candidates.append(Path(loc) / "models" / name)
    for p in (p for p in candidates if p.is_file()):
        return p
    raise FileNotFoundError(
        f"dlib model {name!r} not found: install it with `pip install face-recognition-models`"
    )


class Detection(NamedTuple):
    x0: int
    y0: int
    x1: int
    y1: int
    score: float


class Detector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray) -> list[Detection]: ...


class _DlibDetector:
    """Runs on a copy whose long side is at most ``max_side``; boxes come back in full-res
    coordinates. The dlib model loads lazily so instances pickle (process pools)."""

    name = "cnn"

    def __init__(self, max_side: int | None = 640, upsample: int = 0) -> None:
        self.max_side, self.upsample = max_side, int(upsample)
        self._model: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None}

    def _run(self, img: np.ndarray) -> list[tuple[Any, float]]:
        import dlib

        if self.name == "cnn":
            if self._model is None:
                path = dlib_model_path("mmod_human_face_detector.dat")
                self._model = dlib.cnn_face_detection_model_v1(str(path))
            return [(d.rect, d.confidence) for d in self._model(img, self.upsample)]
        if self._model is None:
            self._model = dlib.get_frontal_face_detector()
        rects, scores, _ = self._model.run(img, self.upsample, 0.0)
        return list(zip(rects, scores, strict=True))

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        h, w = rgb.shape[:2]
        s, img = 1.0, rgb
        if self.max_side and max(h, w) > self.max_side:
            s = self.max_side / max(h, w)
            size = (max(1, round(w * s)), max(1, round(h * s)))
            img = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        out = []
        for r, score in self._run(np.ascontiguousarray(img, dtype=np.uint8)):
            # dlib rectangles are inclusive and may poke out of the image: clip, round outward
            x0, y0 = max(0, math.floor(r.left() / s)), max(0, math.floor(r.top() / s))
            x1, y1 = min(w, math.ceil((r.right() + 1) / s)), min(h, math.ceil((r.bottom() + 1) / s))
            if x1 > x0 and y1 > y0:
                out.append(Detection(x0, y0, x1, y1, float(score)))
        return out


class CnnDetector(_DlibDetector):
    """dlib's CNN (MMOD) face detector, the paper's; finds faces of about 80 px and larger."""

    name = "cnn"


class HogDetector(_DlibDetector):
    """dlib's HOG frontal face detector: ~50x faster on CPU, misses more (profile, blur)."""

    name = "hog"


def make_detector(conf: Any) -> Detector:
    """The detector a conf (``detector``, ``detect_max_side``, ``upsample``) asks for."""
    cls = {"cnn": CnnDetector, "hog": HogDetector}[conf.detector]
    return cls(conf.detect_max_side, conf.upsample)


def dilate_box(box: Box | tuple[float, ...], factor: float, width: int, height: int) -> Box:
    """Scale a box about its centre and clip it to the frame (outward rounding)."""
    x0, y0, x1, y1 = box
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * factor / 2, (y1 - y0) * factor / 2
    return (
        max(0, math.floor(cx - hw)), max(0, math.floor(cy - hh)),
        min(width, math.ceil(cx + hw)), min(height, math.ceil(cy + hh)),
    )  # fmt: skip


def _iou(a: Box, b: Box) -> float:
    iw, ih = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def match_boxes(prev: list[Box], new: list[Box], gaps: list[int]) -> list[tuple[int, int]]:
    """Greedy one-to-one matching by IoU, then centre distance; the distance allowed grows with
    the frames since the previous box was seen (``gaps``): faces move between detections."""
    cands = []
    for i, a in enumerate(prev):
        for j, b in enumerate(new):
            ov = _iou(a, b)
            d = np.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2)
            size = max(a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1])
            if ov >= 0.1 or d <= (0.5 + 0.15 * gaps[i]) * size:
                cands.append((-ov, d, i, j))
    used_i, used_j, pairs = set(), set(), []
    for _, _, i, j in sorted(cands):
        if i not in used_i and j not in used_j:
            used_i.add(i), used_j.add(j), pairs.append((i, j))
    return pairs


def _sweep(a: Box, b: Box, k: float) -> tuple[float, ...]:
    """Box b together with b moved on by k times the motion a -> b: where a face seen at a, then
    b, has been before/after without being detected (whichever way it went, both are masked)."""
    m = [q + k * (q - p) for p, q in zip(a, b, strict=True)]
    return (min(b[0], m[0]), min(b[1], m[1]), max(b[2], m[2]), max(b[3], m[3]))


def _smooth(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; large sigmas blur a downscaled copy (cost independent of sigma)."""
    h, w = img.shape[:2]
    f = min(1.0, 3.0 / sigma)
    if f >= 1.0:
        return cv2.GaussianBlur(img, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    small = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma * f, borderType=cv2.BORDER_REPLICATE)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def mask_boxes(
    rgb: np.ndarray, boxes: list[Box], mode: str = "blur", strength: float = 1.0
) -> None:
    """Blur (sigma = strength * box side / 6) or fill (box mean colour) each box, in place."""
    for x0, y0, x1, y1 in boxes:
        roi = rgb[y0:y1, x0:x1]
        if roi.size == 0:
            continue
        if mode == "fill":
            roi[:] = roi.reshape(-1, roi.shape[-1]).mean(axis=0).astype(np.uint8)
        else:
            roi[:] = _smooth(roi, max(1.0, strength * max(x1 - x0, y1 - y0) / 6.0))


def mask_whole_frame(rgb: np.ndarray, mode: str = "blur", strength: float = 1.0) -> None:
    """Fail-closed mask: sigma = long side / 8, so even a frame-filling face is unrecognisable."""
    mask_boxes(rgb, [(0, 0, rgb.shape[1], rgb.shape[0])], mode, strength * 6.0 / 8.0)


class MaskedFrame(NamedTuple):
    index: int
    rgb: np.ndarray  # masked in place
    boxes: list[Box]  # mask boxes; whole-frame fallbacks give the full frame
    whole: str | None  # None | "error" | "lost"
    detected: bool  # the detector ran on this frame
    faces: int  # faces the detector found here (0 if it did not run)


class _Anchor(NamedTuple):
    faces: list[Detection]
    error: str | None


class FaceMasker:
    """Streaming masker: ``push`` frames in order, get masked frames back (delayed by up to
    ``max_lost + stride`` frames), then ``finish``. See the module docstring for the rule."""

    def __init__(self, detector: Detector, conf: Any) -> None:
        self.det, self.c = detector, conf  # conf: a validated FaceDeidConf (eald.deid.video)
        self.timings = {"detect": 0.0, "mask": 0.0}
        self.errors: list[tuple[int, str]] = []
        self._pending: deque[tuple[int, np.ndarray]] = deque()
        self._anchors: dict[int, _Anchor] = {}
        self._order: list[int] = []  # anchor indices, ascending
        self._face_anchors: list[int] = []
        self._tracks: list[list[tuple[int, Box]]] = []  # per track: (anchor, raw box), ascending
        self._last_good: int | None = None
        self._n = 0
        self._horizon = self.c.max_lost + self.c.stride

    def push(self, rgb: np.ndarray) -> list[MaskedFrame]:
        i, self._n = self._n, self._n + 1
        self._pending.append((i, rgb))
        if i % self.c.stride == 0:
            self._detect(i, rgb)
        return self._emit(final=False)

    def finish(self) -> list[MaskedFrame]:
        if self._pending and self._pending[-1][0] not in self._anchors:
            self._detect(*self._pending[-1])  # a right anchor for the tail
        return self._emit(final=True)

    def _detect(self, i: int, rgb: np.ndarray) -> None:
        t0 = perf_counter()
        try:
            faces, err = list(self.det.detect(rgb)), None
        except Exception as e:  # noqa: BLE001 - fail closed on any detector failure
            if self.c.on_error == "raise":
                raise
            faces, err = [], f"{type(e).__name__}: {e}"
            self.errors.append((i, err))
        self.timings["detect"] += perf_counter() - t0
        self._anchors[i] = _Anchor(faces, err)
        self._order.append(i)
        if err is not None:
            return
        live = [tr for tr in self._tracks if self._linkable(tr[-1][0])]
        prev, gaps = [tr[-1][1] for tr in live], [i - tr[-1][0] for tr in live]
        pairs = match_boxes(prev, [tuple(d[:4]) for d in faces], gaps)
        for ti, di in pairs:
            live[ti].append((i, tuple(faces[di][:4])))
        matched = {di for _, di in pairs}
        self._tracks += [[(i, tuple(d[:4]))] for k, d in enumerate(faces) if k not in matched]
        if faces:
            self._face_anchors.append(i)
        self._last_good = i

    def _linkable(self, last: int) -> bool:
        """A track last seen at anchor ``last`` may match the next detection: it was still held
        at the previous good anchor."""
        return self._last_good is not None and self._last_good - last <= self.c.max_lost

    def _emit(self, final: bool) -> list[MaskedFrame]:
        out = []
        while self._pending and (final or self._pending[0][0] + self._horizon <= self._order[-1]):
            out.append(self._mask(*self._pending.popleft()))
        self._prune()
        return out

    def _mask(self, f: int, rgb: np.ndarray) -> MaskedFrame:
        c, (h, w) = self.c, rgb.shape[:2]
        left = self._order[bisect_right(self._order, f) - 1]
        right = self._order[bisect_left(self._order, f)]
        whole = None
        if self._anchors[left].error or self._anchors[right].error:
            whole = "error"
        elif c.on_lost == "blur_frame":
            k = bisect_right(self._face_anchors, f) - 1
            if k >= 0 and c.max_lost < f - self._face_anchors[k] <= 2 * c.max_lost:
                whole = "lost"
        t0 = perf_counter()
        if whole:
            boxes = [(0, 0, w, h)]
            mask_whole_frame(rgb, c.mode, c.blur_strength)
        else:
            boxes = []
            for tr in self._tracks:
                raw, own = self._track_box(tr, f, right)
                if raw is not None:
                    factor = c.dilate * (1.0 if own else c.safety_dilate)
                    boxes.append(dilate_box(raw, factor, w, h))
            mask_boxes(rgb, boxes, c.mode, c.blur_strength)
        self.timings["mask"] += perf_counter() - t0
        a = self._anchors.get(f)
        return MaskedFrame(f, rgb, boxes, whole, a is not None, len(a.faces) if a else 0)

    def _track_box(self, tr: list[tuple[int, Box]], f: int, right: int) -> tuple[Any, bool]:
        """(raw box of the track at frame f or None, whether it was detected on f)."""
        j = bisect_left(tr, f, key=lambda e: e[0])
        if j < len(tr) and tr[j][0] == f:
            return tr[j][1], True
        if j == 0:  # starts later: mask it back to the previous anchor
            if tr[0][0] != right:
                return None, False
            (t, bt), nxt = tr[0], tr[1] if len(tr) > 1 else None
            return (_sweep(nxt[1], bt, (t - f) / (nxt[0] - t)) if nxt else bt), False
        s, bs = tr[j - 1]
        if j == len(tr):  # lost: hold its last box for max_lost frames
            if f - s > self.c.max_lost:
                return None, False
            prv = tr[j - 2] if j > 1 else None
            return (_sweep(prv[1], bs, (f - s) / (s - prv[0])) if prv else bs), False
        t, bt = tr[j]
        if self.c.between == "hold":
            return bs, False
        a = (f - s) / (t - s)
        return tuple((1 - a) * p + a * q for p, q in zip(bs, bt, strict=True)), False

    def _prune(self) -> None:
        """Forget anchors and tracks no pending or future frame can need (long videos)."""
        oldest = self._pending[0][0] if self._pending else self._n
        k = max(0, bisect_right(self._order, oldest) - 1)  # keep the left anchor of `oldest`
        for i in self._order[:k]:
            del self._anchors[i]
        del self._order[:k]
        del self._face_anchors[: max(0, bisect_right(self._face_anchors, oldest) - 1)]
        keep = []
        for tr in self._tracks:
            last = tr[-1][0]
            if last + self.c.max_lost < oldest and not self._linkable(last):
                continue  # no longer held, and too old to be matched again
            j = bisect_right(tr, oldest, key=lambda e: e[0]) - 2  # two: _sweep needs them
            keep.append(tr[j:] if j > 0 else tr)
        self._tracks = keep
