"""No face may leak: real photographs at known sizes in 720p clips, masked by each preset, then
checked by a detector of a family the preset did not mask with (MTCNN, facenet-pytorch) at the
known face places, and by dlib's face recogniser at those places (no detector at all).

Clips are short (8 fps) because dlib's CNN costs ~2 s per 640-px frame on this CPU.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from eald.data.media import probe
from eald.deid.detectors import (
    DETECTORS,
    CenterFace,
    Plan,
    ScaleError,
    UnionDetector,
    merge_boxes,
    plan_detectors,
)
from eald.deid.settings import FaceDeidConf
from eald.deid.verify import NoFacesError, UnverifiedError, covered_fraction, scan_frames
from eald.deid.video import deidentify_video
from eald.testing.faces import FaceTrack, face_clip, frames_of, hits
from tests.conftest import run_cli

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
FRAMES = 12
CLIPS = {
    # the case that leaked before: 80 and 115 px faces at 720p, both moving, frontal + 3/4 profile
    "issue": [FaceTrack("astronaut", 80, (200, 200), (400, 260)),
              FaceTrack("cameraman", 115, (800, 150), (760, 300))],
    "small": [FaceTrack("hopper", 40, (300, 420)),  # still
              FaceTrack("cameraman", 48, (900, 200), (1000, 260), flip=True)],
    "large": [FaceTrack("astronaut", 300, (150, 120), (500, 200), flip=True)],
}  # fmt: skip
DEFAULT = FaceDeidConf(stride=4)  # the default detectors, gate and policies; stride as in use


def _mtcnn() -> UnionDetector:
    return UnionDetector(plan_detectors(["mtcnn"], 40, 1280, 720))


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, tuple[Path, list]]:
    tmp = tmp_path_factory.mktemp("faceclips")
    return {name: (p := tmp / f"{name}.mp4", face_clip(p, tracks, FRAMES, fps=8))
            for name, tracks in CLIPS.items()}  # fmt: skip


@pytest.fixture(scope="module")
def default_out(clips, tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("default_out")
    return {name: deidentify_video(src, out / f"{name}.mp4", DEFAULT, return_boxes=True)
            for name, (src, _) in clips.items()}  # fmt: skip


def _independent(src: Path, dst: Path, truth: list, det=None) -> tuple[list[float], int]:
    """(per face track: the fraction of original frames ``det`` (MTCNN) finds it in; the frames
    of the output where it finds a face at a known face place)."""
    det, orig, out = det or _mtcnn(), frames_of(src), frames_of(dst)
    seen = np.zeros(len(truth[0]))
    left = 0
    for i, boxes in enumerate(truth):
        do, dd = det.detect(orig[i]), det.detect(out[i])
        seen += [hits(do, b) for b in boxes]
        left += any(hits(dd, b) for b in boxes)
    return list(seen / len(truth)), left


# -- scales ------------------------------------------------------------------------------------


def test_scales_planned_from_min_face_px():
    cnn, cf = plan_detectors(["cnn", "centerface"], 40, 1280, 720)
    # centerface covers small faces, so the paper's CNN may run at 640 px; centerface itself
    # runs no larger than needed to see faces from 0.8 x 40 = 32 px (at full size: from 24)
    assert (cnn.resize, cnn.upsample, cnn.sees_from_px) == (0.5, 0, 160)
    assert (cf.resize, cf.sees_from_px) == (0.75, 32)
    (cf,) = plan_detectors(["centerface"], 20, 1280, 720)  # smaller faces: enlarged instead
    assert (cf.resize, cf.sees_from_px) == (1.2, 20)
    (cf,) = plan_detectors(["centerface"], 40, 1280, 720, max_side=1280)  # a set cap is kept
    assert (cf.resize, cf.sees_from_px) == (1.0, 24)
    (c,) = plan_detectors(["cnn"], 40, 1280, 720)  # alone: the torch CNN enlarged 2x by resizing
    assert (c.resize, c.upsample, c.scale, c.sees_from_px) == (2.0, 0, 2.0, 40)
    (c,) = plan_detectors(["cnn_dlib"], 40, 1280, 720)  # dlib itself: upsampled once instead
    assert (c.resize, c.upsample, c.scale, c.sees_from_px) == (1.0, 1, 2.0, 40)
    (c,) = plan_detectors(["cnn"], 80, 1280, 720)
    assert (c.resize, c.upsample, c.sees_from_px) == (1.0, 0, 80)
    (c,) = plan_detectors(["cnn"], 160, 1280, 720)
    assert (c.resize, c.upsample) == (0.5, 0)
    (h,) = plan_detectors(["hog"], 30, 640, 480)  # 80/30 = 2.67: two passes, then shrink
    assert (h.upsample, h.resize, h.sees_from_px) == (2, 80 / 30 / 4, 30)
    verify = plan_detectors(["centerface"], 40, 1280, 720, verify=True)
    assert verify[0].threshold == DETECTORS["centerface"].verify_threshold


def test_unseeable_setting_is_refused_in_one_line():
    with pytest.raises(ScaleError) as e:
        plan_detectors(["cnn"], 40, 1280, 720, max_side=640)
    msg = str(e.value)
    assert "\n" not in msg and "min_face_px=40" in msg and "1280x720" in msg
    assert "cnn at scale 0.50 (upsample 0) sees faces from 160 px" in msg
    with pytest.raises(ScaleError, match="choose from"):
        plan_detectors(["yolo"], 40, 1280, 720)


def test_merge_is_union_then_nms():
    from eald.deid.detectors import Detection

    a, b = Detection(10, 10, 50, 50, 0.9), Detection(14, 12, 56, 52, 1.2)
    far = Detection(200, 200, 240, 240, 0.5)
    assert merge_boxes([a, b, far]) == [Detection(10, 10, 56, 52, 1.2), far]


def test_scan_frames_and_coverage():
    # every 4th frame from 2, plus every frame of the segment where the face count changed
    frames, segs = scan_frames(20, {0: 1, 8: 1, 16: 2, 19: 2}, {3}, 4)
    assert frames == [2, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18] and segs == 1
    assert covered_fraction((0, 0, 10, 10), [(0, 0, 5, 10)], (100, 100)) == 0.5
    assert covered_fraction((0, 0, 10, 10), [(0, 0, 5, 10), (5, 0, 20, 20)], (100, 100)) == 1.0


# -- the default preset leaves nothing ---------------------------------------------------------


@pytest.mark.parametrize("name", list(CLIPS))
def test_default_leaves_no_face(clips, default_out, name):
    src, truth = clips[name]
    rep = default_out[name]
    seen, left = _independent(src, Path(rep["dst"]), truth)
    assert min(seen) >= 0.9, f"the independent check is blind on {name}: {seen}"
    assert left == 0
    v = rep["verification"]
    assert v["result"] == "verified" and v["rounds"][-1]["leak_frames"] == []
    assert [d["name"] for d in v["detectors"]] == ["cnn", "centerface", "mtcnn"]
    assert rep["warnings"] == [] and rep["fallback_frames"] == []  # masked, not blurred whole


def test_report_says_which_detector_saw_which_sizes(default_out):
    cnn, cf = default_out["issue"]["detectors"]
    assert (cnn["name"], cnn["scale"], cnn["sees_faces_from_px"]) == ("cnn", 0.5, 160)
    assert (cf["name"], cf["sees_faces_from_px"]) == ("centerface", 32)
    # at 640 px the CNN is blind to the 80 and 115 px faces: CenterFace found all of them
    assert cnn["faces_found"] == 0 and cf["faces_found"] == 2 * 4  # 2 faces x 4 anchors
    assert cf["faces_only_this_detector"] == 8
    large = default_out["large"]["detectors"]
    assert large[0]["faces_found"] == 4 and min(large[0]["face_px_range"]) >= 250


def test_masked_faces_not_recognised(clips, default_out):
    """dlib's face recogniser at the known place of the face: the same person across original
    frames, nobody known after masking (no detector involved)."""
    import dlib

    from eald.deid.detectors import dlib_model_path

    sp = dlib.shape_predictor(str(dlib_model_path("shape_predictor_5_face_landmarks.dat")))
    rec = dlib.face_recognition_model_v1(
        str(dlib_model_path("dlib_face_recognition_resnet_model_v1.dat"))
    )
    src, truth = clips["issue"]
    orig, out = frames_of(src), frames_of(Path(default_out["issue"]["dst"]))

    def emb(img, b):
        return np.array(rec.compute_face_descriptor(img, sp(img, dlib.rectangle(*b))))

    for k in range(2):
        ref = emb(orig[0], truth[0][k])
        assert np.linalg.norm(emb(orig[FRAMES - 1], truth[FRAMES - 1][k]) - ref) < 0.6
        for i in (3, 6, 9):
            assert np.linalg.norm(emb(out[i], truth[i][k]) - ref) > 0.6


def test_default_checked_by_a_family_that_neither_masked_nor_verified(clips, default_out):
    """dlib's HOG (upsampled to see 40 px) did no part of the default's work. It is blind to the
    cameraman's profile even in the originals, so only the faces it sees there are judged."""
    hog = UnionDetector(plan_detectors(["hog"], 40, 1280, 720))
    judged = 0
    for name, (src, truth) in clips.items():
        orig, out = frames_of(src), frames_of(Path(default_out[name]["dst"]))
        for i in range(0, FRAMES, 3):
            seen = [b for b in truth[i] if hits(hog.detect(orig[i]), b)]
            judged += len(seen)
            assert not any(hits(hog.detect(out[i]), b) for b in seen), (name, i)
    assert judged >= 8  # astronaut and Grace Hopper, in both sizes


PRESETS = {  # name -> (settings, clips, frames): the paper's CNN costs ~10 s a 720p frame
    "hog": (FaceDeidConf(detectors=["hog"], stride=4), list(CLIPS), FRAMES),
    "paper": (FaceDeidConf(detectors=["cnn"], min_face_px=80, stride=4), ["issue"], 4),
}


@pytest.mark.parametrize("preset", list(PRESETS))
def test_other_presets_checked_by_centerface(clips, preset, tmp_path):
    """CenterFace neither masked nor verified these presets: it judges what they published.
    They are not asserted perfect: their measured rate is bounded and documented (README, make
    bench). Measured here: hog leaves 1 of 12 frames on "small" (its box for the flipped 48-px
    profile sits off the face, which stays 23% visible; MTCNN cannot see the rest), else 0."""
    conf, names, n = PRESETS[preset]
    cf = UnionDetector(plan_detectors(["centerface"], 40, 1280, 720))
    for name in names:
        src, truth = clips[name]
        if n < FRAMES:  # the first n frames only
            src = tmp_path / f"{name}{n}.mp4"
            truth = face_clip(src, CLIPS[name], n, fps=8)
        rep = deidentify_video(src, tmp_path / f"{name}.mp4", conf, return_boxes=True)
        assert rep["verification"]["result"] == "verified"
        assert [d["family"] for d in rep["detectors"]] == [
            {"hog": "dlib-hog", "paper": "dlib-mmod"}[preset]
        ]
        seen, left = _independent(src, Path(rep["dst"]), truth, cf)
        assert min(seen) == 1.0, (name, seen)  # the check is not blind
        assert left <= 0.1 * n, (name, left)


# -- the gate ----------------------------------------------------------------------------------


class HalfBlind(CenterFace):
    """The real CenterFace with a blind spot put in: it drops every face in the left half of the
    picture (where the astronaut is). What it misses, the gate must catch."""

    def detect(self, rgb):
        return [d for d in super().detect(rgb) if d.x0 >= rgb.shape[1] // 2]


def test_gate_catches_what_the_masker_missed(clips, tmp_path):
    src, truth = clips["issue"]
    blind = HalfBlind(Plan("centerface", 1.0, 0, 0.35))
    rep = deidentify_video(src, tmp_path / "o.mp4", DEFAULT, detector=blind, return_boxes=True)
    v = rep["verification"]
    assert len(v["rounds"]) == 2 and v["rounds"][0]["leak_frames"]  # found, re-masked, clean
    assert v["rounds"][1]["leak_frames"] == [] and v["remasked_frames"] > 0
    assert rep["fallback_reasons"]["verify"] == v["remasked_frames"]
    assert all(rep["boxes"][i] == [[0, 0, 1280, 720]] for i in rep["fallback_frames"])
    _, left = _independent(src, Path(rep["dst"]), truth)
    assert left == 0


class Hallucinating:
    """A verifier fault: it reports a face (where none is) the 1st and 4th time it looks: on the
    first scan, and again on the re-masked output's scan."""

    name = "hallucinating"

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, rgb):
        from eald.deid.detectors import Detection

        self.calls += 1
        return [Detection(600, 300, 700, 400, 1.0)] if self.calls in (1, 4) else []


def test_unverifiable_output_is_never_published(clips, tmp_path):
    src, _ = clips["small"]
    conf = replace(DEFAULT, verify_rounds=1)
    # scans frames 2, 6, 10; frame 2 "leaks", so 0-6 are blurred whole; 10 "leaks" on re-scan
    with pytest.raises(UnverifiedError, match=r"still found at frames \[10\] after 1 re-mask"):
        deidentify_video(src, tmp_path / "o.mp4", conf, verifier=Hallucinating())
    assert list(tmp_path.iterdir()) == []  # no output, no temp file

    class Broken(Hallucinating):
        def detect(self, rgb):
            raise RuntimeError("verifier crashed")

    with pytest.raises(UnverifiedError, match="could not run"):
        deidentify_video(src, tmp_path / "o.mp4", conf, verifier=Broken())
    assert list(tmp_path.iterdir()) == []


def test_no_faces_policies(tmp_path):
    src = tmp_path / "empty.mp4"
    face_clip(src, [], 6, fps=8)  # the textured background only
    with pytest.raises(NoFacesError, match="0 of 3 detection frames"):
        deidentify_video(src, tmp_path / "o.mp4", DEFAULT)
    assert not (tmp_path / "o.mp4").exists()
    rep = deidentify_video(src, tmp_path / "b.mp4", replace(DEFAULT, on_no_faces="blur_all"))
    assert rep["fallback_reasons"]["no_faces"] == 6 and "blurred whole" in rep["warnings"][0]
    rep = deidentify_video(src, tmp_path / "w.mp4", replace(DEFAULT, on_no_faces="warn"))
    assert rep["fallback_frames"] == [] and "on_no_faces=warn" in rep["warnings"][0]


# -- presets other than the default: measured, and the audit sees what they leave --------------


def _dataset(root: Path, clip: Path) -> Path:
    (root / "videos").mkdir(parents=True)
    (root / "videos" / "0.mp4").write_bytes(clip.read_bytes())
    (root / "labels.csv").write_text("video_id,label\n0,positive\n")
    (root / "nfbl.csv").write_text("video_id,start_s,end_s,class_id\n")
    return root


def test_task_refuses_unseeable_setting_at_startup(clips, tmp_path):
    root = _dataset(tmp_path / "d", clips["issue"][0])
    r = run_cli("task=deid", f"dataset.root={root}", f"deid.output_root={tmp_path}/o",
                "deid.face.detectors=[cnn]", "deid.face.detect_max_side=640",
                f"hydra.run.dir={tmp_path}/r", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2
    line = next(x for x in r.stderr.splitlines() if x.startswith("eald-run: error:"))
    assert "video 0: deid.face.min_face_px=40 cannot be seen in 1280x720 frames" in line
    assert not (tmp_path / "o" / "videos" / "0.mp4").exists()


def test_task_statuses_and_audit_sees_a_leak(clips, tmp_path):
    src, truth = clips["issue"]
    root = _dataset(tmp_path / "d", src)
    (root / "videos" / "1.mp4").write_bytes(frames_clip(tmp_path / "e.mp4"))  # no face at all
    (root / "labels.csv").write_text("video_id,label\n0,positive\n1,negative\n")
    out = tmp_path / "o"
    r = run_cli("task=deid", f"dataset.root={root}", f"deid.output_root={out}",
                "deid.face.detectors=[centerface]", "deid.face.stride=4", "deid.workers=2",
                f"hydra.run.dir={tmp_path}/r", cwd=tmp_path, timeout=600)  # fmt: skip
    assert r.returncode == 2 and "FAILED (failed: no_faces) 1:" in r.stdout
    rows = {json.loads(x)["video_id"]: json.loads(x)
            for x in (tmp_path / "r" / "predictions.jsonl").read_text().splitlines()}  # fmt: skip
    assert rows["0"]["status"] == "ok" and rows["1"]["status"] == "failed: no_faces"
    assert not (out / "videos" / "1.mp4").exists()  # never published
    assert json.loads((out / "deid_reports" / "1.json").read_text())["status"] == "failed: no_faces"

    def audit(name: str, *more: str):
        return run_cli("task=audit", f"dataset.root={root}", f"audit.deid_root={out}",
                       *more, f"hydra.run.dir={tmp_path}/{name}", cwd=tmp_path)  # fmt: skip

    # The audit on a clean output: MTCNN (not centerface, which masked) finds nothing left.
    a = audit("a1", "audit.frames_per_video=3")
    assert a.returncode == 0, a.stderr[-2000:]
    rep = json.loads((tmp_path / "a1" / "audit.json").read_text())
    assert rep["conf"]["detectors"] == ["mtcnn"]
    assert rep["conf"]["masking_detectors"] == ["centerface"]
    v0 = rep["faces"]["per_video"][0]
    assert v0["original_detection_rate"] == 1.0 and v0["leaks"] == 0 and v0["judged"]

    # An output with every face visible (the original copied in): the audit reports the leak
    # and exits non-zero. The masker's own family is refused as the auditor.
    (out / "videos" / "0.mp4").write_bytes(src.read_bytes())
    a = audit("a2", "audit.frames_per_video=3")
    assert a.returncode == 2 and "faces of the original identity are visible in 3" in a.stderr
    assert "**LEAK: 3 frame(s) in 1 video(s)" in (tmp_path / "a2" / "audit.md").read_text()
    a = audit("a3", "audit.detectors=[centerface]")
    assert a.returncode == 2 and "shares the masker's blind spot" in a.stderr


def frames_clip(path: Path) -> bytes:
    face_clip(path, [], 6, fps=8)
    assert probe(path).num_frames == 6
    return path.read_bytes()


def test_audit_says_when_it_cannot_judge(tmp_path):
    from eald.deid.audit import AuditConf, audit

    frames_clip(tmp_path / "e.mp4")  # the textured background, no face
    root = _dataset(tmp_path / "d", tmp_path / "e.mp4")
    rep = audit(root, root, AuditConf(frames_per_video=3, out_dir=str(tmp_path / "a")))
    row = rep["faces"]["per_video"][0]
    assert not row["judged"] and row["original_detection_rate"] == 0.0
    assert row["note"].startswith("the audit cannot judge this video: its detector (mtcnn)")
    assert rep["summary"]["face_unjudged_videos"] == 1 and rep["summary"]["face_leaks"] == 0
    assert "the audit cannot judge this video" in (tmp_path / "a" / "audit.md").read_text()


def _stride1_left(tmp_path: Path, conf: FaceDeidConf) -> tuple[list[int], int]:
    """The bench's 1-s clip (astronaut 80 px, cameraman 115 px profile, 720p) at stride 1: the
    frames where a gate detector finds a face < 90% inside the published masks, and how many
    frames the gate blurred whole."""
    from eald.deid.face import make_detector

    tracks = [FaceTrack("astronaut", 80, (200, 200), (420, 300)),
              FaceTrack("cameraman", 115, (820, 140), (740, 330))]  # fmt: skip
    src, out = tmp_path / "s1.mp4", tmp_path / f"out-{conf.dilate}.mp4"
    face_clip(src, tracks, 32, fps=32, seed=0)
    rep = deidentify_video(src, out, conf, return_boxes=True)
    masks = [[tuple(b) for b in bs] for bs in rep["boxes"]]
    ver = make_detector(conf, 1280, 720, verify=True)
    left = [i for i, f in enumerate(frames_of(out))
            if any(covered_fraction(d, masks[i], f.shape[:2]) < 0.9 for d in ver.detect(f))]  # fmt: skip
    return left, rep["verification"]["remasked_frames"]


def test_stride_1_masks_cover_what_the_gate_sees(tmp_path):
    """`make bench deid` found 1.3x boxes at stride 1 leaving part of the profile face outside
    the mask on 6 of 32 frames (no frames between detections, so no safety margin); the default
    1.5x leaves none, and the gate has nothing to re-mask."""
    assert FaceDeidConf().dilate == 1.5
    assert _stride1_left(tmp_path, FaceDeidConf(stride=1)) == ([], 0)
