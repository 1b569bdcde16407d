"""task=probe: frozen baseline features + a trained linear head (paper Table 4).

    eald-run task=probe baseline=tsm protocol=part baseline.checkpoint=/ckpt/tsm.pth
    eald-run task=probe baseline=beats baseline.extract_only=true   # fill the cache (GPU) only

Trains on the protocol's train ids and evaluates on its test ids (protocol.split is not used).
Features are cached per (model, video content, window) in `<cache.dir>/features`
(baselines.features); the model is built only on the first miss. A video a baseline cannot use
becomes a failure row (`input_error`, `media_error`, ...) and the run goes on. Confidence is
round(10 * P(predicted class)) in 1..10, not comparable to the judge's score.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from baselines import BaselineInputError
from baselines.features import (
    FeatureStore,
    feature_key,
    modality_of,
    with_concrete_device,
)
from baselines.probe import (
    ProbeSettings,
    confidence_1_10,
    labels_to_targets,
    stratified_val_split,
    train_probe,
)
from eald.data.dataset import Dataset, load_dataset
from eald.data.media import MediaError
from eald.data.sampling import sequence_window
from eald.data.taxonomy import POSITIVE
from eald.metrics import compute_metrics
from eald.registry import Lazy
from eald.tasks.common import (
    EaldError,
    RunContext,
    TaskResult,
    base_row,
    fail,
    precheck,
    require_scored,
)
from eald.tasks.common import write_outputs as _write_outputs

log = logging.getLogger("eald.probe")
NEGATIVE = "negative"


def _ids(cfg: DictConfig, ds: Dataset) -> tuple[list[str], list[str]]:
    p = cfg.protocol
    if not p.train:
        raise EaldError(f"task=probe needs training ids: protocol={p.name} has none "
                        "(use protocol=part, protocol=demo or set protocol.train)")  # fmt: skip
    train = [str(i) for i in p.train]
    test = (
        [str(i) for i in p.test] if p.test is not None else [i for i in ds.videos if i not in train]
    )
    if cfg.limit is not None:  # smoke runs: the first N of each split
        train, test = train[: cfg.limit], test[: cfg.limit]
    overlap = sorted(set(train) & set(test))
    if overlap:
        raise EaldError(f"protocol={p.name}: ids in both train and test: {overlap[:10]}")
    return train, test


def _features(
    cfg: DictConfig, ds: Dataset, ids: list[tuple[str, str]], store: FeatureStore,
    model: Lazy, ident: dict[str, Any],
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:  # fmt: skip
    """One row per (split, id); features of the videos that have them."""
    audio = modality_of(cfg.baseline) == "audio"
    rows: list[dict[str, Any]] = []
    feats: dict[str, np.ndarray] = {}
    for split, vid in tqdm(ids, desc="features", unit="video"):
        video = ds.videos.get(vid)
        row = {**base_row(vid, video), "split": split, "window": None, "feature_cache": None}
        rows.append(row)
        if not precheck(row, vid, video):
            continue
        if audio and not video.has_audio:
            fail(row, "input_error", f"video {vid}: no audio stream and no audio/{vid}.wav "
                 f"override ({cfg.baseline.name} is an audio model)")  # fmt: skip
            continue
        window = sequence_window(vid, video.duration_s, cfg.sequence.fraction, cfg.seed)
        row["window"] = window.as_dict()
        key = feature_key(ident, video, window)
        meta = {"video_id": vid, "window": window.as_dict(), "identity": ident}
        got = store.get(key)
        row["feature_cache"] = "miss" if got is None else "hit"
        if isinstance(got, BaselineInputError):
            fail(row, "input_error", str(got))
            continue
        if got is None:
            try:
                net = model.get()
            except (ImportError, ValueError, FileNotFoundError) as err:
                raise EaldError(f"baseline={cfg.baseline.name}: cannot build it: {err}") from err
            try:
                got = np.asarray(net.features(video, window), dtype=np.float32)
            except BaselineInputError as err:
                store.put_error(key, err, meta)
                fail(row, "input_error", str(err))
                continue
            except MediaError as err:
                fail(row, "media_error", str(err))
                continue
            store.put(key, got, {**meta, "model_identity": _jsonable(net.identity())})
        feats[vid] = got
    return rows, feats


def _jsonable(obj: Any) -> Any:
    return {k: v if isinstance(v, str | int | float | bool | None) else str(v)
            for k, v in obj.items()} if isinstance(obj, dict) else str(obj)  # fmt: skip


def _settings(cfg: DictConfig) -> ProbeSettings:
    b = cfg.baseline
    # The run's seed (not baseline.seed, the random-weights seed) seeds the head, so a
    # `-m seed=0,1,2` sweep gives several heads on the same cached features.
    return ProbeSettings(epochs=b.epochs, lr=b.lr, weight_decay=b.weight_decay,
                         warmup_epochs=b.warmup_epochs, batch_size=b.train_batch_size,
                         seed=cfg.seed, early_stopping=b.early_stopping, patience=b.patience)  # fmt: skip


def run_probe(cfg: DictConfig, ctx: RunContext) -> TaskResult:
    t0 = time.perf_counter()
    b = cfg.baseline  # never none here: run_identity refused an empty slot the task builds
    d = cfg.dataset
    ds = load_dataset(d.root, d.videos_dir, d.labels_file, d.nfbl_file, d.audio_dir)
    train_ids, test_ids = _ids(cfg, ds)
    if b.checkpoint is None:
        print(f"NOTE: baseline={b.name} has no checkpoint (random weights): its features are "
              "noise, and so are the metrics of this run.")  # fmt: skip
    store = FeatureStore(b.feature_dir or Path(cfg.cache.dir) / "features")
    model = Lazy("baseline", b, prepare=with_concrete_device)  # built on the first cache miss
    todo = [("train", i) for i in train_ids] + [("test", i) for i in test_ids]
    rows, feats = _features(cfg, ds, todo, store, model, ctx.identity["components"]["baseline"])
    probe: dict[str, Any] = {"baseline": b.name, "extract_only": bool(b.extract_only),
                             "feature_cache": store.stats(), "backbone_loaded": model.loaded}  # fmt: skip
    test_rows = [r for r in rows if r["split"] == "test"]
    trainable = any(r["split"] == "train" and r["status"] == "ok" for r in rows)
    if not b.extract_only and not trainable:
        # Keep the evidence: the rows say why each training video has no features.
        _write_outputs(ctx, rows, extra={"probe": probe})
        _report(rows, probe)
        raise EaldError(f"task=probe: no training video has features (statuses in "
                        f"{ctx.run_dir / 'predictions.jsonl'}); nothing to train on")  # fmt: skip
    if not b.extract_only:
        probe.update(_train_and_predict(cfg, rows, feats))
    probe["seconds"] = round(time.perf_counter() - t0, 3)
    # write_outputs scores every row it is given; train rows are not predictions, so the
    # test-only metrics are passed as extras (extras override the computed ones).
    extra = {} if b.extract_only else compute_metrics(test_rows)
    metrics = _write_outputs(ctx, rows, extra={**extra, "probe": probe})
    _report(rows, probe)
    if not b.extract_only:
        require_scored(test_rows, ctx.run_dir)
    return TaskResult(rows, metrics)


def _train_and_predict(
    cfg: DictConfig, rows: list[dict[str, Any]], feats: dict[str, np.ndarray]
) -> dict[str, Any]:
    ok = [r for r in rows if r["status"] == "ok"]
    train = [r for r in ok if r["split"] == "train"]
    test = [r for r in ok if r["split"] == "test"]
    dims = {feats[r["video_id"]].shape for r in ok}
    if len(dims) != 1:
        raise EaldError(f"baseline={cfg.baseline.name}: feature shapes differ {sorted(dims)}; "
                        "stale cache? bump baselines.features.FEATURES_VERSION")  # fmt: skip
    if len({r["label"] for r in train}) < 2:
        log.warning("all training videos have one label: the head can only predict it")
    fit_ids = [r["video_id"] for r in train]
    val_ids: list[str] = []
    if cfg.baseline.early_stopping:
        labels = [r["label"] for r in train]
        fit_ids, val_ids = stratified_val_split(fit_ids, labels, cfg.baseline.val_fraction)
        if not val_ids:
            log.warning("early stopping skipped: too few training videos per label for a "
                        "validation split")  # fmt: skip
    label = {r["video_id"]: r["label"] for r in train}

    def xy(ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return np.stack([feats[i] for i in ids]), labels_to_targets([label[i] for i in ids])

    x, y = xy(fit_ids)
    xv, yv = xy(val_ids) if val_ids else (None, None)
    res = train_probe(x, y, _settings(cfg), xv, yv)
    if test:
        probs = res.predict_proba(np.stack([feats[r["video_id"]] for r in test]))
        for r, p in zip(test, probs, strict=True):
            pos = float(p[1])
            r["prediction"] = POSITIVE if pos >= 0.5 else NEGATIVE
            r["confidence"] = confidence_1_10(max(pos, 1 - pos))
            r["p_positive"] = round(pos, 6)
    return {"train_n": len(fit_ids), "val_n": len(val_ids), "test_n": len(test),
            "epochs_run": res.epochs_run, "best_epoch": res.best_epoch,
            "final_train_loss": res.final_train_loss,
            "early_stopping": bool(cfg.baseline.early_stopping and val_ids)}  # fmt: skip


def _report(rows: list[dict[str, Any]], probe: dict[str, Any]) -> None:
    bad = [r for r in rows if r["status"] != "ok"]
    c = probe["feature_cache"]
    print(f"\nfeatures  {c['hits']} hits / {c['misses']} misses; "
          f"model {'built' if probe['backbone_loaded'] else 'not built'}")  # fmt: skip
    for r in bad:
        print(f"  {r['split']:<5} {r['video_id']}: {r['status']}: {r.get('error')}")
    if "train_n" not in probe:
        print(
            "no head trained"
            + (" (extract_only: features cached)" if probe["extract_only"] else "")
        )
    else:
        print(f"probe  train {probe['train_n']}, val {probe['val_n']}, test {probe['test_n']}; "
              f"epochs {probe['epochs_run']} (best {probe['best_epoch']})")  # fmt: skip
