"""Face masking for de-identification (paper stage 1: dlib CNN faces blurred in every frame).

Levers: a union of detectors (eald.deid.detectors: dlib CNN/MMOD as the paper, HOG, CenterFace,
MTCNN) at the scales ``min_face_px`` needs, a detection stride, dilation, blur or fill. Fails
closed: detector errors and lost faces blur whole frames; eald.deid.verify checks the output.

Temporal rule (``FaceMasker``). The detector runs on "anchor" frames (every ``stride``-th and the
last); faces are linked across anchors into tracks (IoU / centre distance). A frame is decided
once the anchors ``max_lost + stride`` frames later are known:
* an anchor masks its own detections (box x ``dilate``); other frames use, x ``safety_dilate``
  more: the track's box interpolated between its anchors (or the earlier one held), also across
  missed detections (a track still held at the previous anchor can be found again); for a track
  first seen at anchor t, its box (swept back along its motion) down to the previous anchor; for
  a track last seen at anchor s, its box (swept on along its motion) up to frame s + ``max_lost``;
  and where a track ends at anchor s while another starts at the next anchor t (a face moved
  further than the matcher allows), the box enclosing both, bridging the frames between;
* ``on_lost=blur_frame``: with F the last anchor <= f that found any face, frame f is blurred
  whole when ``max_lost < f - F <= 2 * max_lost`` (lost longer than held boxes last; after
  another ``max_lost`` frames without faces the people are taken to have left);
* ``on_error=blur_frame``: an anchor whose detector raises is blurred whole, and so is every
  frame between it and its neighbouring anchors (nothing is known about them).
"""

from __future__ import annotations

import dataclasses
import math
from bisect import bisect_left, bisect_right
from collections import deque
from time import perf_counter
from typing import Any, NamedTuple

import cv2
import numpy as np

from eald.deid.detectors import Box, Detection, Detector, UnionDetector, iou, plan_detectors
from eald.device import resolve_device


def make_detector(conf: Any, width: int, height: int, verify: bool = False) -> UnionDetector:
    """The union of detectors a FaceDeidConf asks for, at the scales that let it see
    ``min_face_px`` faces in ``width`` x ``height`` frames (ScaleError when it cannot); with
    ``verify``, the gate's: those detectors at their verify thresholds plus ``verify_with``."""
    plans = plan_detectors(
        list(conf.detectors), conf.min_face_px, width, height,
        conf.detect_max_side, conf.upsample, verify=verify,
    )  # fmt: skip
    if verify:  # the independent verifiers run at their own native scale (they see small faces)
        extra = [d for d in conf.verify_with if d not in conf.detectors]
        if extra:
            plans += plan_detectors(extra, conf.min_face_px, width, height, verify=True)
    device = resolve_device(getattr(conf, "device", "auto"))  # torch detectors (cnn); per plan
    return UnionDetector([dataclasses.replace(p, device=device) for p in plans])


def dilate_box(box: Box | tuple[float, ...], factor: float, width: int, height: int) -> Box:
    """Scale a box about its centre and clip it to the frame (outward rounding)."""
    x0, y0, x1, y1 = box
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * factor / 2, (y1 - y0) * factor / 2
    return (
        max(0, math.floor(cx - hw)), max(0, math.floor(cy - hh)),
        min(width, math.ceil(cx + hw)), min(height, math.ceil(cy + hh)),
    )  # fmt: skip


def match_boxes(prev: list[Box], new: list[Box], gaps: list[int]) -> list[tuple[int, int]]:
    """Greedy one-to-one matching by IoU, then centre distance; the distance allowed grows with
    the frames since the previous box was seen (``gaps``): faces move between detections."""
    cands = []
    for i, a in enumerate(prev):
        for j, b in enumerate(new):
            ov = iou(a, b)
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
        self.changed: set[int] = set()  # anchors whose detections did not all continue tracks
        self._tracks: list[list[tuple[int, Box]]] = []  # per track: (anchor, raw box), ascending
        self._last_good: int | None = None
        self._n = 0
        self._horizon = self.c.max_lost + self.c.stride
        # Detection frames wait here until `batch` of them run through the detectors at once;
        # no frame is masked before its anchors are known, so waiting changes no output.
        self._batch: list[tuple[int, np.ndarray]] = []
        self._batch_size = max(1, int(getattr(self.c, "batch", 1)))

    def push(self, rgb: np.ndarray) -> list[MaskedFrame]:
        i, self._n = self._n, self._n + 1
        self._pending.append((i, rgb))
        if i % self.c.stride == 0:
            self._batch.append((i, rgb))
            if len(self._batch) >= self._batch_size:
                self._flush()
        return self._emit(final=False)

    def finish(self) -> list[MaskedFrame]:
        queued = {i for i, _ in self._batch}
        if self._pending and self._pending[-1][0] not in self._anchors.keys() | queued:
            self._batch.append(self._pending[-1])  # a right anchor for the tail
        self._flush()
        return self._emit(final=True)

    def _flush(self) -> None:
        """Detect the queued frames as one batch (detectors without `detect_batch`: one by
        one); if the batch fails, frame by frame, so that only the frames whose detection fails
        are blurred whole."""
        batch, self._batch = self._batch, []
        found = None
        if batch and hasattr(self.det, "detect_batch"):
            t0 = perf_counter()
            try:
                found = self.det.detect_batch([rgb for _, rgb in batch])
            except Exception:  # noqa: BLE001 - retried one by one below, each failing closed
                found = None
            self.timings["detect"] += perf_counter() - t0
        for k, (i, rgb) in enumerate(batch):
            if found is not None:
                self._record(i, list(found[k]), None)
            else:
                self._detect(i, rgb)

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
        self._record(i, faces, err)

    def _record(self, i: int, faces: list[Detection], err: str | None) -> None:
        self._anchors[i] = _Anchor(faces, err)
        self._order.append(i)
        if err is not None:
            return
        live = [tr for tr in self._tracks if self._linkable(tr[-1][0])]
        prev, gaps = [tr[-1][1] for tr in live], [i - tr[-1][0] for tr in live]
        recent = {k for k, tr in enumerate(live) if tr[-1][0] == self._last_good}
        pairs = match_boxes(prev, [tuple(d[:4]) for d in faces], gaps)
        for ti, di in pairs:
            live[ti].append((i, tuple(faces[di][:4])))
        matched = {di for _, di in pairs}
        self._tracks += [[(i, tuple(d[:4]))] for k, d in enumerate(faces) if k not in matched]
        if len(matched) < len(faces) or not recent <= {ti for ti, _ in pairs}:
            self.changed.add(i)  # a face appeared, or one seen at the last anchor was not found
        if faces:
            self._face_anchors.append(i)
        self._last_good = i

    def _linkable(self, last: int) -> bool:
        """A track last seen at anchor ``last`` may match the next detection: it was still held
        at the previous good anchor."""
        return self._last_good is not None and self._last_good - last <= self.c.max_lost

    def _emit(self, final: bool) -> list[MaskedFrame]:
        out = []
        while self._pending and (
            final or (self._order and self._pending[0][0] + self._horizon <= self._order[-1])
        ):
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
            if f != left:
                boxes += [dilate_box(b, c.dilate * c.safety_dilate, w, h)
                          for b in self._bridges(left, right)]  # fmt: skip
            mask_boxes(rgb, boxes, c.mode, c.blur_strength)
        self.timings["mask"] += perf_counter() - t0
        a = self._anchors.get(f)
        return MaskedFrame(f, rgb, boxes, whole, a is not None, len(a.faces) if a else 0)

    def _bridges(self, left: int, right: int) -> list[tuple[int, ...]]:
        """Boxes enclosing a track that ends at anchor ``left`` and one that starts at the next
        anchor ``right``, nearest pairs first: the same face, moved too far to be matched."""
        ended, started = [], []
        for tr in self._tracks:
            j = bisect_left(tr, left, key=lambda e: e[0])
            if j < len(tr) and tr[j][0] == left and (j + 1 == len(tr) or tr[j + 1][0] > right):
                ended.append(tr[j][1])
            if tr[0][0] == right:
                started.append(tr[0][1])
        pairs = sorted(
            (np.hypot(a[0] + a[2] - b[0] - b[2], a[1] + a[3] - b[1] - b[3]), i, k)
            for i, a in enumerate(ended) for k, b in enumerate(started)
        )  # fmt: skip
        used_i, used_k, out = set(), set(), []
        for _, i, k in pairs:
            if i not in used_i and k not in used_k:
                used_i.add(i), used_k.add(k)
                a, b = ended[i], started[k]
                out.append((min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])))
        return out

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
