"""Face de-identification on real media with real dlib detectors (no mocks).

The demo's faces are photographs about 80 px tall at 640x480: the size dlib's detectors need
without upsampling (at the default 320x240 neither finds them), so the demo is made at 640x480.
The dlib CNN costs seconds per frame on a CPU, so it runs on a 3-frame clip only.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from eald.data.demo import generate_demo
from eald.data.media import MediaError, probe, read_audio
from eald.data.synth import (
    index_code_pattern,
    read_index_code,
    truncate_file,
    write_mp4,
    write_wav,
)
from eald.deid.detectors import DlibCnn, DlibHog, Plan, dlib_model_path
from eald.deid.video import FaceDeidConf, deidentify_video

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
HOG = FaceDeidConf(detectors=["hog"], min_face_px=80, stride=1)  # 80 px: HOG's own minimum


def HogDetector(max_side, upsample):  # noqa: N802 - the real dlib HOG at a 640-px frame's scale
    return DlibHog(Plan("hog", min(1.0, (max_side or 640) / 640), upsample, 0.0))


def CnnDetector(max_side, upsample):  # noqa: N802
    return DlibCnn(Plan("cnn", 1.0, upsample, 0.0))


def _anonymiser():
    try:
        from eald.deid.voice import mcadams

        return lambda x, sr: mcadams(x, sr, lam=0.8)
    except ImportError:  # voice module not there yet: spectral inversion is a real transform
        return lambda x, sr: x * np.where(np.arange(x.size) % 2, -1.0, 1.0).astype(np.float32)


def _decode(path: Path) -> tuple[list[np.ndarray], list[Fraction]]:
    with av.open(str(path)) as c:
        frames = list(c.decode(c.streams.video[0]))
    return [f.to_ndarray(format="rgb24") for f in frames], [f.pts * f.time_base for f in frames]


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".") or "tmp" in p.name]


def _write_raw(path, frames, rate=25, pts=None, rotation=0, pix_fmt="yuv420p") -> Path:
    """PyAV directly, for what write_mp4 refuses (odd sizes, rotation metadata, 0 frames)."""
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=rate)
        h, w = frames[0].shape[:2] if frames else (240, 320)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        if rotation:
            s.set_display_rotation(rotation)
        c.start_encoding()
        for i, img in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = pts[i] if pts else i
            c.mux(s.encode(vf))
        c.mux(s.encode(None))
    return path


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("facedemo") / "data"
    return generate_demo(root, videos=2, seconds=2.0, width=640, height=480)


@pytest.fixture(scope="module")
def frames1(demo) -> list[np.ndarray]:
    """Decoded frames of demo video 1 (HOG finds its face on every frame)."""
    return _decode(demo / "videos" / "1.mp4")[0]


@pytest.fixture(scope="module")
def hog_out(demo, tmp_path_factory) -> dict:
    """Demo video 0 (the face HOG misses on ~40% of frames) de-identified with HOG, stride 1."""
    out = tmp_path_factory.mktemp("hogout")
    return deidentify_video(demo / "videos" / "0.mp4", out / "0.mp4", HOG,
                            anonymise_audio=_anonymiser(), return_boxes=True)  # fmt: skip


def test_model_files_located_without_import():
    assert dlib_model_path("mmod_human_face_detector.dat").stat().st_size > 100_000
    with pytest.raises(FileNotFoundError, match="face-recognition-models"):
        dlib_model_path("no_such_model.dat")


def test_hog_finds_demo_faces(demo):
    hog = HogDetector(640, 0)
    for v in (0, 1):
        frames, _ = _decode(demo / "videos" / f"{v}.mp4")
        found = [len(hog.detect(f)) for f in frames[::4]]
        assert sum(found) >= 0.5 * len(found), (v, found)  # the "camera" man is hard for HOG


def test_cnn_deid_leaves_no_detectable_face(demo, tmp_path):
    # The CNN takes seconds per 640x480 frame on a CPU: 3 frames, cropped to 320x240 around the
    # face (still ~80 px) of demo video 0, the face HOG often misses.
    frames, _ = _decode(demo / "videos" / "0.mp4")
    hog = HogDetector(None, 0)
    i0 = next(i for i, f in enumerate(frames) if hog.detect(f))
    d = hog.detect(frames[i0])[0]
    x0, y0 = int(np.clip((d.x0 + d.x1) // 2 - 160, 0, 320)), int(np.clip(d.y1 - 180, 0, 240))
    crop = [np.ascontiguousarray(f[y0 : y0 + 240, x0 : x0 + 320]) for f in frames[i0 : i0 + 3]]
    src, dst = write_mp4(tmp_path / "c.mp4", lambda i: crop[i], 3, 25), tmp_path / "out" / "c.mp4"
    rep = deidentify_video(
        src, dst, FaceDeidConf(detectors=["cnn"], min_face_px=80, stride=1), return_boxes=True
    )
    assert rep["frames"] == 3 and rep["detections"] == 3
    assert rep["faces_detected"] == 3 and rep["frames_with_faces"] == 3  # CNN finds every face
    assert rep["fallback_frames"] == [] and rep["detectors"][0]["name"] == "cnn"
    out, _ = _decode(dst)
    hog = HogDetector(None, 1)  # upsampled: finds faces down to ~40 px
    assert [len(hog.detect(f)) for f in out] == [0, 0, 0]
    cnn = CnnDetector(None, 0)
    assert len(cnn.detect(crop[1])) == 1 and cnn.detect(out[1]) == []
    assert _leftovers(dst.parent) == []


def test_hog_deid_output_has_no_face(hog_out):
    frames, _ = _decode(Path(hog_out["dst"]))
    hog = HogDetector(640, 0)
    assert sum(len(hog.detect(f)) for f in frames) == 0


def test_masked_face_not_recognised(demo, hog_out):
    """dlib's face embedding at the original face's place: same person below 0.6 (dlib's
    threshold) between two original frames, another person after masking."""
    import dlib

    sp = dlib.shape_predictor(str(dlib_model_path("shape_predictor_5_face_landmarks.dat")))
    rec = dlib.face_recognition_model_v1(
        str(dlib_model_path("dlib_face_recognition_resnet_model_v1.dat"))
    )
    orig, _ = _decode(demo / "videos" / "0.mp4")
    masked, _ = _decode(Path(hog_out["dst"]))
    hog, embs = HogDetector(640, 0), []
    for i in [i for i in range(0, 50, 5) if hog.detect(orig[i])][:2]:
        d = hog.detect(orig[i])[0]
        rect = dlib.rectangle(d.x0, d.y0, d.x1 - 1, d.y1 - 1)
        e0, e1 = (
            np.array(rec.compute_face_descriptor(f, sp(f, rect))) for f in (orig[i], masked[i])
        )
        assert np.linalg.norm(e0 - e1) > 0.6
        embs.append(e0)
    assert len(embs) == 2 and np.linalg.norm(embs[0] - embs[1]) < 0.6


def test_stride_masks_cover_every_frame_detection(demo, tmp_path):
    # Video 0: HOG misses the face on ~40% of frames, so masks must bridge missed anchors.
    src = demo / "videos" / "0.mp4"
    conf = FaceDeidConf(detectors=["hog"], min_face_px=80, stride=3, between="interpolate")
    rep = deidentify_video(src, tmp_path / "o.mp4", conf, anonymise_audio=_anonymiser(),
                           return_boxes=True)  # fmt: skip
    assert rep["detections"] == 18  # frames 0, 3, ..., 48 and the last one
    frames, _ = _decode(src)
    hog, checked = HogDetector(640, 0), 0
    for i, f in enumerate(frames):
        covered = np.zeros(f.shape[:2], bool)
        for x0, y0, x1, y1 in rep["boxes"][i]:
            covered[y0:y1, x0:x1] = True
        for d in hog.detect(f):
            checked += 1
            frac = covered[d.y0 : d.y1, d.x0 : d.x1].mean()
            assert frac >= 0.99, (i, d, rep["boxes"][i], frac)
    assert checked >= 25


def test_output_geometry_timing_and_audio(demo, hog_out):
    for rep in [hog_out]:
        src, dst = demo / "videos" / "0.mp4", Path(rep["dst"])
        a, b = probe(src), probe(dst)
        assert (b.num_frames, b.width, b.height, b.fps) == (a.num_frames, a.width, a.height, a.fps)
        assert abs(b.duration_s - a.duration_s) < 1e-3 and b.has_audio
        with av.open(str(dst)) as c:
            assert c.streams.video[0].codec_context.name == "h264"
            assert c.streams.video[0].format.name == "yuv420p"
            au = c.streams.audio[0]
            assert au.codec_context.name == "aac" and au.channels == 1
            assert abs(float(au.duration * au.time_base) - a.duration_s) < 0.1
        x = read_audio(src, 0.0, a.duration_s, 16000)
        y = read_audio(dst, 0.0, a.duration_s, 16000)
        assert np.std(y) > 1e-3 and abs(np.corrcoef(x, y)[0, 1]) < 0.9
        wave = rep["anonymised_audio"]
        assert wave.size == x.size and rep["audio"] == "anonymised"
        assert rep["frames"] == 50 and rep["timings"]["fps"] > 0
        assert sum(rep["boxes_per_frame"].values()) == 50 and len(rep["boxes"]) == 50
        assert _leftovers(dst.parent) == []


def test_no_audio_track_and_audio_override(demo, frames1, tmp_path):
    src = write_mp4(tmp_path / "mute.mp4", lambda i: frames1[i], 6, 25)
    rep = deidentify_video(src, tmp_path / "out" / "mute.mp4", HOG, anonymise_audio=_anonymiser())
    assert rep["audio"] == "none" and rep["anonymised_audio"] is None
    assert not probe(Path(rep["dst"])).has_audio and probe(Path(rep["dst"])).num_frames == 6
    # An audio/<id>.wav override (1 s of the demo's speech) replaces the track, anonymised.
    voice = read_audio(demo / "videos" / "1.mp4", 0.5, 1.5, 16000)  # speech starts at 0.5 s
    wav = write_wav(tmp_path / "1.wav", voice, 16000)
    rep = deidentify_video(src, tmp_path / "out" / "o.mp4", HOG, audio_override=wav,
                           anonymise_audio=_anonymiser())  # fmt: skip
    assert rep["audio"] == "anonymised" and rep["audio_source"] == "override"
    assert rep["anonymised_audio"].size == 16000  # the whole override, for audio/<id>.wav
    y = read_audio(Path(rep["dst"]), 0.0, 6 / 25, 16000)
    assert y.size == 3840 and abs(np.corrcoef(voice[:3840], y)[0, 1]) < 0.9


class FaultyHog(DlibHog):
    """The real HOG detector with one injected fault: it raises on frame 3."""

    def detect(self, rgb):
        if read_index_code(rgb) == 3:
            raise RuntimeError("injected detector fault")
        return super().detect(rgb)


def test_detector_error_blurs_whole_frame(frames1, tmp_path):
    frames = frames1
    src = write_mp4(tmp_path / "s.mp4", lambda i: frames[i], 8, 25, audio=np.zeros(5120))
    out = tmp_path / "out"
    rep = deidentify_video(src, out / "s.mp4", HOG, anonymise_audio=_anonymiser(),
                           return_boxes=True, detector=FaultyHog(Plan("hog", 1.0, 0, 0.0)))  # fmt: skip
    assert rep["fallback_frames"] == [3] and rep["fallback_reasons"] == {
        "error": 1,
        "lost": 0,
        "verify": 0,
        "no_faces": 0,
    }
    assert rep["detection_errors"][0]["frame"] == 3 and rep["boxes"][3] == [[0, 0, 640, 480]]
    got, _ = _decode(out / "s.mp4")

    def sharp(img):
        return cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()

    assert sharp(got[3]) < 0.05 * sharp(got[2])  # whole frame blurred, index band included
    with pytest.raises(RuntimeError, match="injected"):
        deidentify_video(src, out / "r.mp4", FaceDeidConf(detectors=["hog"], min_face_px=80, on_error="raise"),
                         anonymise_audio=_anonymiser(), detector=FaultyHog(Plan("hog", 1.0, 0, 0.0)))  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["s.mp4"]  # failure: no file, no temp


def test_lost_faces_held_then_whole_frame(frames1, tmp_path):
    empty = np.full_like(frames1[0], 128)

    def frame(i):  # the face leaves after frame 5
        img = frames1[i].copy() if i < 6 else empty.copy()
        img[: index_code_pattern(i, 640).shape[0]] = index_code_pattern(i, 640)
        return img

    src = write_mp4(tmp_path / "s.mp4", frame, 14, 25)
    # the face is gone from most frames: on_no_faces=warn publishes (the default would fail)
    conf = FaceDeidConf(detectors=["hog"], min_face_px=80, max_lost=3, on_no_faces="warn")
    rep = deidentify_video(src, tmp_path / "o.mp4", conf, return_boxes=True)
    assert rep["warnings"] and rep["warnings"][0].startswith("no_faces: faces found in 6 of 14")
    assert rep["fallback_frames"] == [9, 10, 11] and rep["fallback_reasons"]["lost"] == 3
    assert all(len(rep["boxes"][i]) == 1 for i in range(0, 9))  # detected, then held 3 frames
    assert rep["boxes"][12] == rep["boxes"][13] == []
    conf = FaceDeidConf(detectors=["hog"], min_face_px=80, max_lost=3, on_lost="none",
                        between="hold", stride=2, on_no_faces="warn")  # fmt: skip
    rep = deidentify_video(src, tmp_path / "o.mp4", conf, return_boxes=True)
    assert rep["fallback_frames"] == [] and rep["frames_with_faces"] == 8  # 5 + held 3

    def centre(b):
        return np.array([b[0] + b[2], b[1] + b[3]]) / 2

    b2, b3, b4 = (rep["boxes"][i][0] for i in (2, 3, 4))  # hold: anchor 2's box on frame 3
    assert np.abs(centre(b3) - centre(b2)).max() <= 1 < np.abs(centre(b4) - centre(b2)).max()


def test_bad_media_raise_and_leave_nothing(demo, tmp_path):
    out = tmp_path / "out"
    cut = shutil.copy(demo / "videos" / "0.mp4", tmp_path / "cut.mp4")
    truncate_file(cut, 0.5)  # moov atom at the end: unreadable
    with pytest.raises(MediaError, match="cut.mp4"):
        deidentify_video(Path(cut), out / "cut.mp4", HOG, anonymise_audio=_anonymiser())
    fast = tmp_path / "fast.mp4"  # moov first (faststart), data cut: frames missing
    with av.open(str(demo / "videos" / "0.mp4")) as i:
        with av.open(str(fast), "w", format="mp4", options={"movflags": "faststart"}) as o:
            s = o.add_stream_from_template(i.streams.video[0])
            for pkt in i.demux(i.streams.video[0]):
                if pkt.dts is not None:
                    pkt.stream = s
                    o.mux(pkt)
    truncate_file(fast, 0.6)
    with pytest.raises(MediaError, match="fast.mp4"):
        deidentify_video(fast, out / "fast.mp4", HOG, anonymise_audio=_anonymiser())
    empty = _write_raw(tmp_path / "empty.mp4", [])
    with pytest.raises(MediaError, match="empty.mp4"):
        deidentify_video(empty, out / "empty.mp4", HOG, anonymise_audio=_anonymiser())
    (tmp_path / "zero.mp4").write_bytes(b"")
    with pytest.raises(MediaError, match="zero.mp4"):
        deidentify_video(tmp_path / "zero.mp4", out / "z.mp4", HOG, anonymise_audio=_anonymiser())
    assert not out.exists() or list(out.iterdir()) == []


def test_odd_size_padded_to_even(frames1, tmp_path):
    odd = [np.ascontiguousarray(f[:241, :321]) for f in frames1[:6]]
    src = _write_raw(tmp_path / "odd.mp4", odd, pix_fmt="yuv444p")  # 4:4:4 allows odd sizes
    assert (probe(src).width, probe(src).height) == (321, 241)
    # the 321x241 crop cuts the face off: a geometry test, so no_faces only warns
    rep = deidentify_video(src, tmp_path / "o.mp4", replace(HOG, on_no_faces="warn"))
    b = probe(Path(rep["dst"]))
    assert (b.width, b.height, b.num_frames) == (322, 242, 6) and rep["padded"] == [1, 1]
    got, _ = _decode(Path(rep["dst"]))
    band = slice(0, 16)  # the index band: no face there, only compression noise
    assert np.abs(got[5][band, :321].astype(int) - odd[5][band]).mean() < 8
    assert np.abs(got[5][:, 321].astype(int) - got[5][:, 320]).mean() < 4  # replicated edge


def test_vfr_pts_kept(frames1, tmp_path):
    frames = frames1
    steps = [1000, 1000, 2500, 700, 1000, 4000, 1000, 1300, 1000, 1000]
    pts = np.concatenate([[0], np.cumsum(steps)]).tolist()
    src = write_mp4(tmp_path / "vfr.mp4", lambda i: frames[i], 11, 25, pts_fn=lambda i: pts[i])
    rep = deidentify_video(src, tmp_path / "o.mp4", HOG, return_boxes=True)
    _, t_in = _decode(src)
    _, t_out = _decode(Path(rep["dst"]))
    assert t_out == t_in and rep["frames"] == 11 and rep["vfr"]
    assert probe(Path(rep["dst"])).duration_s == probe(src).duration_s == 15500 / 25000


def test_rotation_applied_upright(frames1, tmp_path):
    stored = [np.ascontiguousarray(np.rot90(f, -1)) for f in frames1[:5]]  # sideways, 480x640
    src = _write_raw(tmp_path / "rot.mp4", stored, rotation=90)  # displayed upright
    rep = deidentify_video(src, tmp_path / "o.mp4", HOG, return_boxes=True)
    assert rep["rotation"] == 90 and (rep["width"], rep["height"]) == (640, 480)
    assert rep["frames_with_faces"] == 5  # detection saw the upright face
    got, _ = _decode(Path(rep["dst"]))
    assert [read_index_code(g) for g in got] == [0, 1, 2, 3, 4]
    with av.open(rep["dst"]) as c:
        assert next(c.decode(video=0)).rotation == 0


@pytest.mark.skipif(not os.environ.get("EALD_BENCH"), reason="benchmark: set EALD_BENCH=1")
def test_benchmark_fps(tmp_path):
    root = generate_demo(tmp_path / "b", videos=1, seconds=10, width=1280, height=720, fps=32)
    src = root / "videos" / "0.mp4"
    # HOG needs faces of ~80 px at the size it runs at: at 640 px this clip's are ~55 px.
    for det, stride, px in (("hog", 4, 80), ("centerface", 4, 40), ("cnn", 8, 160)):
        conf = FaceDeidConf(detectors=[det], stride=stride, min_face_px=px)
        t0 = time.perf_counter()
        rep = deidentify_video(src, tmp_path / f"{det}.mp4", conf)
        wall = time.perf_counter() - t0
        print(f"\n{det} stride {stride} min face {px}: {rep['frames'] / wall:.1f} fps, "
              f"{rep['timings']}, faces on {rep['frames_with_faces']}/{rep['frames']}, "
              f"fallbacks {rep['fallback_reasons']}")  # fmt: skip
