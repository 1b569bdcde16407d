"""Pieces every task shares: the run context, the split to process, per-video rows, outputs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from eald.data.dataset import Dataset, Problem, Video, load_dataset
from eald.data.media import MediaError
from eald.data.sampling import Sample, sample_video
from eald.io import write_json, write_jsonl
from eald.log import Logger
from eald.metrics import compute_metrics


class EaldError(RuntimeError):
    """An error the runner reports as one clear line (no traceback) and exits non-zero."""


@dataclass
class RunContext:
    run_dir: Path
    logger: Logger
    # eald.tasks.run_identity(cfg), computed once by the runner: the components' identities
    # that identity.json records are the ones the task's cache keys use.
    identity: dict[str, Any]


@dataclass
class TaskResult:
    rows: list[dict[str, Any]]
    metrics: dict[str, Any]
    problems: list[Problem] = field(default_factory=list)

    @property
    def primary(self) -> float | None:
        """What sweepers optimise: accuracy, the paper's headline metric."""
        return self.metrics.get("accuracy")


def load_split(cfg: DictConfig) -> tuple[Dataset, list[str], list[Problem]]:
    d = cfg.dataset
    ds = load_dataset(d.root, d.videos_dir, d.labels_file, d.nfbl_file, d.audio_dir)
    p = cfg.protocol
    train = list(p.train) if p.train is not None else None
    test = list(p.test) if p.test is not None else None
    ids, missing = ds.select(p.name, train, test, p.split)
    if cfg.limit is not None:
        ids = ids[: cfg.limit]
    return ds, ids, missing


def base_row(vid: str, video: Video | None) -> dict[str, Any]:
    return {
        "video_id": vid,
        "label": video.label if video else None,
        "prediction": None,
        "confidence": None,
        "status": "ok",
    }


def fail(row: dict[str, Any], status: str, error: str) -> dict[str, Any]:
    row.update(status=status, error=error, prediction=None, confidence=None)
    return row


def precheck(row: dict[str, Any], vid: str, video: Video | None) -> bool:
    """Fail `row` for a video the dataset cannot supply (absent, invalid, unreadable)."""
    if video is None:
        fail(row, "missing", f"id {vid} is in the protocol but not in labels.csv")
        return False
    if video.problems:
        kinds = {p.kind for p in video.problems}
        status = "media_error" if kinds == {"media_error"} else "invalid"
        fail(row, status, "; ".join(str(p) for p in video.problems))
        return False
    return True


def iter_samples(
    cfg: DictConfig, ds: Dataset, ids: list[str]
) -> Iterator[tuple[dict[str, Any], Sample | None]]:
    """Yield (row, sample) per id; a video that cannot be sampled yields (failure row, None)."""
    for vid in ids:
        video = ds.videos.get(vid)
        row = base_row(vid, video)
        if not precheck(row, vid, video):
            yield row, None
            continue
        try:
            sample = sample_video(video, cfg)
        except MediaError as err:
            yield fail(row, "media_error", str(err)), None
            continue
        row["window"] = sample.window.as_dict()
        yield row, sample


def require_scored(rows: list[dict[str, Any]], run_dir: Path) -> None:
    """After the outputs are written: a scoring run that scored no video must not exit 0 as if
    it had a result. Raises EaldError with the reason in one line."""
    if why := nothing_scored(rows):
        raise EaldError(f"{why} (outputs in {run_dir})")


def nothing_scored(rows: list[dict[str, Any]]) -> str | None:
    """One line saying why a scoring run scored no video (None when it scored some): the ids
    missing from the dataset, else the most common failures."""
    if any(r.get("prediction") is not None for r in rows):
        return None
    if not rows:
        return "nothing scored: the split selected no video"
    missing = [r["video_id"] for r in rows if r.get("status") == "missing"]
    if len(missing) == len(rows):
        shown = ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else "")
        return (f"nothing scored: all {len(rows)} ids of the protocol are missing from the "
                f"dataset ({shown}); is dataset.root / protocol right?")  # fmt: skip
    counts: dict[str, int] = {}
    example: dict[str, str] = {}
    for r in rows:
        key = str(r.get("status"))
        counts[key] = counts.get(key, 0) + 1
        example.setdefault(key, str(r.get("error") or r.get("judge_status") or "")[:160])
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
    why = "; ".join(f"{n} x {k} (e.g. {example[k]})" for k, n in top)
    return f"nothing scored: all {len(rows)} videos failed: {why}"


def write_outputs(
    ctx: RunContext, rows: list[dict[str, Any]], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """predictions.jsonl + metrics.json (atomically), mirrored to the logger."""
    metrics = {**compute_metrics(rows), **(extra or {})}
    write_jsonl(ctx.run_dir / "predictions.jsonl", rows)
    write_json(ctx.run_dir / "metrics.json", metrics)
    ctx.logger.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)})
    ctx.logger.log_table("predictions", rows)
    return metrics
