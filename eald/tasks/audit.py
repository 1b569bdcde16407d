"""task=audit: how much identity a de-identified root still holds (eald.deid.audit).

Faces: detections by a family the masking did not use, and dlib ResNet embeddings, on sampled
frames of both roots (detection rates, leak rate within distance 0.6 of the original identity).
Voices: Resemblyzer embeddings, similarity distributions and equal-error rates. Writes audit.json
and audit.md into the run directory, logs both, and exits non-zero when any face leaks, so a
pipeline can gate on it.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from eald.tasks.common import EaldError, RunContext, TaskResult, write_outputs


def run_audit(cfg: DictConfig, ctx: RunContext) -> TaskResult:
    from eald.deid.audit import AuditConf, audit  # dlib and resemblyzer load only for this task

    a = cfg.audit
    original = Path(a.original_root or cfg.dataset.root)
    deid = a.deid_root or cfg.deid.output_root
    if not deid:
        raise EaldError("task=audit needs audit.deid_root (or deid.output_root): what to audit?")
    conf = AuditConf(
        frames_per_video=a.frames_per_video, face_threshold=a.face_threshold,
        detectors=list(a.detectors) if a.detectors else None, min_face_px=a.min_face_px,
        judge_below=a.judge_below, out_dir=str(ctx.run_dir),
    )  # fmt: skip
    try:
        report = audit(original, Path(deid), conf, logger=ctx.logger)
    except ValueError as e:  # a detector choice that shares the masker's blind spot, a scale
        raise EaldError(str(e)) from None
    by_video = {r["video_id"]: r for r in report["faces"]["per_video"]}
    errors = {e["video_id"]: e for e in report["errors"]}
    rows = []
    for vid in sorted(set(by_video) | set(errors), key=lambda v: (not v.isdigit(), v.zfill(12))):
        row = {"video_id": vid, "label": None, "prediction": None, "confidence": None}
        if vid in errors:
            row.update(status="audit_error", error=f"{errors[vid]['file']}: {errors[vid]['error']}")
        else:
            row.update(status="ok", faces=by_video[vid])
        rows.append(row)
    metrics = write_outputs(ctx, rows, extra={"audit": report["summary"]})
    print((ctx.run_dir / "audit.md").read_text())
    s = report["summary"]
    if s["face_leaks"]:
        raise EaldError(
            f"audit: faces of the original identity are visible in {s['face_leaks']} sampled "
            f"frame(s) of {s['face_leak_videos']} video(s) (see {ctx.run_dir / 'audit.md'})"
        )
    return TaskResult(rows, metrics)
