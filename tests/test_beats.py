"""BEATs baseline: official checkpoint format, one attention layer against explicit matmuls,
the povey fbank, and features of both long-input variants on a real demo video.

The official key names are spelled out here from the original module tree (unilm
`beats/BEATs.py`, `backbone.py`), not read off our model, so a renamed module shows up.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from baselines import BaselineInputError
from baselines.beats import (
    FBANK_MEAN,
    FBANK_STD,
    BeatsBaseline,
    BEATsConfig,
    BEATsModel,
    MultiheadAttention,
    WeightNormConv1d,
    beats_input,
    load_state,
    model_from_checkpoint,
    povey_fbank,
    relative_position_bucket,
    tiny_config,
    window_spans,
)
from eald.data.fbank import _mel_banks, kaldi_fbank

TRAINING_CFG = {"dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.0,
                "encoder_layerdrop": 0.05, "dropout_input": 0.0,
                "layer_wise_gradient_decay_ratio": 0.6}  # fmt: skip


def official_keys(cfg: BEATsConfig, finetuned: bool) -> set[str]:
    keys = {"patch_embedding.weight", "layer_norm.weight", "layer_norm.bias",
            "post_extract_proj.weight", "post_extract_proj.bias",
            "encoder.pos_conv.0.weight_g", "encoder.pos_conv.0.weight_v",
            "encoder.pos_conv.0.bias", "encoder.layer_norm.weight",
            "encoder.layer_norm.bias"}  # fmt: skip
    for i in range(cfg.encoder_layers):
        p = f"encoder.layers.{i}."
        for m in ("self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj", "self_attn.out_proj",
                  "self_attn.grep_linear", "self_attn_layer_norm", "fc1", "fc2",
                  "final_layer_norm"):  # fmt: skip
            keys |= {p + m + ".weight", p + m + ".bias"}
        keys |= {p + "self_attn.grep_a", p + "self_attn.relative_attention_bias.weight"}
    return keys | ({"predictor.weight", "predictor.bias"} if finetuned else set())


def random_model(seed: int = 1) -> BEATsModel:
    """Tiny model whose every parameter is random (g != ||v||, grep_a != 1, LN affine != id)."""
    torch.manual_seed(seed)
    model = BEATsModel(tiny_config()).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(1.0 if "norm" in name or "grep_a" in name else 0.0, 0.2)
    # Frozen like the baseline's copy: requires_grad changes CPU kernels (~1e-6), and the
    # round trips below compare bit for bit.
    return model.requires_grad_(False)


def fbank_batch(frames: int = 48, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, frames, 128, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("finetuned", [False, True])
def test_official_checkpoint_round_trip(tmp_path: Path, finetuned: bool) -> None:
    src = random_model()
    cfg = {**dataclasses.asdict(src.cfg), **TRAINING_CFG, "finetuned_model": finetuned}
    sd = dict(src.state_dict())
    assert set(sd) | ({"predictor.weight", "predictor.bias"} if finetuned else set()) == (
        official_keys(src.cfg, finetuned)
    )
    if finetuned:  # the AudioSet head of a fine-tuned checkpoint: present, ignored explicitly
        sd |= {"predictor.weight": torch.randn(5, 48), "predictor.bias": torch.randn(5)}
        cfg["predictor_class"] = 5
    path = tmp_path / "beats.pt"
    torch.save({"cfg": cfg, "model": sd}, path)

    ckpt = torch.load(path, weights_only=True)
    fresh = BEATsModel(BEATsConfig.from_dict(ckpt["cfg"])).eval().requires_grad_(False)
    report = load_state(fresh, ckpt["model"])
    assert report["ignored"] == (["predictor.bias", "predictor.weight"] if finetuned else [])
    assert report["missing_shared"] == []
    x = fbank_batch()
    with torch.no_grad():
        ref = src(x)
        assert torch.equal(fresh(x), ref)
        base = BeatsBaseline(SimpleNamespace(checkpoint=str(path), variant="paper"))
        assert torch.equal(base.model(x), ref)
    assert len(base.identity()["checkpoint"]) == 64  # fingerprint_files sha256


def test_checkpoint_key_handling() -> None:
    src = random_model()
    sd = dict(src.state_dict())
    x = fbank_batch()
    # torch's new weight-norm parametrization names map to the official ones explicitly
    renamed = {k.replace(".weight_g", ".parametrizations.weight.original0")
               .replace(".weight_v", ".parametrizations.weight.original1"): v
               for k, v in sd.items()}  # fmt: skip
    m = model_from_checkpoint({"cfg": dataclasses.asdict(src.cfg), "model": renamed})
    # a checkpoint storing the shared relative-position table once (layer 0 only) loads too
    shared = "encoder.layers.1.self_attn.relative_attention_bias.weight"
    once = {k: v for k, v in sd.items() if k != shared}
    m2 = model_from_checkpoint({"cfg": dataclasses.asdict(src.cfg), "model": once})
    with torch.no_grad():
        m.requires_grad_(False), m2.requires_grad_(False)
        assert torch.equal(m(x), src(x)) and torch.equal(m2(x), src(x))
    with pytest.raises(ValueError, match="unexpected"):
        model_from_checkpoint({"cfg": dataclasses.asdict(src.cfg), "model": sd | {"x.w": x}})
    with pytest.raises(ValueError, match="missing"):
        bad = {k: v for k, v in sd.items() if not k.startswith("encoder.layers.1.fc1")}
        model_from_checkpoint({"cfg": dataclasses.asdict(src.cfg), "model": bad})
    with pytest.warns(UserWarning, match="unknown fields"):
        BEATsConfig.from_dict({"input_patch_size": 16, "new_field": 1})


def ref_bucket(r: int, num_buckets: int, max_distance: int) -> int:
    """T5 bidirectional bucket, written from its definition in plain Python."""
    half = num_buckets // 2
    base = half if r > 0 else 0
    r, exact = abs(r), half // 2
    if r < exact:
        return base + r
    return base + min(half - 1, exact + int(math.log(r / exact) / math.log(max_distance / exact)
                                              * (half - exact)))  # fmt: skip


def test_relative_position_bucket_matches_definition() -> None:
    rel = torch.arange(-1000, 1001)
    got = relative_position_bucket(rel, 320, 800).tolist()
    assert got == [ref_bucket(r, 320, 800) for r in rel.tolist()]


def test_attention_layer_against_explicit_matmuls() -> None:
    cfg = tiny_config()
    torch.manual_seed(3)
    attn = MultiheadAttention(cfg, has_bias=True).eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0.0, 0.3)
    L, B, D, H = 40, 2, cfg.encoder_embed_dim, cfg.encoder_attention_heads  # noqa: N806
    hd = D // H
    x = torch.randn(L, B, D, dtype=torch.float64)
    with torch.no_grad():
        got, _ = attn(x.float(), None)
    w = {n: p.detach().double() for n, p in attn.named_parameters()}
    table = w["relative_attention_bias.weight"]
    ref = torch.zeros(L, B, D, dtype=torch.float64)
    for b in range(B):
        xb = x[:, b]
        q = xb @ w["q_proj.weight"].T + w["q_proj.bias"]
        k = xb @ w["k_proj.weight"].T + w["k_proj.bias"]
        v = xb @ w["v_proj.weight"].T + w["v_proj.bias"]
        heads = []
        for h in range(H):
            sl = slice(h * hd, (h + 1) * hd)
            qh, kh, vh = q[:, sl], k[:, sl], v[:, sl]
            g = qh @ w["grep_linear.weight"].T + w["grep_linear.bias"]  # (L, 8) on unscaled q
            ga, gb = torch.sigmoid(g[:, :4].sum(1)), torch.sigmoid(g[:, 4:].sum(1))
            gate = ga * (gb * w["grep_a"][0, h, 0, 0] - 1.0) + 2.0
            nb, md = cfg.num_buckets, cfg.max_distance
            bias = torch.tensor([[table[ref_bucket(j - i, nb, md), h] for j in range(L)]
                                 for i in range(L)], dtype=torch.float64)  # fmt: skip
            logits = qh @ kh.T / math.sqrt(hd) + gate[:, None] * bias
            heads.append(torch.softmax(logits, dim=-1) @ vh)
        ref[:, b] = torch.cat(heads, 1) @ w["out_proj.weight"].T + w["out_proj.bias"]
    torch.testing.assert_close(got.double(), ref, atol=1e-5, rtol=1e-5)


def test_weight_norm_conv_matches_torch_parametrization() -> None:
    torch.manual_seed(4)
    ours = WeightNormConv1d(8, 6, 2)
    with torch.no_grad():
        ours.weight_g.mul_(torch.rand_like(ours.weight_g) + 0.5)
    conv = torch.nn.Conv1d(8, 8, 6, padding=3, groups=2)
    conv = torch.nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
    conv.load_state_dict({"bias": ours.bias, "parametrizations.weight.original0": ours.weight_g,
                          "parametrizations.weight.original1": ours.weight_v})  # fmt: skip
    x = torch.randn(2, 8, 20)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), conv(x)[:, :, :-1], atol=1e-6, rtol=1e-6)


def test_povey_fbank_and_normalisation() -> None:
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    fb = povey_fbank(torch.from_numpy(wave) * 2**15)
    assert fb.shape == (98, 128) and fb.dtype == torch.float32  # 1 + (16000 - 400) // 160
    # numpy reference: DC removal, pre-emphasis 0.97, povey window = symmetric Hann ** 0.85
    x = wave.astype(np.float64) * 2**15
    idx = np.arange(400)[None] + 160 * np.arange(98)[:, None]
    fr = x[idx] - x[idx].mean(1, keepdims=True)
    fr = fr - 0.97 * np.concatenate([fr[:, :1], fr[:, :-1]], 1)
    win = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 399)) ** 0.85
    power = np.abs(np.fft.rfft(fr * win, 512)) ** 2
    ref = np.log(np.maximum(power @ _mel_banks(128, 512, 16000, 20.0, 0.0, torch.float64).numpy().T,
                            np.finfo(np.float32).eps))  # fmt: skip
    np.testing.assert_allclose(fb.numpy(), ref, atol=1e-4)
    # the window matters: the project's Hanning fbank differs, so it is really povey here
    assert (kaldi_fbank(torch.from_numpy(wave) * 2**15) - fb).abs().max() > 0.01
    assert (FBANK_MEAN, FBANK_STD) == (15.41663, 6.55582)
    torch.testing.assert_close(beats_input(wave), (fb - 15.41663) / (2 * 6.55582))


def test_window_spans() -> None:
    assert window_spans(12.0) == [(0.0, 10.0), (2.0, 12.0)]
    assert window_spans(6.0) == [(0.0, 6.0)]
    assert window_spans(20.0) == [(0.0, 10.0), (10.0, 20.0)]
    spans = window_spans(25.0)
    assert len(spans) == 3 and spans[-1] == (15.0, 25.0)


@pytest.fixture(scope="module")
def demo_video(tmp_path_factory):
    from eald.data.dataset import load_dataset
    from eald.data.demo import generate_demo

    root = generate_demo(tmp_path_factory.mktemp("beats") / "d", videos=1, seconds=12.0)
    return next(iter(load_dataset(root).videos.values()))


def baseline(variant: str) -> BeatsBaseline:
    conf = SimpleNamespace(checkpoint=None, tiny=True, variant=variant, device="cpu",
                           batch_size=1)  # fmt: skip
    return BeatsBaseline(conf)


def test_features_both_variants(demo_video, monkeypatch) -> None:
    from eald.data.sampling import Window, sequence_window

    win = sequence_window(demo_video.id, demo_video.duration_s, 1.0, 0)
    assert win.end_s == pytest.approx(12.0, abs=0.1)
    paper, windowed = baseline("paper"), baseline("windowed")
    calls: list[int] = []
    pooled = windowed._pooled
    monkeypatch.setattr(windowed, "_pooled", lambda w, *a: calls.append(len(w)) or pooled(w, *a))
    feats = {}
    for name, b in (("paper", paper), ("windowed", windowed)):
        f = b.features(demo_video, win)
        assert f.shape == (48,) and f.dtype == np.float32 and np.isfinite(f).all()
        np.testing.assert_array_equal(f, b.features(demo_video, win))  # deterministic
        feats[name] = f
    assert calls == [2, 2]  # 12 s -> two 10-s windows (batch_size 1: two batches, one call)
    assert not np.allclose(feats["paper"], feats["windowed"], atol=1e-4)
    ids = [paper.identity(), windowed.identity()]
    assert ids[0] != ids[1] and json.dumps(ids)  # cache keys differ and serialise
    # the paper variant needs >= 16 frames at "16 kHz" of 320-Hz samples: ~8.75 s
    with pytest.raises(BaselineInputError, match="fbank frames"):
        paper.features(demo_video, Window(0.0, 5.0, 1.0, None))


def test_no_audio_stream_is_an_input_error(tmp_path: Path) -> None:
    from eald.data.dataset import Video
    from eald.data.media import probe
    from eald.data.synth import write_mp4

    path = write_mp4(tmp_path / "mute.mp4", lambda i: np.zeros((32, 32, 3), np.uint8), 25, 25)
    video = Video(id="mute", label="0", path=path, audio_path=None, info=probe(path))
    assert not video.has_audio
    from eald.data.sampling import Window

    for variant in ("paper", "windowed"):
        with pytest.raises(BaselineInputError, match="no audio"):
            baseline(variant).features(video, Window(0.0, 1.0, 1.0, None))
