"""The torch MMOD detector (`cnn`) against dlib's own `cnn_face_detection_model_v1`, the
reference (`cnn_dlib`), on real photographs at several scales, places, flips and small rotations,
on rendered clip frames and on frames without a face; and the reader of dlib's file format."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from eald.deid.detectors import DETECTORS, Plan, build_detector, dlib_model_path, iou
from eald.deid.mmod import MmodFormatError, TorchMmod, read_mmod
from eald.deid.mmod.network import tile_layout
from eald.testing.faces import FaceTrack, photo, render

dlib = pytest.importorskip("dlib")


def _images() -> dict[str, np.ndarray]:
    """The fixed set: faces of three photographs transformed, clip frames, faceless frames."""
    out: dict[str, np.ndarray] = {}
    for name in ("astronaut", "cameraman", "hopper"):
        img = photo(name)
        for s in (0.75, 1.0, 1.4):
            out[f"{name} x{s}"] = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        out[f"{name} flipped"] = np.ascontiguousarray(img[:, ::-1])
        h, w = img.shape[:2]
        for deg in (-10, 8):
            m = cv2.getRotationMatrix2D((w / 2, h / 2), deg, 1.0)
            out[f"{name} rot{deg}"] = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    canvas = np.full((480, 640, 3), 90, np.uint8)  # a face placed off-centre on a plain frame
    face = cv2.resize(photo("astronaut"), (256, 256))
    canvas[200:456, 370:626] = face
    out["astronaut placed"] = canvas
    frame_fn, _ = render([FaceTrack("hopper", 110, (60, 40)), FaceTrack("astronaut", 140, (380, 90),
                                                                         flip=True)],
                         n=1, width=640, height=360)  # fmt: skip
    out["clip frame"] = frame_fn(0)
    for name in ("coffee", "chelsea", "rocket"):
        out[f"no face: {name}"] = np.ascontiguousarray(getattr(data, name)()[..., :3])
    return out


IMAGES = _images()


@pytest.fixture(scope="module")
def detectors():
    plan = Plan("cnn", 1.0, 0, 0.0)
    ref = dlib.cnn_face_detection_model_v1(str(dlib_model_path("mmod_human_face_detector.dat")))
    return build_detector(plan), ref


def _dlib(ref, img):
    return [((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), d.confidence)
            for d in ref(img, 0)]  # fmt: skip


def test_same_detections_as_dlib(detectors):
    mine_det, ref = detectors
    assert isinstance(mine_det, TorchMmod)
    worst_iou, worst_gap, faces = 1.0, 0.0, 0
    for name, img in IMAGES.items():
        want = _dlib(ref, img)
        (got,) = mine_det.run_batch([img])
        assert len(got) == len(want), (name, got, want)
        for box, conf in want:  # dlib's order is by score, as ours
            best = max(got, key=lambda g: iou(g[0], box))
            worst_iou = min(worst_iou, iou(best[0], box))
            worst_gap = max(worst_gap, abs(best[1] - conf))
        faces += len(want)
        if name.startswith("no face"):
            assert not want
    print(f"\nMMOD torch vs dlib: {len(IMAGES)} images, {faces} faces, worst IoU {worst_iou:.4f}, "
          f"worst |confidence gap| {worst_gap:.2e}")  # fmt: skip
    assert faces >= 15 and worst_iou >= 0.9 and worst_gap <= 0.05


def test_batch_equals_single_and_source_boxes(detectors):
    mine_det, _ = detectors
    frames = [IMAGES["hopper x1.0"], IMAGES["hopper flipped"], IMAGES["hopper rot8"]]
    batch = mine_det.run_batch(frames)
    single = [mine_det.run_batch([f])[0] for f in frames]
    for b, s in zip(batch, single, strict=True):
        assert [x[0] for x in b] == [x[0] for x in s]
        assert np.allclose([x[1] for x in b], [x[1] for x in s], atol=1e-4)
    # detect(): enlarged by resize 2.0 (how `cnn` sees small faces), boxes back in source pixels
    half = cv2.resize(IMAGES["astronaut x1.0"], None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    up = build_detector(Plan("cnn", 2.0, 0, 0.0)).detect(half)
    ((x0, y0, x1, y1, _),) = [tuple(d) for d in up]
    assert iou((x0, y0, x1, y1), (84, 35, 132, 83)) > 0.6  # the astronaut's face at half size
    assert DETECTORS["cnn"].family == DETECTORS["cnn_dlib"].family == "dlib-mmod"


def test_file_reader(tmp_path):
    path = dlib_model_path("mmod_human_face_detector.dat")
    m = read_mmod(path)
    convs = [layer for layer in m.layers if layer is not None and hasattr(layer, "weight")]
    assert [c.weight.shape for c in convs] == [(16, 3, 5, 5), (32, 16, 5, 5), (32, 32, 5, 5),
                                               (45, 32, 5, 5), (45, 45, 5, 5), (45, 45, 5, 5),
                                               (1, 45, 9, 9)]  # fmt: skip
    assert [c.padding for c in convs] == [0, 0, 0, 2, 2, 2, 4] and m.window == (80, 80)
    assert np.allclose(m.avg_rgb, (122.782, 117.001, 104.298), atol=1e-3)
    raw = path.read_bytes()
    (tmp_path / "cut.dat").write_bytes(raw[:-100])
    with pytest.raises(MmodFormatError, match=r"cut\.dat: .* at byte"):
        read_mmod(tmp_path / "cut.dat")
    (tmp_path / "long.dat").write_bytes(raw + b"\x00")
    with pytest.raises(MmodFormatError, match="1 bytes left"):
        read_mmod(tmp_path / "long.dat")


def test_tile_layout_known_sizes():
    """dlib's tiled pyramid for a 375x500 image: 22 levels in a 1405x522 tensor (measured with
    dlib's own headers); narrow images take dlib's unsigned comparison."""
    rects, rows, cols = tile_layout(375, 500)
    assert (len(rects), rows, cols) == (22, 1405, 522)
    assert rects[0] == (11, 11, 510, 385)


def test_batched_masking_equals_frame_by_frame():
    """deid.face.batch only changes how detection frames are grouped: the same boxes, the same
    masked pixels; a detector that fails on one frame still blurs only that frame whole."""
    import dataclasses

    from eald.deid.face import FaceMasker, make_detector
    from eald.deid.settings import FaceDeidConf

    frame_fn, _ = render([FaceTrack("astronaut", 90, (40, 40), (200, 120))], n=12, width=480,
                         height=270)  # fmt: skip
    frames = [frame_fn(i) for i in range(12)]

    def run(batch: int, fail_on: int | None = None):
        copies = [f.copy() for f in frames]
        conf = FaceDeidConf(detectors=["cnn"], min_face_px=80, stride=2, batch=batch)
        det = make_detector(conf, 480, 270)
        if fail_on is not None:
            real = det.detect_batch

            def flaky(fs):
                if any(f is copies[fail_on] for f in fs):
                    raise RuntimeError("detector failed")
                return real(fs)

            det.detect_batch = flaky
            det.detect = lambda f: flaky([f])[0]
        m = FaceMasker(det, dataclasses.replace(conf))
        out = [x for f in copies for x in m.push(f)] + m.finish()
        return [(x.boxes, x.whole) for x in out], np.stack([x.rgb for x in out])

    (one, px1), (eight, px8) = run(1), run(8)
    assert one == eight and np.array_equal(px1, px8) and sum(bool(b) for b, _ in one) >= 10
    failed, _ = run(8, fail_on=4)
    errors = {k for k, (_, w) in enumerate(failed) if w == "error"}
    assert 4 in errors and errors <= {3, 4, 5}  # only around the failed anchor
    assert all(w is None for k, (_, w) in enumerate(failed) if k not in errors)
