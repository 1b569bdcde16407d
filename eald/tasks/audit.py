"""task=audit: how much identity a de-identified root still holds (eald.deid.audit).

Faces: dlib CNN detections and ResNet embeddings on sampled frames of both roots (detection rate
after de-identification, leak rate within distance 0.6 of the original identity). Voices:
Resemblyzer embeddings, similarity distributions and equal-error rates. Writes audit.json and
audit.md into the run directory and logs both to the logger.
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
        frames_per_video=a.frames_per_video, detect_max_side=a.detect_max_side,
        face_threshold=a.face_threshold, upsample=a.upsample, out_dir=str(ctx.run_dir),
    )  # fmt: skip
    report = audit(original, Path(deid), conf, logger=ctx.logger)
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
    return TaskResult(rows, metrics)
