"""Frozen video backbones (baselines.video_models) and the mmaction2 compat layer, on CPU.

Tiny configs, random weights, one short demo video. The whole module runs with empty
TORCH_HOME/MMENGINE_HOME and sockets refusing to connect, so any weight download would fail
loudly (and the homes must stay empty).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("mmaction", reason="mmaction2 not installed (see Makefile baselines)")

from baselines import BaselineInputError  # noqa: E402
from eald.data.dataset import load_dataset  # noqa: E402
from eald.data.demo import generate_demo  # noqa: E402
from eald.data.sampling import sequence_window  # noqa: E402

# TimeSformer's native clip spans 225 frames (8 x interval 32): 9 s at the demo's 25 fps.
DEMO_SECONDS = 9.5


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("model_home")
    mp = pytest.MonkeyPatch()
    mp.setenv("TORCH_HOME", str(home / "torch"))
    mp.setenv("MMENGINE_HOME", str(home / "mmengine"))

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    mp.setattr(socket.socket, "connect", refuse)
    yield home
    mp.undo()
    assert not any(home.rglob("*")), f"something was downloaded: {list(home.rglob('*'))}"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = generate_demo(tmp_path_factory.mktemp("demo"), videos=1, seconds=DEMO_SECONDS)
    return next(iter(load_dataset(root).videos.values()))


def _build(name: str, **kw: Any) -> Any:
    from baselines.video_models import build_video_baseline

    return build_video_baseline({"name": name, "tiny": True, "device": "cpu", **kw})


def test_compat_imports_and_builds_recognizers(offline: Path) -> None:
    from baselines.mmaction_compat import import_mmaction
    from baselines.video_models import model_config

    mm = import_mmaction()
    assert import_mmaction() is mm  # idempotent
    from mmaction.registry import MODELS

    for name in ("tsm", "timesformer", "video_swin", "slowfast"):
        conf = model_config(name, tiny=True)
        model = MODELS.build(conf)
        model.init_weights()  # TSM/Swin would fetch ImageNet weights without the compat patch
        assert type(model).__name__ in ("Recognizer2D", "Recognizer3D")
    # The full-size K400 configs too (build only: no download for pretrained=None).
    assert MODELS.build(model_config("tsm", tiny=False)).backbone.depth == 50


def test_mmengine_loads_pickled_meta(offline: Path, tmp_path: Path) -> None:
    from baselines.mmaction_compat import import_mmaction

    import_mmaction()
    from mmengine.runner.checkpoint import _load_checkpoint

    path = tmp_path / "c.pth"
    torch.save({"meta": {"best": np.float64(0.5)}, "state_dict": {}}, path)
    assert _load_checkpoint(str(path), map_location="cpu")["meta"]["best"] == 0.5


EXPECTED = {"tsm": 512, "timesformer": 64, "video_swin": 128, "slowfast": 144}
# A window shorter than the video exercises the seeded window; TimeSformer needs the whole video.
FRACTION = {"tsm": 0.5, "timesformer": 1.0, "video_swin": 0.5, "slowfast": 0.5}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_features_tiny(name: str, offline: Path, demo: Any) -> None:
    base = _build(name, num_clips=1)
    window = sequence_window(demo.id, demo.duration_s, FRACTION[name], seed=0)
    f1 = base.features(demo, window)
    assert f1.shape == (EXPECTED[name],) and f1.dtype == np.float32
    assert np.isfinite(f1).all() and np.abs(f1).sum() > 0
    np.testing.assert_array_equal(base.features(demo, window), f1)  # deterministic
    assert not any(p.requires_grad for p in base.model.parameters())
    assert all(not m.training for m in base.model.modules())  # BN uses running statistics
    bn = [m for m in base.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bool(bn) == (name in ("tsm", "slowfast"))  # the CNNs have BN layers, all frozen
    ident = base.identity()
    assert ident["checkpoint"] == {"random_init_seed": 0} and ident["modality"] == "video"


def test_clip_indices_inside_window(offline: Path, demo: Any) -> None:
    window = sequence_window(demo.id, demo.duration_s, 0.8, seed=3)
    lo = int(np.floor(window.start_s * demo.fps + 1e-6))
    hi = lo + int(round(window.duration_s * demo.fps))
    for name, clips in (("video_swin", 3), ("tsm", 4)):
        idx = _build(name, num_clips=clips).clip_indices(demo, window)
        assert idx.shape == (clips, 32 if name == "video_swin" else 8)
        assert idx.min() >= lo and idx.max() < hi
        assert (np.diff(idx, axis=1) > 0).all() and (np.diff(idx[:, 0]) > 0).all()


def test_checkpoint_round_trip(offline: Path, demo: Any, tmp_path: Path) -> None:
    window = sequence_window(demo.id, demo.duration_s, 1.0, seed=0)
    src = _build("timesformer", seed=0)
    want = src.features(demo, window)
    state = src.model.state_dict()
    assert any(k.startswith("backbone.") for k in state)
    assert any(k.startswith("cls_head.") for k in state)
    path = tmp_path / "timesformer_k400.pth"
    # mmaction's layout; `meta` holds non-tensor objects, as real OpenMMLab checkpoints do.
    torch.save(
        {"meta": {"mmaction_version": "1.2.0", "acc": np.float64(0.77)}, "state_dict": state}, path
    )

    dst = _build("timesformer", seed=1, checkpoint=str(path))  # different random init first
    assert dst.load_report is not None and dst.load_report["missing"] == []
    assert dst.load_report["ignored_cls_head"]
    np.testing.assert_array_equal(dst.features(demo, window), want)
    ident = dst.identity()
    assert len(ident["checkpoint"]["fingerprint"]) == 64

    broken = {k: v for k, v in state.items() if not k.endswith("time_embed")}
    torch.save({"state_dict": broken}, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="missing"):
        _build("timesformer", checkpoint=str(tmp_path / "broken.pth"))


def test_too_short(offline: Path, tmp_path: Path, demo: Any) -> None:
    root = generate_demo(tmp_path / "short", videos=1, seconds=0.2)
    short = next(iter(load_dataset(root).videos.values()))
    window = sequence_window(short.id, short.duration_s, 1.0, seed=0)
    base = _build("video_swin")
    with pytest.raises(BaselineInputError, match=rf"video {short.id}: .*needs 63 frames"):
        base.features(short, window)
    # TimeSformer on a 2.85-s window of the demo: shorter than its 225-frame clip.
    tf = _build("timesformer")
    with pytest.raises(BaselineInputError, match="needs 225 frames"):
        tf.features(demo, sequence_window(demo.id, demo.duration_s, 0.3, seed=0))


def test_one_checkpoint_fingerprint_function():
    """Feature-cache keys hash a checkpoint with the same function as every other model file:
    there is no second recipe that could hash other bytes when an import fails."""
    import baselines.video_models as vm
    from eald.data import media

    assert vm.fingerprint_files is media.fingerprint_files
    assert not hasattr(vm, "fingerprint")
