"""task=deid: turn a dataset root into a de-identified root with the same layout (paper stage 1).

Faces are masked in every frame (eald.deid.face / eald.deid.video), voices anonymised with the
McAdams coefficient (eald.deid.voice) and the original audio never reaches the output. Videos are
processed by worker processes; each output is written atomically with a per-video report
(`deid_reports/<id>.json`), and a rerun skips videos whose report matches the current settings
unless `deid.force=true`. A bad video is recorded and the others go on; the run then exits
non-zero with a summary.
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from eald.cache import cache_key
from eald.data.dataset import load_dataset
from eald.data.media import MediaError
from eald.io import atomic_write_bytes, write_json
from eald.tasks.common import EaldError, RunContext, TaskResult, write_outputs

VERSION = "deid-1"
ANNOTATIONS = ("labels.csv", "nfbl.csv", "speakers.csv")


# How a run is split or scheduled; none of it changes an output.
NOT_SETTINGS = ("output_root", "workers", "force", "shard", "num_shards")


def settings_hash(deid: dict[str, Any]) -> str:
    """What changes an output; a report with another hash is redone."""
    keep = {k: v for k, v in deid.items() if k not in NOT_SETTINGS}
    return cache_key({"version": VERSION, "deid": keep})[:16]


def shard_of(video_id: str, num_shards: int) -> int:
    """Deterministic and stable across machines and runs: sha256 of the id, mod num_shards."""
    return int(hashlib.sha256(video_id.encode()).hexdigest(), 16) % num_shards


def _lambda(deid: dict[str, Any], video_id: str) -> float:
    from eald.deid.voice import draw_lambda

    if deid["random_lambda"]:
        return draw_lambda(video_id, deid["lambda_low"], deid["lambda_high"], deid["lambda_seed"])
    return float(deid["lam"])


def deid_one(job: tuple[str, str, str | None, str, dict[str, Any]]) -> dict[str, Any]:
    """One video in a worker process. Returns a row; never raises for bad media."""
    vid, src, audio_override, out_root, deid = job
    from eald.deid.video import deidentify_video
    from eald.deid.voice import mcadams

    out = Path(out_root)
    dst = out / "videos" / f"{vid}.mp4"
    lam = _lambda(deid, vid)
    t0 = time.perf_counter()
    try:
        report = deidentify_video(
            Path(src), dst, OmegaConf.create(deid["face"]),
            audio_override=Path(audio_override) if audio_override else None,
            anonymise_audio=partial(mcadams, lam=lam), lam=lam,
        )  # fmt: skip
    except Exception as err:  # noqa: BLE001 - every per-video failure becomes that video's row
        status = next((s for cls, s in _failures() if isinstance(err, cls)), "failed: error")
        msg = str(err) if status != "failed: error" else f"{src}: {type(err).__name__}: {err}"
        # An output of earlier settings must not stay published beside a failed verification.
        dst.unlink(missing_ok=True)
        (out / "audio" / f"{vid}.wav").unlink(missing_ok=True)
        write_json(out / "deid_reports" / f"{vid}.json", {
            "video_id": vid, "status": status, "error": msg, "settings": settings_hash(deid),
        })  # fmt: skip
        return {"video_id": vid, "status": status, "error": msg}
    wave = report.pop("anonymised_audio", None)
    if audio_override and wave is not None:
        from eald.data.synth import write_wav

        write_wav(out / "audio" / f"{vid}.wav", wave, 16000)  # the override, anonymised too
    report.update(video_id=vid, status="ok", settings=settings_hash(deid), lam=lam,
                  seconds=round(time.perf_counter() - t0, 3))  # fmt: skip
    write_json(out / "deid_reports" / f"{vid}.json", report)
    return {"video_id": vid, "status": "ok", "deid": _summary(report)}


def _failures() -> list[tuple[type, str]]:
    """A row's status by the exception that ended its video (imported when a video runs)."""
    from eald.deid.detectors import ScaleError
    from eald.deid.verify import NoFacesError, UnverifiedError

    return [(MediaError, "media_error"), (UnverifiedError, "failed: unverified"),
            (NoFacesError, "failed: no_faces"), (ScaleError, "failed: scale")]  # fmt: skip


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("frames", "frames_with_faces", "fallback_frames", "lam", "audio", "seconds", "warnings")
    out = {k: report.get(k) for k in keys}
    if isinstance(out["fallback_frames"], list):
        out["fallback_frames"] = len(out["fallback_frames"])
    v = report.get("verification") or {}
    out["verified_frames"] = sum(r["scanned_frames"] for r in v.get("rounds", [])[-1:])
    out["remasked_frames"] = v.get("remasked_frames")
    return out


def _check_scales(face: dict[str, Any], ds: Any, ids: list[str]) -> None:
    """Refuse at start-up a detector that is not installed, or a setting that cannot see
    ``min_face_px`` faces in some video's frames (one line, naming the first such video)."""
    from eald.deid.detectors import ScaleError, missing_detectors
    from eald.deid.face import make_detector
    from eald.deid.settings import FaceDeidConf

    conf = FaceDeidConf.from_any(face)
    if gone := missing_detectors(conf.detectors + conf.verify_with):
        raise EaldError("; ".join(gone))
    seen: set[tuple[int, int]] = set()
    for vid in ids:
        info = ds.videos[vid].info
        if info is None or (info.width, info.height) in seen:
            continue
        seen.add((info.width, info.height))
        try:  # the gate's union plans the masking detectors and verify_with: both checked
            make_detector(conf, info.width, info.height, verify=True)  # builds; loads no model
        except ScaleError as e:
            raise EaldError(f"video {vid}: {e}") from None


def _done(out: Path, vid: str, settings: str) -> dict[str, Any] | None:
    import json

    rep, dst = out / "deid_reports" / f"{vid}.json", out / "videos" / f"{vid}.mp4"
    if not (rep.is_file() and dst.is_file()):
        return None
    try:
        report = json.loads(rep.read_text())
    except ValueError:
        return None
    ok = report.get("settings") == settings and report.get("status", "ok") == "ok"
    return report if ok else None


def run_deid(cfg: DictConfig, ctx: RunContext) -> TaskResult:
    deid = OmegaConf.to_container(cfg.deid, resolve=True)
    if not deid.get("output_root"):
        raise EaldError("deid.output_root is not set: where should the de-identified root go?")
    src_root, out = Path(cfg.dataset.root).resolve(), Path(deid["output_root"]).resolve()
    if out == src_root:
        raise EaldError(f"deid.output_root={out} is the dataset root: originals would be replaced")
    d = cfg.dataset
    ds = load_dataset(src_root, d.videos_dir, d.labels_file, d.nfbl_file, d.audio_dir)
    ids = list(ds.videos)[: cfg.limit] if cfg.limit else list(ds.videos)
    shard, num_shards = deid.get("shard"), int(deid.get("num_shards", 1))
    if shard is not None:
        ids = [i for i in ids if shard_of(i, num_shards) == shard]
        print(f"deid: shard {shard} of {num_shards}: {len(ids)} videos")
    _check_scales(deid["face"], ds, ids)
    settings = settings_hash(deid)
    rows: dict[str, dict[str, Any]] = {}
    jobs = []
    for vid in ids:
        v = ds.videos[vid]
        if v.path is None:
            rows[vid] = {"video_id": vid, "status": "missing", "error": f"no video file for {vid}"}
        elif not deid["force"] and (rep := _done(out, vid, settings)) is not None:
            rows[vid] = {"video_id": vid, "status": "ok", "skipped": True, "deid": _summary(rep)}
        else:
            audio = str(v.audio_path) if v.audio_path else None
            jobs.append((vid, str(v.path), audio, str(out), deid))
    (out / "videos").mkdir(parents=True, exist_ok=True)
    workers = int(deid["workers"])
    bar = tqdm(total=len(jobs), desc="deid", unit="video")
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(min(workers, len(jobs))) as pool:
            futures = {pool.submit(deid_one, job): job for job in jobs}
            for fut in as_completed(futures):
                vid, src = futures[fut][:2]
                try:
                    row = fut.result()
                except Exception as err:  # noqa: BLE001 - a worker that died (killed, crashed)
                    row = {"video_id": vid, "status": "failed: error",
                           "error": f"{src}: worker failed ({type(err).__name__}: {err})"}  # fmt: skip
                rows[row["video_id"]] = row
                bar.update(1)
    else:
        for job in jobs:
            row = deid_one(job)
            rows[row["video_id"]] = row
            bar.update(1)
    bar.close()
    for name in ANNOTATIONS:  # annotations carry over unchanged (they hold no identity)
        if (src_root / name).is_file():  # a unique temp file: shards may copy at once
            atomic_write_bytes(out / name, (src_root / name).read_bytes())
    ordered = [rows[i] for i in ids]
    for r in ordered:
        v = ds.videos[r["video_id"]]
        r.update(label=v.label, prediction=None, confidence=None)
    failed = [r for r in ordered if r["status"] != "ok"]
    warned = [r for r in ordered if (r.get("deid") or {}).get("warnings")]
    metrics = write_outputs(ctx, ordered, extra={
        "deid": {"videos": len(ordered), "processed": len(jobs), "failed": len(failed),
                 "skipped": sum(bool(r.get("skipped")) for r in ordered), "output_root": str(out),
                 "shard": shard, "num_shards": num_shards},
    })  # fmt: skip
    print(f"\nde-identified {len(ordered) - len(failed)}/{len(ordered)} videos into {out} "
          f"({len(jobs)} processed, {metrics['deid']['skipped']} already done)")  # fmt: skip
    for r in failed:
        print(f"  FAILED ({r['status']}) {r['video_id']}: {r['error']}")
    for r in warned:
        print(f"  WARNING {r['video_id']}: {'; '.join(r['deid']['warnings'])}")
    if failed:
        raise EaldError(f"deid: {len(failed)} of {len(ordered)} videos failed (listed above)")
    return TaskResult(ordered, metrics)
