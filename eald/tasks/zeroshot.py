"""task=zeroshot: the paper's EALD-MLLM method (Fig. 5, stages 2 and 3).

sample -> describe (backbone) -> judge (LLM) -> metrics -> log, pipelined (eald.tasks.pipeline:
sampling ahead, batches or concurrent requests, the judge starting on each description). Both
model stages are cached by content hash (eald.cache), each answer committed as soon as it exists:
a rerun makes zero model calls, and a run killed mid-way resumes where it stopped.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from omegaconf import DictConfig, OmegaConf

from eald.cache import StageCache, cache_key
from eald.data.dataset import Video
from eald.data.media import MediaError, file_fingerprint
from eald.data.sampling import Window, nfbl_text, sample_video, sequence_window
from eald.judge import Judgement, JudgeRequest
from eald.mllm import BackboneError
from eald.registry import REGISTRY, Lazy
from eald.tasks.common import (
    EaldError,
    RunContext,
    TaskResult,
    base_row,
    fail,
    load_split,
    precheck,
    require_scored,
    write_outputs,
)
from eald.tasks.pipeline import Item, PipelineConf, run_pipeline

log = logging.getLogger("eald.zeroshot")
DESCRIBE_VERSION = "describe-1"  # bump when sampling or prompting code changes answers
JUDGE_VERSION = "judge-1"


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def describe_key(
    cfg: DictConfig, video: Video, window: Window, nfbl: str | None, ident: dict
) -> str:
    """Everything that changes a description."""
    return cache_key({
        "stage": DESCRIBE_VERSION,
        "video": video.id,
        "media": file_fingerprint(video.path),
        "audio": file_fingerprint(video.audio_path) if video.audio_path else None,
        "window": window.as_dict(),
        "modality": {k: bool(cfg.modality[k]) for k in ("video", "audio", "nfbl")},
        "sampling": _plain(cfg.sampling),
        "nfbl": nfbl,
        "prompt": _plain(cfg.prompt),
        "backbone": ident,
    })  # fmt: skip


def judge_key(request: JudgeRequest, ident: dict) -> str:
    return cache_key({"stage": JUDGE_VERSION, "response": request.response,
                      "nfbl": request.nfbl, "judge": ident})  # fmt: skip


def run_zeroshot(cfg: DictConfig, ctx: RunContext) -> TaskResult:
    t0 = time.perf_counter()
    ds, ids, _missing = load_split(cfg)
    try:
        judge = REGISTRY.build("judge", cfg.judge)
    except ValueError as err:  # bad judge config, e.g. an unset API key variable
        raise EaldError(str(err)) from err
    if cfg.backbone.name == "tiny" or cfg.backbone.get("tiny"):
        label = "tiny" if cfg.backbone.name == "tiny" else f"{cfg.backbone.name} (tiny config)"
        print(f"NOTE: backbone={label} has random weights: its descriptions are noise, and so are the "
              "metrics of this run. Use a real backbone for results.")  # fmt: skip
    cache = StageCache(cfg.cache.dir)
    b_ident, j_ident = ctx.identity["components"]["backbone"], judge.identity()
    # Loaded on the first cache miss: a cached rerun never loads it.
    backbone = Lazy("backbone", cfg.backbone, check=lambda b: _check_preprocess(cfg, b))
    rows: list[dict[str, Any]] = []
    items: list[Item] = []
    early: list[tuple[dict, JudgeRequest, str]] = []
    hits = 0

    def to_judge(row: dict[str, Any]) -> tuple[dict, JudgeRequest, str] | None:
        """A described row: its judge request, unless the judgement is cached (applied now)."""
        if not (row.get("response") or "").strip():
            # a real answer of the backbone (e.g. EOS first): recorded, nothing to judge
            fail(row, "empty_response", "the backbone's answer is empty: nothing to judge")
            return None
        req = JudgeRequest(row["video_id"], row["response"], row.get("nfbl"))
        key = judge_key(req, j_ident)
        hit = cache.get("judge", key) if judge.deterministic else None
        if hit is not None:
            _apply(row, Judgement(**hit))
            row["cache"]["judge"] = "hit"
            return None
        return row, req, key

    # Protocol order: every row exists up front, and outputs keep this order.
    for vid in ids:
        video = ds.videos.get(vid)
        row = base_row(vid, video)
        rows.append(row)
        if not precheck(row, vid, video):
            continue
        window = sequence_window(vid, video.duration_s, cfg.sequence.fraction, cfg.seed)
        nfbl = nfbl_text(video.events, window, cfg.nfbl_text) if cfg.modality.nfbl else None
        row.update(window=window.as_dict(), nfbl=nfbl, cache={})
        key = describe_key(cfg, video, window, nfbl, b_ident)
        hit = cache.get("describe", key) if b_ident["deterministic"] else None
        if hit is None:
            items.append(Item(len(rows) - 1, (row, video, key)))
            continue
        row["response"], row["cache"]["describe"] = hit["text"], "hit"
        hits += 1
        if (req := to_judge(row)) is not None:
            early.append(req)

    def on_described(item: Item, text: Any) -> Any:
        row, _video, key = item.payload
        if isinstance(text, MediaError):
            fail(row, "media_error", str(text))
            return None
        if isinstance(text, BackboneError):
            fail(row, "backbone_error", str(text))
            return None
        row["inputs"] = item.sample.summary()
        row["response"], row["cache"]["describe"] = text, "miss"
        if b_ident["deterministic"]:  # committed now: a kill -9 later loses nothing
            cache.put("describe", key, {"text": text})
        return to_judge(row)

    def on_judged(req: tuple[dict, JudgeRequest, str], j: Judgement) -> None:
        row, _req, key = req
        if judge.deterministic and j.status == "ok":  # failures are never cached
            cache.put("judge", key, _judgement_dict(j))
        _apply(row, j)
        row["cache"]["judge"] = "miss"

    pipe = PipelineConf(
        sample_workers=cfg.pipeline.sample_workers, prefetch=cfg.pipeline.prefetch,
        batch_size=int(cfg.backbone.get("batch_size", 1)),
        concurrency=int(cfg.backbone.get("concurrency", 1)),
        judge_concurrency=int(getattr(judge, "concurrency", 1)),
    )  # fmt: skip
    one = getattr(judge, "judge_one", None)  # one request per call, no per-call pool or log
    done = run_pipeline(
        items, pipe,
        sample=lambda it: sample_for_backbone(backbone, it.payload[1], cfg),
        describe=lambda samples: backbone.get().describe(samples, cfg.prompt),
        on_described=on_described,
        judge=lambda req: one(req[1]) if one else judge.judge([req[1]])[0],
        on_judged=on_judged, early_judge=early, cached=hits,
    )  # fmt: skip

    calls = {k: done[k] for k in ("backbone", "judge")}
    metrics = write_outputs(ctx, rows, extra={
        "cache": cache.stats(), "calls": calls, "stage_seconds": done["seconds"], "judge_usage": dict(getattr(judge, "usage_total", {})),
        "seconds": round(time.perf_counter() - t0, 3), "backbone": b_ident.get("kind"),
        "backbone_loaded": backbone.loaded,
        "judge": j_ident.get("kind"),
    })  # fmt: skip
    cache.close()
    _report(metrics)
    require_scored(rows, ctx.run_dir)
    return TaskResult(rows, metrics)


def sample_for_backbone(backbone: Lazy, video: Any, cfg: DictConfig) -> Any:
    """One video sampled as the backbone takes it (no fbank for waveform models), then the
    backbone's own preprocessing, if it has any, here in the sampling thread."""
    b = backbone.get()
    # sample_workers videos decode at once: each gets its share of the cores (at least one)
    share = max(1, (os.cpu_count() or 1) // max(1, cfg.pipeline.sample_workers))
    sample = sample_video(video, cfg, fbank=b.preprocess.audio_input == "fbank",
                          decode_workers=share)  # fmt: skip
    prepare = getattr(b, "prepare", None)
    return prepare(sample) if prepare is not None else sample


def _judgement_dict(j: Judgement) -> dict[str, Any]:
    return {"emotion": j.emotion, "confidence": j.confidence, "raw": j.raw, "status": j.status,
            "error": j.error, "attempts": j.attempts, "usage": dict(j.usage)}  # fmt: skip


def _apply(row: dict[str, Any], j: Judgement) -> None:
    row["judge_raw"] = j.raw
    row["judge_status"] = j.status
    row["judge_attempts"] = j.attempts
    if j.status == "ok":
        row["prediction"], row["confidence"] = j.emotion, j.confidence
    else:
        fail(row, j.status, j.error or j.status)


def _check_preprocess(cfg: DictConfig, backbone: Any) -> None:
    p = backbone.preprocess
    n = cfg.sampling.num_frames
    if cfg.modality.video and p.max_frames is not None and n > p.max_frames:
        raise EaldError(f"sampling.num_frames={n}: backbone {backbone.name} takes at most "
                        f"{p.max_frames} frames")  # fmt: skip
    k = cfg.sampling.audio_clips
    if cfg.modality.audio and p.max_audio_clips is not None and k > p.max_audio_clips:
        raise EaldError(f"sampling.audio_clips={k}: backbone {backbone.name} takes at most "
                        f"{p.max_audio_clips} clips")  # fmt: skip


def _report(m: dict[str, Any]) -> None:
    c = m.get("cache", {})
    parts = [f"{s}: {v['hits']} hits / {v['misses']} misses" for s, v in c.items()]
    print(f"\ncache  {'; '.join(parts) or 'empty'}")
    print(f"calls  backbone {m['calls']['backbone']}, judge {m['calls']['judge']}")
