"""Privacy audit: how much identity survives de-identification.

Faces: detections and dlib 128-d embeddings on the same sampled frames of both roots; a frame
leaks when a de-identified face is within `face_threshold` of the original identity. The audit's
detector is of a family the masking did not use (read from the root's `deid_reports/`), at a
scale that sees `min_face_px` faces: a check that shares the masker's blind spot proves nothing.
A video whose originals show a face in fewer than half the sampled frames cannot be judged, and
says so. Voices: Resemblyzer similarities and same/different-speaker EERs (`speakers.csv`).
"""

from __future__ import annotations

import csv
import importlib.metadata
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import lru_cache
from itertools import combinations
from pathlib import Path
from typing import Any

import av
import numpy as np

from eald.data.dataset import VIDEO_EXTS, Video, load_dataset
from eald.data.media import MediaError, MediaInfo, file_fingerprint, probe, read_audio, read_frames
from eald.io import atomic_write_text, write_json
from eald.log import Logger

SR = 16000


# The audit's detector when none is named: the first whose family the masking did not use.
AUDIT_PREFERENCE = ("mtcnn", "centerface", "cnn", "hog")


@dataclass
class AuditConf:
    frames_per_video: int = 8
    face_threshold: float = 0.6  # dlib's same-person threshold on embedding distance
    detectors: Any = None  # list[str] | None; None: a family the masking did not use
    min_face_px: Any = None  # int | None; None: the de-identification's own (or 40)
    judge_below: float = 0.5  # originals with a face in fewer sampled frames: cannot judge
    out_dir: Any = "."  # str | Path; Any keeps the dataclass usable as a Hydra schema


def masking_settings(deid_root: Path) -> tuple[list[str] | None, int | None]:
    """(the detectors the de-identification used, its min_face_px), from its per-video reports;
    None where no report says."""
    import json

    found: list[str] = []
    px = None
    for rep in sorted((Path(deid_root) / "deid_reports").glob("*.json")):
        try:
            settings = json.loads(rep.read_text()).get("face_settings")
        except ValueError:
            continue
        if not isinstance(settings, dict):
            continue
        for d in settings.get("detectors") or []:
            if d not in found:
                found.append(d)
        px = px or settings.get("min_face_px")
    return found or None, px


def choose_detectors(named: list[str] | None, masking: list[str] | None) -> list[str]:
    """The audit's detectors: none of them of a family the masking used."""
    from eald.deid.detectors import DETECTORS

    used = {DETECTORS[m].family for m in masking or [] if m in DETECTORS}
    if named:
        same = [d for d in named if d not in DETECTORS or DETECTORS[d].family in used]
        if same:
            raise ValueError(
                f"audit.detectors={list(named)}: {same} unknown or of a family the masking used "
                f"({sorted(used)}); an audit that shares the masker's blind spot proves nothing"
            )
        return list(named)
    return [next(d for d in AUDIT_PREFERENCE if DETECTORS[d].family not in used)]


@lru_cache(maxsize=1)
def _embedders() -> tuple[Any, Any]:
    import dlib  # heavy: only when an audit actually runs

    from eald.deid.detectors import dlib_model_path

    sp = dlib_model_path("shape_predictor_5_face_landmarks.dat")
    rec = dlib_model_path("dlib_face_recognition_resnet_model_v1.dat")
    return dlib.shape_predictor(str(sp)), dlib.face_recognition_model_v1(str(rec))


@lru_cache(maxsize=8)
def _detector(names: tuple[str, ...], min_face_px: int, width: int, height: int) -> Any:
    from eald.deid.detectors import UnionDetector, plan_detectors

    return UnionDetector(plan_detectors(list(names), min_face_px, width, height))


def face_embeddings(frame: np.ndarray, detector: Any) -> np.ndarray:
    """(k, 128) dlib embeddings of the k faces ``detector`` finds in an RGB uint8 frame."""
    import dlib

    shape_pred, rec = _embedders()
    out = []
    for d in detector.detect(frame):
        # Landmarks and embeddings on the full-resolution frame: sharper aligned face chips.
        box = dlib.rectangle(d.x0, d.y0, d.x1 - 1, d.y1 - 1)  # dlib's corners are inclusive
        out.append(np.array(rec.compute_face_descriptor(frame, shape_pred(frame, box))))
    return np.asarray(out, np.float64).reshape(-1, 128)


# Embeddings keyed by file content: auditing several de-identified variants against the same
# originals (e.g. a sweep of blur strengths) should not re-embed the originals each time.
_CACHE: dict[tuple, Any] = {}


def _memo(fn: Callable[..., Any], path: Path, *args: Any) -> Any:
    key = (fn.__name__, str(path.resolve()), file_fingerprint(path), repr(args))
    if key not in _CACHE:
        if len(_CACHE) >= 1024:  # bounded: drop the oldest
            del _CACHE[next(iter(_CACHE))]
        _CACHE[key] = fn(path, *args)
    return _CACHE[key]


def _video_faces(path: Path, idx: list[int], fps: float, dets: tuple, px: int) -> list[np.ndarray]:
    frames = read_frames(path, idx, fps)
    detector = _detector(dets, px, frames.shape[2], frames.shape[1])
    return [face_embeddings(f, detector) for f in frames]


def _faces_one(
    vid: str, orig: Path, o_info: MediaInfo, deid: Path, conf: AuditConf, dets: tuple, px: int
) -> dict:
    d_info = probe(deid)
    n = max(1, min(o_info.num_frames, int(d_info.duration_s * o_info.fps)))
    k = max(1, min(conf.frames_per_video, n))
    idx = [int((j + 0.5) * n / k) for j in range(k)]  # segment centres: uniform, no fade ends
    # Align by time, not index, in case the de-identified video was re-encoded at another rate.
    d_idx = [min(round(i / o_info.fps * d_info.fps), d_info.num_frames - 1) for i in idx]
    o_faces = _memo(_video_faces, orig, idx, o_info.fps, dets, px)
    d_faces = _memo(_video_faces, deid, d_idx, d_info.fps, dets, px)
    found = [e for e in o_faces if len(e)]
    mean_ref = np.concatenate(found).mean(0, keepdims=True) if found else None
    dists: list[float | None] = []
    for o, d in zip(o_faces, d_faces, strict=True):
        ref = o if len(o) else mean_ref
        ok = ref is not None and len(d)
        dists.append(float(np.linalg.norm(d[:, None] - ref[None], axis=-1).min()) if ok else None)
    leaks = sum(x is not None and x <= conf.face_threshold for x in dists)
    n_o, n_d = sum(len(e) > 0 for e in o_faces), sum(len(e) > 0 for e in d_faces)
    judged = n_o >= conf.judge_below * k
    return {
        "video_id": vid, "frames": k, "original_faces": n_o, "deid_faces": n_d, "leaks": leaks,
        "original_detection_rate": n_o / k, "deid_detection_rate": n_d / k,
        "judged": judged,
        "note": None if judged else (
            f"the audit cannot judge this video: its detector ({'+'.join(dets)}) found a face "
            f"in only {n_o} of {k} original frames"),
        # Undefined when the original never shows a face: there is no identity to leak.
        "leak_rate": leaks / k if mean_ref is not None else None,
        "indices": idx, "min_distance": dists,
    }  # fmt: skip


@lru_cache(maxsize=1)
def _voice_encoder() -> tuple[Any, Any]:
    # webrtcvad (imported by resemblyzer) calls pkg_resources only to read its own version, and
    # setuptools >= 81 ships no pkg_resources: lend a one-call stand-in during the import only.
    stub = types.ModuleType("pkg_resources")
    stub.get_distribution = lambda n: types.SimpleNamespace(version=importlib.metadata.version(n))
    lent = sys.modules.setdefault("pkg_resources", stub) is stub
    try:
        import resemblyzer
    finally:
        if lent:
            del sys.modules["pkg_resources"]
    # The encoder's weights ship inside the package: no download.
    return resemblyzer.VoiceEncoder("cpu", verbose=False), resemblyzer.preprocess_wav


def voice_embedding(path: Path) -> np.ndarray | None:
    """Unit-norm Resemblyzer embedding of a file's 16 kHz mono audio; None if no speech."""
    try:  # read_audio wants an end time; an audio/<id>.wav has no video stream to probe
        with av.open(str(path)) as c:
            st = c.streams.audio[0] if c.streams.audio else None
            end = float(st.duration * st.time_base) if st and st.duration else 0.0
            end = end or (c.duration or 0) / av.time_base
    except (av.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"{path}: cannot open ({e})") from e
    if st is None:
        raise MediaError(f"{path}: no audio stream")
    if end <= 0:
        return None
    enc, preprocess = _voice_encoder()
    x = preprocess(read_audio(path, 0.0, end, SR), source_sr=SR)
    e = np.asarray(enc.embed_utterance(x), np.float64) if x.size >= SR // 10 else None
    return None if e is None else e / max(float(np.linalg.norm(e)), 1e-12)


def _stats(xs: list[float]) -> dict[str, Any]:
    a = np.asarray(xs, np.float64)
    fs = {"mean": np.mean, "std": np.std, "min": np.min, "max": np.max}
    return {"n": int(a.size), **{k: float(f(a)) if a.size else None for k, f in fs.items()},
            "values": a.tolist()}  # fmt: skip


def equal_error_rate(same: list[bool], scores: list[float]) -> float | None:
    """EER of verification trials: where FPR = FNR on the ROC, linearly interpolated."""
    from sklearn.metrics import roc_curve  # 2 s to import: not for every config load

    y = np.asarray(same, bool)
    if y.all() or not y.any():
        return None  # one class only: no ROC
    fpr, tpr, _ = roc_curve(y, np.asarray(scores, np.float64), drop_intermediate=False)
    d = (1.0 - tpr) - fpr  # FNR - FPR: +1 at the strictest threshold, -1 at the loosest
    k = int(np.argmax(d <= 0))
    if d[k] == 0 or k == 0:
        return float(fpr[k])
    t = d[k - 1] / (d[k - 1] - d[k])
    return float(fpr[k - 1] + t * (fpr[k] - fpr[k - 1]))


def _voices(orig: dict[str, np.ndarray], anon: dict[str, np.ndarray], spk: dict | None) -> dict:
    # Embeddings are unit-norm: a dot product is their cosine similarity.
    same_video = {v: float(orig[v] @ anon[v]) for v in orig if v in anon}
    ids = [v for v in orig if spk and v in spk]
    pairs = [(spk[a] == spk[b], float(orig[a] @ orig[b])) for a, b in combinations(ids, 2)]
    cross = [(spk[a] == spk[b], float(orig[a] @ anon[b]))
             for a in ids for b in anon if b in spk and b != a]  # fmt: skip
    notes = [] if spk else ["no speakers.csv in the original root: EERs skipped"]
    eers = [equal_error_rate(*zip(*t, strict=True)) if t else None for t in (pairs, cross)]
    if spk and None in eers:
        notes.append("an EER needs both same- and different-speaker trials")
    return {
        "per_video": [{"video_id": v, "similarity": s} for v, s in same_video.items()],
        "same_video": _stats(list(same_video.values())),
        "same_speaker": _stats([s for same, s in pairs if same]),
        "different_speaker": _stats([s for same, s in pairs if not same]),
        "eer_original": eers[0], "eer_anonymised": eers[1],
        "trials": {"original": len(pairs), "anonymised": len(cross),
                   "original_same": sum(p[0] for p in pairs),
                   "anonymised_same": sum(c[0] for c in cross)},
        "notes": notes,
    }  # fmt: skip


def _rate(rows: list[dict], num: str) -> float | None:  # pooled over frames
    total = sum(r["frames"] for r in rows)
    return sum(r[num] for r in rows) / total if total else None


def audit(
    original_root: Path, deid_root: Path, conf: AuditConf, logger: Logger | None = None
) -> dict[str, Any]:
    """Audit `deid_root` against `original_root`, write audit.json / audit.md into conf.out_dir
    and return the report (its "summary" holds the headline scalars). Per-video problems go to
    report["errors"] (file named) and the other videos go on."""
    t0 = time.perf_counter()
    # By attribute, so a Hydra DictConfig with this schema works as well as an AuditConf.
    conf_dict = {f.name: getattr(conf, f.name) for f in fields(AuditConf)}
    conf_dict["out_dir"] = str(conf_dict["out_dir"])
    original_root, deid_root = Path(original_root), Path(deid_root)
    ds = load_dataset(original_root)
    masking, deid_px = masking_settings(deid_root)
    dets = tuple(choose_detectors(list(conf.detectors) if conf.detectors else None, masking))
    px = int(conf.min_face_px or deid_px or 40)
    conf_dict.update(detectors=list(dets), min_face_px=px, masking_detectors=masking)
    errors: list[dict[str, str]] = []
    face_rows: list[dict] = []
    dpaths = {vid: next((p for e in VIDEO_EXTS if (p := deid_root / "videos" / f"{vid}{e}")
                         .is_file()), None) for vid in ds.videos}  # fmt: skip
    for vid, v in ds.videos.items():
        dpath, file, msg = dpaths[vid], None, ""
        if v.path is None or v.info is None:
            file = v.path or original_root / "videos" / f"{vid}.mp4"
            msg = "; ".join(p.message for p in v.problems) or "missing"
        elif dpath is None:
            file = deid_root / "videos" / f"{vid}.mp4"
            msg = f"missing (tried {', '.join(VIDEO_EXTS)})"
        else:
            try:
                face_rows.append(_faces_one(vid, v.path, v.info, dpath, conf, dets, px))
            except (MediaError, OSError) as e:  # the message starts with the failing file
                file = dpath if str(e).startswith(str(dpath)) else v.path
                msg = str(e).removeprefix(f"{file}: ")
        if file is not None:
            errors.append({"video_id": vid, "stage": "faces", "file": str(file), "error": msg})

    emb, skipped = _voice_embeddings(ds.videos, deid_root, dpaths, errors)
    spk, spk_csv = None, original_root / "speakers.csv"
    if spk_csv.is_file():
        with spk_csv.open(newline="", encoding="utf-8") as fh:
            spk = {r["video_id"].strip(): r["speaker_id"].strip() for r in csv.DictReader(fh)}
    voices = _voices(emb["original"], emb["anonymised"], spk)
    voices["skipped"] = skipped
    summary = {
        "videos": len(ds.videos), "face_videos": len(face_rows),
        "face_frames": sum(r["frames"] for r in face_rows),
        "face_original_detection_rate": _rate(face_rows, "original_faces"),
        "face_deid_detection_rate": _rate(face_rows, "deid_faces"),
        # Pooled over the videos whose original shows a face (the others cannot leak one).
        "face_leak_rate": _rate([r for r in face_rows if r["leak_rate"] is not None], "leaks"),
        "face_leaks": sum(r["leaks"] for r in face_rows),
        "face_leak_videos": sum(r["leaks"] > 0 for r in face_rows),
        "face_unjudged_videos": sum(not r["judged"] for r in face_rows),
        "voice_videos": voices["same_video"]["n"],
        **{f"voice_sim_{k}_mean": voices[k]["mean"]
           for k in ("same_video", "same_speaker", "different_speaker")},
        "voice_eer_original": voices["eer_original"],
        "voice_eer_anonymised": voices["eer_anonymised"], "errors": len(errors),
    }  # fmt: skip
    report = {
        "original_root": str(original_root), "deid_root": str(deid_root),
        "conf": conf_dict, "summary": summary,
        "faces": {"threshold": conf.face_threshold, "per_video": face_rows}, "voices": voices,
        "errors": errors, "runtime_s": round(time.perf_counter() - t0, 2),
    }  # fmt: skip
    write_json(Path(conf.out_dir) / "audit.json", report)
    atomic_write_text(Path(conf.out_dir) / "audit.md", _markdown(report))
    if logger is not None:
        logger.log_metrics({f"audit/{k}": float(x) for k, x in summary.items() if x is not None})
        logger.log_table("audit_faces", face_rows)  # list cells go in as JSON text
        logger.log_table("audit_voices", voices["per_video"])
    return report


def _voice_embeddings(
    videos: dict[str, Video], deid_root: Path, dpaths: dict, errors: list
) -> tuple[dict[str, dict[str, np.ndarray]], list[dict[str, str]]]:
    emb: dict[str, dict[str, np.ndarray]] = {"original": {}, "anonymised": {}}
    skipped: list[dict[str, str]] = []
    for vid, v in videos.items():
        # audio/<id>.wav overrides the video's own track, in either root.
        wav = deid_root / "audio" / f"{vid}.wav"
        srcs = {"original": v.audio_path or (v.path if v.info and v.info.has_audio else None),
                "anonymised": wav if wav.is_file() else dpaths[vid]}  # fmt: skip
        if srcs["original"] is None:
            if v.info is not None:  # an unreadable video is already an error of the faces stage
                skipped.append({"video_id": vid, "reason": "original: no audio"})
            continue
        for side, src in srcs.items():
            if src is None:
                continue  # a missing de-identified video is already an error of the faces stage
            try:
                e = _memo(voice_embedding, src)
            except (MediaError, OSError) as ex:
                if "no audio stream" in str(ex):
                    skipped.append({"video_id": vid, "reason": f"{side}: no audio stream"})
                else:
                    errors.append({"video_id": vid, "stage": f"voices ({side})",
                                   "file": str(src), "error": str(ex)})  # fmt: skip
                continue
            if e is None:
                skipped.append({"video_id": vid, "reason": f"{side}: no speech found"})
            else:
                emb[side][vid] = e
    return emb, skipped


def _f(x: float | None, pct: bool = False) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%" if pct else f"{x:.3f}"


def _row(*cells: object) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def _markdown(r: dict[str, Any]) -> str:
    s, v, t = r["summary"], r["voices"], r["voices"]["trials"]
    lines = [
        "# Privacy audit", "", f"Original `{r['original_root']}`, de-identified "
        f"`{r['deid_root']}`: {s['videos']} videos, {s['errors']} error(s).", "",
        f"## Faces ({s['face_videos']} videos, {s['face_frames']} sampled frames, "
        f"match distance <= {r['faces']['threshold']})", "",
        f"Detector `{'+'.join(r['conf']['detectors'])}` at faces from "
        f"{r['conf']['min_face_px']} px; the masking used "
        f"`{'+'.join(r['conf']['masking_detectors'] or ['unknown'])}`.", "",
        _row("video", "frames", "original detection", "de-identified detection", "leak rate"),
        _row(*["---"] * 5),
    ]  # fmt: skip
    rows = [(x["video_id"], x["frames"], x["original_detection_rate"], x["deid_detection_rate"],
             x["leak_rate"]) for x in r["faces"]["per_video"]]  # fmt: skip
    rows.append(("**all**", s["face_frames"], s["face_original_detection_rate"],
                 s["face_deid_detection_rate"], s["face_leak_rate"]))  # fmt: skip
    lines += [_row(a, b, *(_f(x, True) for x in rest)) for a, b, *rest in rows]
    if s["face_leaks"]:
        lines += ["", f"**LEAK: {s['face_leaks']} frame(s) in {s['face_leak_videos']} video(s) "
                  "show a face of the original identity.**"]  # fmt: skip
    lines += [f"- video {x['video_id']}: {x['note']}" for x in r["faces"]["per_video"]
              if x["note"]]  # fmt: skip
    sims = [("original vs anonymised, same video", v["same_video"]),
            ("original vs original, same speaker", v["same_speaker"]),
            ("original vs original, different speakers", v["different_speaker"])]  # fmt: skip
    lines += [
        "", f"## Voices ({s['voice_videos']} videos, {len(v['skipped'])} skipped)", "",
        _row("comparison", "trials", "mean cosine similarity", "EER"), _row(*["---"] * 4),
        *[_row(name, st["n"], _f(st["mean"]), "") for name, st in sims],
        _row("speaker verification, original vs original", t["original"], "",
             _f(v["eer_original"], True)),
        _row("speaker verification, original vs anonymised", t["anonymised"], "",
             _f(v["eer_anonymised"], True)), "",
        "A higher EER after anonymisation means speakers are harder to tell apart (50% = chance).",
        "With few videos these numbers are rough: one trial moves an EER by a large step.",
    ]  # fmt: skip
    lines += [f"- note: {n}" for n in v["notes"]]
    lines += [f"- error: video {e['video_id']} ({e['stage']}), `{e['file']}`: {e['error']}"
              for e in r["errors"]]  # fmt: skip
    return "\n".join(lines) + "\n"
