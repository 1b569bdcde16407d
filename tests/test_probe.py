"""task=probe: the head's schedule, determinism, early stopping and validation split (unit), then
real eald-run subprocesses for every baseline (tiny architectures, random weights) on the demo
fixture: cold run, warm rerun from the feature cache, and videos a baseline cannot use."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.probe import (
    ProbeSettings,
    make_scheduler,
    schedule_steps,
    stratified_val_split,
    train_probe,
    warmup_cosine,
)
from eald.data.demo import generate_demo
from eald.data.synth import write_mp4
from tests.conftest import run_cli

BASELINES = ["tsm", "timesformer", "video_swin", "slowfast", "beats"]
SPLIT = ["protocol.name=demo", "protocol.train=[0,1]", "protocol.test=[2,3]"]
FAST = ["baseline.tiny=true", "baseline.device=cpu", "baseline.num_clips=1", "baseline.epochs=5"]
# BEATs' `paper` variant plays the audio 50x fast: it needs >= ~8.5 s of audio for one patch, more
# than the 6-s fixture has (that failure is tested below).


# --- unit --------------------------------------------------------------------------------------


def test_schedule_steps_round_half_up():
    assert schedule_steps(72, 16, 30, 2.5) == (150, 13)  # 5 steps per epoch
    assert schedule_steps(4, 16, 30, 2.5) == (30, 3)  # 2.5 rounds up, not to even


def test_warmup_then_cosine_values_exactly():
    total, warm = 100, 10
    assert warmup_cosine(0, total, warm) == pytest.approx(0.1)
    assert warmup_cosine(4, total, warm) == pytest.approx(0.5)
    assert warmup_cosine(9, total, warm) == pytest.approx(1.0)
    assert warmup_cosine(10, total, warm) == pytest.approx(1.0)  # cosine starts at its top
    assert warmup_cosine(55, total, warm) == pytest.approx(0.5)  # halfway through the cosine
    assert warmup_cosine(40, total, warm) == pytest.approx(0.5 * (1 + math.cos(math.pi / 3)))
    assert warmup_cosine(100, total, warm) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(0, total, 0) == pytest.approx(1.0)  # no warm-up


def test_lambda_lr_is_stepped_per_optimizer_step():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=2e-3)
    sched = make_scheduler(opt, total_steps=20, warmup_steps=4)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:5] == pytest.approx([5e-4, 1e-3, 1.5e-3, 2e-3, 2e-3])
    assert lrs[12] == pytest.approx(2e-3 * 0.5 * (1 + math.cos(math.pi * 8 / 16)))
    assert lrs[-1] == pytest.approx(2e-3 * 0.5 * (1 + math.cos(math.pi * 15 / 16)))


def _blobs(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, d)) * 3 + 10 + y[:, None] * 6.0  # offset and scale: standardised
    return x.astype(np.float32), y


def test_training_is_deterministic_and_learns():
    x, y = _blobs(40, 16, 0)
    s = ProbeSettings(epochs=20, batch_size=8, seed=3)
    a, b = train_probe(x, y, s), train_probe(x, y, s)
    for k, v in a.head.state_dict().items():
        assert torch.equal(v, b.head.state_dict()[k]), k
    assert np.array_equal(a.predict_proba(x), b.predict_proba(x))
    assert (a.predict_proba(x).argmax(1) == y).mean() >= 0.9
    c = train_probe(x, y, ProbeSettings(epochs=20, batch_size=8, seed=4))
    assert not torch.equal(a.head.weight, c.head.weight)  # the seed matters
    assert a.epochs_run == a.best_epoch == 20 and a.final_train_loss < a.history[0]["train_loss"]


def test_early_stopping_stops_and_restores_the_best_head():
    x, y = _blobs(40, 16, 1)
    # Validation labels are the opposite of what training teaches: its loss rises from epoch 1.
    s = ProbeSettings(epochs=50, batch_size=8, seed=0, early_stopping=True, patience=3, lr=1e-2)
    res = train_probe(x, y, s, x[:10], 1 - y[:10])
    val = [h["val_loss"] for h in res.history]
    assert res.epochs_run < 50 and res.epochs_run == res.best_epoch + 3
    assert res.best_epoch == int(np.argmin(val)) + 1
    z = torch.from_numpy((x[:10] - res.mean) / res.std).float()
    with torch.no_grad():
        restored = torch.nn.functional.cross_entropy(res.head(z), torch.from_numpy(1 - y[:10]))
    assert float(restored) == pytest.approx(min(val), rel=1e-6)


def test_stratified_val_split_is_deterministic_and_balanced():
    ids = [str(i) for i in range(100, 172)]
    labels = ["positive" if i % 2 else "negative" for i in range(72)]
    fit, val = stratified_val_split(ids, labels, 0.2)
    lab = dict(zip(ids, labels, strict=True))
    assert len(val) == 14 and sorted(lab[i] for i in val) == ["negative"] * 7 + ["positive"] * 7
    assert sorted(fit + val) == sorted(ids) and not set(fit) & set(val)
    order = np.random.default_rng(0).permutation(72)
    fit2, val2 = stratified_val_split([ids[k] for k in order], [labels[k] for k in order], 0.2)
    assert sorted(val2) == sorted(val) and sorted(fit2) == sorted(fit)
    # Each label keeps at least one training id.
    assert stratified_val_split(["1", "2"], ["positive", "negative"], 0.5) == (["1", "2"], [])


def test_feature_key_has_what_changes_features_and_nothing_else(demo_root: Path, tmp_path: Path):
    from omegaconf import OmegaConf

    from baselines.features import FeatureStore, feature_identity, feature_key
    from eald.data.dataset import load_dataset
    from eald.data.sampling import sequence_window

    video = load_dataset(demo_root, "videos", "labels.csv", "nfbl.csv", "audio").videos["0"]
    conf = OmegaConf.create({"name": "tsm", "checkpoint": None, "tiny": True, "num_clips": 1,
                             "variant": "paper", "seed": 0, "device": "cpu", "epochs": 5})  # fmt: skip
    w1, w2 = sequence_window("0", 6.0, 1.0, 0), sequence_window("0", 6.0, 0.5, 0)
    key = feature_key(feature_identity(conf), video, w1)
    same = OmegaConf.merge(conf, {"device": "cuda", "epochs": 30})  # GPU extraction, CPU training
    assert feature_key(feature_identity(same), video, w1) == key
    assert feature_key(feature_identity(conf), video, w2) != key
    ckpt = tmp_path / "w.pth"
    ckpt.write_bytes(b"weights-1")
    with_ckpt = OmegaConf.merge(conf, {"checkpoint": str(ckpt)})
    k1 = feature_key(feature_identity(with_ckpt), video, w1)
    ckpt.write_bytes(b"weights-2")  # same path, new weights: a new key
    assert feature_key(feature_identity(with_ckpt), video, w1) not in (k1, key)
    store = FeatureStore(tmp_path / "f")
    assert store.get(key) is None
    store.put(key, np.arange(3, dtype=np.float32), {"video_id": "0"})
    assert np.array_equal(store.get(key), np.arange(3)) and store.stats() == {
        "hits": 1,
        "misses": 1,
    }
    assert not list((tmp_path / "f").rglob("*.tmp"))


def test_bad_baseline_values_fail_at_start_naming_the_key():
    from hydra import compose, initialize_config_dir

    from eald.config import ConfigError, register_configs, validate
    from tests.conftest import REPO

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "eald" / "conf"), version_base="1.3"):
        for bad, key in [("baseline.variant=fast", "baseline.variant"),
                         ("baseline.val_fraction=1.0", "baseline.val_fraction"),
                         ("baseline.warmup_epochs=40", "baseline.warmup_epochs")]:  # fmt: skip
            cfg = compose("config", overrides=["baseline=beats", "dataset.root=/x", bad])
            with pytest.raises(ConfigError, match=key):
                validate(cfg)


# --- end to end --------------------------------------------------------------------------------
# Five models x (cold, warm) as two Hydra sweeps: one interpreter start per sweep instead of per
# run keeps this file under the 90-s budget on 2 shared cores; each model is still its own test.


def _rows(run: Path) -> dict[str, dict]:
    return {r["video_id"]: r for r in map(json.loads, (run / "predictions.jsonl").open())}


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _bad_root(demo_root: Path, dst: Path) -> Path:
    """The demo fixture plus video 4 (0.12 s: shorter than one clip of every model, BEATs'
    16-frame fbank patch of 0.17 s included) and video 5 (10 s, no audio stream)."""
    root = shutil.copytree(demo_root, dst)
    frame = lambda i: np.full((64, 64, 3), 40 * (i % 6), np.uint8)  # noqa: E731
    tone = 0.1 * np.sin(np.linspace(0, 2000, 3200)).astype(np.float32)
    write_mp4(root / "videos" / "4.mp4", frame, 3, 25, audio=tone)
    write_mp4(root / "videos" / "5.mp4", frame, 250, 25, audio=None)
    with (root / "labels.csv").open("a", newline="") as fh:
        csv.writer(fh).writerows([["4", "positive"], ["5", "negative"]])
    return root


BAD_SPLIT = ["protocol.name=demo", "protocol.train=[0,1,4]", "protocol.test=[2,3,5]"]
UNUSABLE = {name: {"4"} for name in BASELINES} | {"beats": {"4", "5"}}


def _test_options(conf_dir: Path) -> list[str]:
    """baseline/<name>_t.yaml = <name> at test sizes. A sweep composes its base config with the
    default `baseline: none` first, so `baseline.tiny=true` on the command line cannot go with
    `-m baseline=a,b`: the test sizes live in options of an extra --config-dir instead."""
    (conf_dir / "baseline").mkdir(parents=True)
    for name in BASELINES:
        keys = "\n".join(k.removeprefix("baseline.").replace("=", ": ") for k in FAST)
        text = f"defaults:\n  - {name}\n  - _self_\n\n{keys}\n"
        (conf_dir / "baseline" / f"{name}_t.yaml").write_text(text)
    return [f"{name}_t" for name in BASELINES]


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> dict[str, dict[str, Path]]:
    """{"cold"|"warm": {baseline: job dir}}; the same sweep twice on one feature cache."""
    tmp = tmp_path_factory.mktemp("probe")
    # 10-s videos: TimeSformer's native clip is 8 x 32 frames (9 s at 25 fps) and BEATs' paper
    # variant needs >= 8.5 s of audio for one patch; the shared fixture's videos last 6 s.
    long_demo = generate_demo(tmp / "long", videos=4, seconds=10.0, seed=0)
    root = _bad_root(long_demo, tmp / "data")
    options = _test_options(tmp / "conf")
    args = ["-m", f"--config-dir={tmp / 'conf'}", "task=probe", f"baseline={','.join(options)}",
            f"dataset.root={root}", f"cache.dir={tmp}/cache", *BAD_SPLIT]  # fmt: skip
    out: dict[str, dict[str, Path]] = {}
    for run in ("cold", "warm"):
        r = run_cli(*args, f"hydra.sweep.dir={tmp}/{run}", cwd=tmp, timeout=600)
        assert r.returncode == 0, f"{run} sweep failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
        jobs = [p.parent for p in (tmp / run).glob("*/metrics.json")]
        out[run] = {_metrics(j)["probe"]["baseline"]: j for j in jobs}
        assert sorted(out[run]) == sorted(BASELINES), r.stdout[-3000:]
    return out


@pytest.mark.parametrize("name", BASELINES)
def test_probe_cold_then_warm_rerun_from_the_feature_cache(name: str, sweeps):
    cold, warm = sweeps["cold"][name], sweeps["warm"][name]
    rows, m1 = _rows(cold), _metrics(cold)
    bad = UNUSABLE[name]
    assert [(v, r["split"]) for v, r in rows.items()] == [
        ("0", "train"), ("1", "train"), ("4", "train"), ("2", "test"), ("3", "test"), ("5", "test")
    ]  # fmt: skip
    for v, r in rows.items():
        if v in bad:  # too short for one clip (4); no audio for an audio model (5)
            assert r["status"] == "input_error" and r["error"] and r["prediction"] is None
        else:
            assert r["status"] == "ok" and r["feature_cache"] == "miss"
            assert r["window"] == {"start_s": 0.0, "end_s": r["window"]["end_s"],
                                   "fraction": 1.0, "seed": None}  # fmt: skip
    for v in {"2", "3", "5"} - bad:
        assert rows[v]["prediction"] in ("positive", "negative")
        assert 5 <= rows[v]["confidence"] <= 10 and 0 <= rows[v]["p_positive"] <= 1
    assert rows["0"]["prediction"] is None  # training videos are not predictions
    p1 = m1["probe"]
    assert (p1["train_n"] + p1["val_n"], p1["test_n"], p1["backbone_loaded"]) == (
        2,
        3 - len(bad - {"4"}),
        True,
    )
    assert p1["epochs_run"] == 5 and p1["best_epoch"] == 5 and p1["final_train_loss"] > 0
    looked_up = [r for r in rows.values() if r["feature_cache"] is not None]
    assert p1["feature_cache"] == {"hits": 0, "misses": len(looked_up)}
    assert (m1["n"], m1["n_failed"]) == (3 - len(bad - {"4"}), len(bad - {"4"}))
    assert m1["accuracy"] is not None  # test videos only: the train rows are not scored

    # Warm: nothing is built, every lookup (input errors included) hits, same predictions.
    rows2, p2 = _rows(warm), _metrics(warm)["probe"]
    assert p2["backbone_loaded"] is False
    assert p2["feature_cache"] == {"hits": len(looked_up), "misses": 0}
    assert len(looked_up) == 6 - (name == "beats")  # beats: 5 fails before any lookup
    drop = ("feature_cache",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows2.values()] == [
        {k: v for k, v in r.items() if k not in drop} for r in rows.values()
    ]
    assert p2["final_train_loss"] == p1["final_train_loss"]


def test_extract_only_fills_the_cache_and_trains_nothing(demo_root: Path, tmp_path: Path):
    # BEATs (windowed: the variant that fits the 6-s fixture) is the fastest model to build.
    r = run_cli("task=probe", "baseline=beats", "baseline.variant=windowed",
                "baseline.extract_only=true", *FAST, *SPLIT,
                f"dataset.root={demo_root}", f"cache.dir={tmp_path}/cache",
                f"hydra.run.dir={tmp_path}/r", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    rows, m = _rows(tmp_path / "r"), _metrics(tmp_path / "r")
    assert all(x["status"] == "ok" and x["prediction"] is None for x in rows.values())
    p = m["probe"]
    assert p["extract_only"] is True and "train_n" not in p and p["backbone_loaded"] is True
    assert p["feature_cache"] == {"hits": 0, "misses": 4} and m["accuracy"] is None
    assert len(list((tmp_path / "cache" / "features").rglob("*.npy"))) == 4
    assert "extract_only: features cached" in r.stdout


def test_no_training_features_is_a_clear_error_and_rows_are_kept(demo_root: Path, tmp_path: Path):
    # BEATs `paper` on 6-s videos: 1920 samples at 320 Hz give 10 fbank frames < one patch.
    r = run_cli("task=probe", "baseline=beats", "baseline.variant=paper", *FAST, *SPLIT,
                f"dataset.root={demo_root}", f"cache.dir={tmp_path}/cache",
                f"hydra.run.dir={tmp_path}/r", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2
    assert "no training video has features" in r.stderr
    rows = _rows(tmp_path / "r")
    assert {row["status"] for row in rows.values()} == {"input_error"}
    assert "fewer than one 16-frame patch" in rows["0"]["error"]
    assert "0: input_error" in r.stdout  # the summary is printed before the error
