"""De-identify one video: decode -> mask faces -> H.264, with the voice anonymised (stage 1).

Streams frame by frame with PyAV (memory: the masker's look-ahead of a few frames). Decisions:

* Timing: every output frame keeps its input pts in the input time base, so frame count,
  duration and variable frame rates are preserved; frames are never dropped or duplicated.
* Rotation: a display-matrix rotation (phone videos) is applied to the pixels: frames are turned
  upright before detection (the detectors need upright faces) and written without rotation
  metadata, so the output's width/height are the displayed ones (swapped for 90/270 degrees).
  Mirroring in the matrix is ignored.
* Odd sizes: libx264 with yuv420p needs even sizes (its SPS cropping also works in 2-px units),
  so odd frames are padded by one replicated column/row; the report's ``padded`` says by how much.
* Audio: the original track is never copied. It (or ``audio_override``) is decoded to 16 kHz mono,
  anonymised, and encoded as mono AAC of the video's duration. No audio: no audio stream.
* The output is written to a temp file next to ``dst``, scanned by the verification gate
  (eald.deid.verify; leaks re-masked whole in a second write, to a new temp file, from the
  source), and only then renamed: it is complete and verified, or absent.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path
from time import perf_counter
from typing import Any

import av
import numpy as np

from eald.data.media import MediaError, MediaInfo, probe, read_audio, rgb24
from eald.deid.detectors import DETECTORS
from eald.deid.encoder import choose_encoder
from eald.deid.face import (
    Box,
    Detector,
    FaceMasker,
    MaskedFrame,
    make_detector,
    mask_boxes,
    mask_whole_frame,
)
from eald.deid.settings import FaceDeidConf
from eald.deid.streaming import Consumer, Prefetch
from eald.deid.verify import NoFacesError, UnverifiedError, around, verify_output

SAMPLE_RATE = 16000


def _audio_seconds(path: Path) -> float:
    try:
        with av.open(str(path)) as c:
            if not c.streams.audio:
                raise MediaError(f"{path}: no audio stream")
            st = c.streams.audio[0]
            if st.duration is not None:
                return float(st.duration * st.time_base)
            if c.duration is not None:
                return c.duration / av.time_base
    except av.FFmpegError as err:
        raise MediaError(f"{path}: cannot open ({err})") from err
    raise MediaError(f"{path}: audio duration unknown")


def _anonymised_audio(
    src: Path, info: MediaInfo, override: Path | None, fn: Callable | None, lam: float
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(the anonymised source audio at its full length, the same fitted to the video), or
    (None, None) without audio."""
    if override is None and not info.has_audio:
        return None, None
    if fn is None:
        from eald.deid.voice import mcadams  # imported late: optional until audio is needed

        def fn(x: np.ndarray, sr: int) -> np.ndarray:
            return mcadams(x, sr, lam=lam)

    path = override if override is not None else src
    seconds = _audio_seconds(path) if override is not None else info.duration_s
    x = read_audio(path, 0.0, seconds, SAMPLE_RATE)
    y = np.asarray(fn(x, SAMPLE_RATE), dtype=np.float32).reshape(-1)
    if y.size == x.size and np.any(x) and np.array_equal(x, y):
        raise RuntimeError("anonymise_audio returned its input: refusing to write the voice")
    y = np.clip(y, -1.0, 1.0)
    n = int(round(info.duration_s * SAMPLE_RATE))
    fitted = y[:n] if y.size >= n else np.concatenate([y, np.zeros(n - y.size, np.float32)])
    return y, fitted


def _aac_frames(wave: np.ndarray) -> list[av.AudioFrame]:
    frame = av.AudioFrame.from_ndarray(wave[None, :], format="fltp", layout="mono")
    frame.sample_rate, frame.pts, frame.time_base = SAMPLE_RATE, 0, Fraction(1, SAMPLE_RATE)
    # The AAC encoder takes fixed 1024-sample frames; the resampler re-chunks with pts.
    rs = av.AudioResampler(format="fltp", layout="mono", rate=SAMPLE_RATE, frame_size=1024)
    return list(rs.resample(frame)) + list(rs.resample(None))


class ReplayMasker:
    """Re-applies the first pass's mask boxes (no detection), blurring the frames in ``whole``
    whole: a second write of the same video after the verifier found a face."""

    def __init__(self, boxes: list[list[Box]], whole: dict[int, str], conf: FaceDeidConf) -> None:
        self.boxes, self.whole, self.c, self._n = boxes, whole, conf, 0
        self.timings = {"mask": 0.0}

    def push(self, rgb: np.ndarray) -> list[MaskedFrame]:
        i, self._n = self._n, self._n + 1
        t0 = perf_counter()
        h, w = rgb.shape[:2]
        # a frame the first pass never saw cannot be trusted: blurred whole (fail closed)
        reason = self.whole.get(i) or (None if i < len(self.boxes) else "error")
        if reason:
            boxes = [(0, 0, w, h)]
            mask_whole_frame(rgb, self.c.mode, self.c.blur_strength)
        else:
            boxes = list(self.boxes[i])
            mask_boxes(rgb, boxes, self.c.mode, self.c.blur_strength)
        self.timings["mask"] += perf_counter() - t0
        return [MaskedFrame(i, rgb, boxes, reason, False, 0)]

    def finish(self) -> list[MaskedFrame]:
        return []


def deidentify_video(
    src: Path,
    dst: Path,
    conf: Any = None,
    audio_override: Path | None = None,
    anonymise_audio: Callable[[np.ndarray, int], np.ndarray] | None = None,
    lam: float = 0.8,
    return_boxes: bool = False,
    detector: Detector | None = None,
    verifier: Detector | None = None,
) -> dict[str, Any]:
    """Write a de-identified copy of ``src`` to ``dst`` and return its report.

    ``anonymise_audio(x, 16000)`` anonymises the voice (default: McAdams with ``lam``). The report
    is JSON-ready except ``anonymised_audio`` (float32 mono at 16 kHz of the whole source audio,
    or None): pop it before writing. ``return_boxes`` adds each frame's mask boxes;
    ``detector`` / ``verifier`` replace the unions ``conf`` asks for. Raises MediaError (naming
    the file) for unreadable, truncated or empty videos, ScaleError when the detectors cannot see
    ``min_face_px`` faces, NoFacesError (``on_no_faces=fail``) and UnverifiedError (a face is
    still found in the output); then no output or temp file is left behind.
    """
    t_all = perf_counter()
    src, dst = Path(src), Path(dst)
    c = FaceDeidConf.from_any(conf)
    info = probe(src)
    # Scales are planned before any work: a union that cannot see min_face_px fails here.
    det = detector or make_detector(c, info.width, info.height)
    ver = verifier or make_detector(c, info.width, info.height, verify=True)
    timings = dict.fromkeys(("decode", "detect", "mask", "encode", "audio", "verify"), 0.0)
    # Audio first: its stream must exist before the muxer writes a header, and it fails fast.
    t0 = perf_counter()
    full_wave, wave = _anonymised_audio(src, info, audio_override, anonymise_audio, lam)
    timings["audio"] = perf_counter() - t0
    masker = FaceMasker(det, c)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmps: list[Path] = []

    def write(m: Any) -> tuple[Path, dict[str, Any], dict[str, Any]]:
        tmp = dst.with_name(f".{dst.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{dst.suffix}")
        tmps.append(tmp)
        st: dict[str, Any] = {"boxes": [], "whole": {}, "faces": 0, "detected": 0,
                              "with_faces": 0, "anchors": {}}  # fmt: skip
        with av.open(str(src)) as cin, av.open(str(tmp), "w", format="mp4") as cout:
            geo = _transcode(src, cin, cout, m, c, wave, st, timings)
        return tmp, geo, st

    try:
        tmp, geo, st = write(masker)
        n = len(st["boxes"])
        errs = {i for i, _ in masker.errors}
        anchors = {i: (None if i in errs else k) for i, k in st["anchors"].items()}
        warnings, force = _no_faces(src, c, anchors, st, n)
        if verifier is None and not set(map(_family, c.verify_with)) - set(
            map(_family, c.detectors)
        ):
            warnings.append("verification shares the masker's blind spot: deid.face.verify_with "
                            "adds no detector family that did not mask")  # fmt: skip
        final, rounds = st, []
        for r in range(c.verify_rounds + 1):
            if force:  # write again from the source: first-pass boxes, these frames whole
                old = tmp
                tmp, geo, final = write(ReplayMasker(st["boxes"], {**st["whole"], **force}, c))
                old.unlink(missing_ok=True)  # superseded: one temp copy on disk at a time
            t0 = perf_counter()
            v = verify_output(
                tmp, final["boxes"], anchors, set(final["whole"]), ver, c, masker.changed
            )
            timings["verify"] += perf_counter() - t0
            rounds.append(v)
            if not v["leak_frames"]:
                break
            if r == c.verify_rounds:
                raise UnverifiedError(
                    f"{src}: a face is still found at frames {v['leak_frames'][:10]} after "
                    f"{r} re-masking round(s) (deid.face.verify_rounds={c.verify_rounds})"
                )
            radius = max(c.stride, c.verify_stride)
            force.update(dict.fromkeys(sorted(around(v["leak_frames"], radius, n)), "verify"))
        os.replace(tmp, dst)
    except av.FFmpegError as err:
        raise MediaError(f"{src}: de-identification failed ({err})") from err
    finally:
        for t in tmps:
            t.unlink(missing_ok=True)
    timings["detect"] = masker.timings["detect"]
    timings["mask"] = masker.timings["mask"]
    total = perf_counter() - t_all
    hist: dict[str, int] = {}
    for i, b in enumerate(final["boxes"]):
        key = "whole" if i in final["whole"] else str(len(b))
        hist[key] = hist.get(key, 0) + 1
    whole = final["whole"]
    report: dict[str, Any] = {
        "src": str(src), "dst": str(dst), "frames": n, "fps": info.fps,
        "duration_s": info.duration_s, "vfr": info.vfr, **geo,
        "detectors": _plans(det), "min_face_px": c.min_face_px, "stride": c.stride,
        "encoder": asdict(choose_encoder(c.encoder)),
        "face_settings": asdict(c),
        "detections": st["detected"], "faces_detected": st["faces"],
        "frames_with_faces": st["with_faces"],
        "detection_frames_with_faces": sum(bool(k) for k in anchors.values()),
        "fallback_frames": sorted(whole),
        "fallback_reasons": {r: list(whole.values()).count(r)
                             for r in ("error", "lost", "verify", "no_faces")},
        "detection_errors": [{"frame": i, "error": e} for i, e in masker.errors[:20]],
        "boxes_per_frame": dict(sorted(hist.items())),
        "verification": {
            "how": (f"the written output decoded; every {c.verify_stride}th frame and every frame "
                    "of segments where a face appeared, left or moved further than the tracker "
                    "links; frames blurred whole skipped; "
                    f"a face < {c.verify_covered:.0%} inside the masks is a leak"),
            "detectors": _plans(ver), "rounds": rounds,
            "remasked_frames": sum(r == "verify" for r in whole.values()),
            "result": "verified",
        },
        "warnings": warnings,
        "lam": float(lam), "audio": "none" if wave is None else "anonymised",
        "audio_source": None if wave is None else ("override" if audio_override else "input"),
        "timings": {**{k: round(v, 4) for k, v in timings.items()}, "total": round(total, 4),
                    "fps": round(n / total, 3) if total > 0 else None},
        "anonymised_audio": full_wave,
    }  # fmt: skip
    if return_boxes:  # what was published, and what the masker alone had (before the gate)
        report["boxes"] = [[list(b) for b in bs] for bs in final["boxes"]]
        report["mask_boxes"] = [[list(b) for b in bs] for bs in st["boxes"]]
    return report


def _family(name: str) -> str:
    return DETECTORS[name].family


def _plans(det: Any) -> Any:
    """What a detector reports of itself: a union's plans and per-detector finds, else its name."""
    return det.report() if hasattr(det, "report") else [{"name": getattr(det, "name", "custom")}]


def _no_faces(
    src: Path, c: FaceDeidConf, anchors: dict[int, int | None], st: dict[str, Any], n: int
) -> tuple[list[str], dict[int, str]]:
    """(warnings, frames to blur whole) for a video where most detection frames found no face;
    raises NoFacesError under ``on_no_faces=fail``. A video blurred whole already is exempt."""
    ok = [k for k in anchors.values() if k is not None]
    found = sum(k > 0 for k in ok)
    if not ok or len(st["whole"]) >= n or found >= c.no_faces_below * len(ok):
        return [], {}
    msg = (f"faces found in {found} of {len(ok)} detection frames (below "
           f"{c.no_faces_below:.0%}): in an interview this is almost certainly a detector "
           "problem")  # fmt: skip
    if c.on_no_faces == "fail":
        raise NoFacesError(f"{src}: {msg} (deid.face.on_no_faces=fail)")
    if c.on_no_faces == "blur_all":
        return [f"no_faces: {msg}; every frame blurred whole"], dict.fromkeys(range(n), "no_faces")
    return [f"no_faces: {msg}; published with the masks found (on_no_faces=warn)"], {}


def _transcode(src, cin, cout, masker, c, wave, st, timings) -> dict[str, Any]:
    """The decode -> mask -> encode loop; fills ``st`` (per-frame records) and ``timings``."""
    if not cin.streams.video:
        raise MediaError(f"{src}: no video stream")
    vin = cin.streams.video[0]
    vin.thread_type = "AUTO"
    tb = vin.time_base
    pts: dict[int, int] = {}  # frame index -> input pts, until the frame is encoded
    out: dict[str, Any] = {}  # output stream state, set up at the first frame
    chunks = _aac_frames(wave) if wave is not None else []

    durs: dict[Fraction, Fraction] = {}  # frame time -> its duration in the input

    def mux_video(packets: list[av.Packet]) -> None:
        # x264 gives every packet 1/rate: restore the input's durations (VFR; the last frame's
        # sets the stream duration).
        for pkt in packets:
            d = durs.pop(pkt.pts * pkt.time_base, None) if pkt.pts is not None else None
            if d is not None:
                pkt.duration = round(d / pkt.time_base)
            cout.mux(pkt)

    def record(mf: MaskedFrame) -> tuple[np.ndarray, int]:
        # Bookkeeping in the caller's thread, in frame order: what the encoder needs.
        st["boxes"].append(mf.boxes)
        if mf.whole:
            st["whole"][mf.index] = mf.whole
        elif mf.boxes:
            st["with_faces"] += 1
        st["detected"] += mf.detected
        st["faces"] += mf.faces
        if mf.detected:
            st["anchors"][mf.index] = mf.faces
        p = pts.pop(mf.index)
        nxt = pts.get(mf.index + 1, out["end"])
        if nxt is not None and nxt > p:
            durs[p * tb] = (nxt - p) * tb
        return mf.rgb, p

    def encode(item: tuple[np.ndarray, int]) -> None:
        t0 = perf_counter()
        img, p = item
        if out["pad"] != (0, 0):
            img = np.pad(img, ((0, out["pad"][1]), (0, out["pad"][0]), (0, 0)), mode="edge")
        # one-thread swscale: the pixels must not depend on thread scheduling
        vf = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p", threads=1)
        vf.pts, vf.time_base = p, tb
        mux_video(out["v"].encode(vf))
        t_video = float(vf.pts * tb)
        while (
            out["a"] is not None and out["ai"] < len(chunks) and chunks[out["ai"]].time <= t_video
        ):
            cout.mux(out["a"].encode(chunks[out["ai"]]))  # interleave: the muxer buffers little
            out["ai"] += 1
        timings["encode"] += perf_counter() - t0

    def decoded() -> Iterator[tuple[av.VideoFrame, np.ndarray]]:
        frames = cin.decode(vin)
        while True:
            t0 = perf_counter()
            frame = next(frames, None)
            if frame is None:
                return
            rgb = rgb24(frame)
            timings["decode"] += perf_counter() - t0
            yield frame, rgb

    # Decoding and encoding run in threads beside detection, a bounded queue each (memory stays
    # flat), frames kept in order.
    depth = 2 * max(1, c.batch)
    n = 0
    last = None
    with Prefetch(decoded, depth) as source, Consumer(encode, depth) as sink:
        for frame, rgb in source:
            if not out:
                out.update(_open_outputs(cout, vin, frame, c, wave))
            if out["rot"]:
                rgb = np.ascontiguousarray(np.rot90(rgb, out["rot"] // 90))
            p = (
                frame.pts
                if frame.pts is not None
                else round(n / float(vin.guessed_rate or 25) / tb)
            )
            last = pts[n] = p if last is None or p > last else last + 1  # x264 needs rising pts
            n += 1
            for mf in masker.push(rgb):
                sink.put(record(mf))
        if n == 0:
            raise MediaError(f"{src}: no decodable video frames")
        expected = vin.frames or 0
        if expected and n < expected - max(2, expected // 100):
            raise MediaError(f"{src}: only {n} of {expected} frames decodable (file truncated?)")
        for mf in masker.finish():
            sink.put(record(mf))
        sink.close()
    t0 = perf_counter()
    mux_video(out["v"].encode(None))
    if out["a"] is not None:
        for ch in chunks[out["ai"] :]:
            cout.mux(out["a"].encode(ch))
        cout.mux(out["a"].encode(None))
    timings["encode"] += perf_counter() - t0
    return {k: out[k] for k in ("width", "height", "rotation", "padded")}


def _open_outputs(cout, vin, first: av.VideoFrame, c: FaceDeidConf, wave) -> dict[str, Any]:
    rot = int(round((first.rotation or 0) / 90.0)) % 4 * 90  # counter-clockwise degrees
    w, h = (first.width, first.height) if rot in (0, 180) else (first.height, first.width)
    pad = (w % 2, h % 2)
    rate = vin.average_rate or vin.guessed_rate or vin.base_rate or Fraction(25)
    # The encoder must work in the input time base too: in 1/rate, VFR pts would collide.
    enc = choose_encoder(c.encoder)
    v = cout.add_stream(enc.name, rate=rate, time_base=vin.time_base)
    v.width, v.height, v.pix_fmt = w + pad[0], h + pad[1], "yuv420p"
    v.options = enc.options(c.crf, c.preset)
    a = None
    if wave is not None:
        a = cout.add_stream("aac", rate=SAMPLE_RATE)
        a.layout, a.time_base = "mono", Fraction(1, SAMPLE_RATE)
    end = vin.start_time + vin.duration if vin.duration and vin.start_time is not None else None
    out = {"v": v, "a": a, "ai": 0, "rot": rot, "pad": pad, "rotation": rot, "end": end}
    out.update(width=w + pad[0], height=h + pad[1], padded=list(pad))
    return out
