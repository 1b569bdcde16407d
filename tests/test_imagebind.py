"""ImageBind encoders and the shared checkpoint converter.

Checkpoints are written in the ORIGINAL `imagebind_huge.pth` key layout by an inverse mapping
written here independently of `IMAGEBIND_KEYMAP`, so a wrong rule in either shows up.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from eald.data.fbank import imagebind_melspec
from eald.data.media import fingerprint_files
from eald.mllm.convert import (
    Apply,
    CheckpointError,
    KeyMap,
    Merge,
    apply_keymap,
    load_checkpoint,
    load_converted,
    load_into,
)
from eald.mllm.imagebind import (
    Block,
    ImageBindAudioEncoder,
    ImageBindConfig,
    ImageBindVisionEncoder,
    load_imagebind,
    load_imagebind_into,
)

CFG = ImageBindConfig.tiny()
# Keys of modalities we never load; a real imagebind_huge.pth holds hundreds of these.
OTHER_KEYS = {
    "modality_trunks.text.blocks.0.attn.in_proj_weight": (12, 4),
    "modality_preprocessors.text.mask": (77, 77),
    "modality_preprocessors.text.token_embedding.weight": (10, 4),
    "modality_postprocessors.text.1.log_logit_scale": (),
    "modality_preprocessors.depth.depth_stem.proj.weight": (4, 1, 16, 16),
    "modality_postprocessors.thermal.1.log_logit_scale": (),
    "modality_heads.imu.3.weight": (16, 4),
}


def original_key(ours: str) -> str:
    """Our key ("audio.blocks.0.norm1.weight") -> the original ImageBindModel key."""
    mod, rest = ours.split(".", 1)
    pre, trunk, head = (f"modality_{p}.{mod}." for p in ("preprocessors", "trunks", "heads"))
    last = rest.rsplit(".", 1)[-1]
    if rest == "cls_token":
        return pre + "cls_token"
    if rest == "pos_embed":
        return pre + "pos_embedding_helper.pos_embed"
    if rest == "stem.weight":
        return pre + ("rgbt_stem.proj.weight" if mod == "audio" else "rgbt_stem.proj.1.weight")
    if rest.startswith("stem_norm."):
        return pre + "rgbt_stem.norm_layer." + last
    if rest.startswith("pre_norm."):
        return trunk + "pre_transformer_layer.0." + last
    if rest.startswith("head_norm."):
        return head + "0." + last
    if rest == "proj.weight":
        return head + "2.weight"
    if rest == "log_logit_scale":
        return "modality_postprocessors.audio.1.log_logit_scale"
    assert rest.startswith("blocks."), ours
    _, n, sub = rest.split(".", 2)
    sub = sub.replace("norm1", "norm_1").replace("norm2", "norm_2")
    if sub.startswith("fc"):
        sub = "mlp." + sub
    return f"{trunk}blocks.{n}.{sub}"


def randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter random (biases, LayerNorms and bias_k/v included) so no term is
    invisible in a comparison; the logit-scale buffer keeps its real value log(20)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module.eval()


def original_state_dict(encoders: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    sd = {
        original_key(f"{m}.{k}"): v.clone()
        for m, enc in encoders.items()
        for k, v in enc.state_dict().items()
    }
    for key, shape in OTHER_KEYS.items():
        sd[key] = torch.ones(shape)
    return sd


@pytest.fixture(scope="module")
def source() -> dict[str, torch.nn.Module]:
    return {
        "audio": randomize(ImageBindAudioEncoder(CFG), 1),
        "vision": randomize(ImageBindVisionEncoder(CFG), 2),
    }


@pytest.fixture(scope="module")
def inputs() -> dict[str, torch.Tensor]:
    sr = 16000
    t = np.arange(2 * sr) / sr
    rng = np.random.default_rng(0)
    wav = 0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.05 * rng.standard_normal(t.size)
    fbank = torch.stack([imagebind_melspec(wav), imagebind_melspec(wav[::-1].copy())])
    video = torch.randn(2, 3, 2, 224, 224, generator=torch.Generator().manual_seed(3))
    return {"audio": fbank, "vision": video}


@pytest.fixture()
def ckpt(tmp_path: Path, source) -> Path:
    path = tmp_path / "imagebind_huge.pth"
    torch.save(original_state_dict(source), path)
    return path


def test_token_counts_and_shapes(source, inputs) -> None:
    assert CFG.audio_grid == (12, 19) and CFG.audio_tokens == 229
    assert CFG.vision_grid == (1, 16, 16) and CFG.vision_tokens == 257
    with torch.no_grad():
        audio = source["audio"].forward_tokens(inputs["audio"])
        vision = source["vision"].forward_tokens(inputs["vision"])
        assert source["audio"](inputs["audio"]).shape == (2, CFG.embed_dim)
        assert source["vision"](inputs["vision"]).shape == (2, CFG.embed_dim)
        # Clips as an extra leading dim, as Video-LLaMA feeds (B, S, 1, 128, 204).
        clips = source["audio"](inputs["audio"].unsqueeze(0))
    assert audio.shape == (2, 229, CFG.audio_width)
    assert vision.shape == (2, 257, CFG.vision_width)
    assert clips.shape == (1, 2, CFG.embed_dim)
    assert inputs["audio"].shape == (2, 1, 128, 204)


def test_image_is_repeated_to_two_frames(source) -> None:
    img = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    clip = img.unsqueeze(2).repeat(1, 1, 2, 1, 1)
    with torch.no_grad():
        assert torch.equal(source["vision"](img), source["vision"](clip))
    with pytest.raises(ValueError, match="frames"):
        source["vision"](torch.zeros(1, 3, 3, 224, 224))


def test_postprocess(source, inputs) -> None:
    with torch.no_grad():
        a = source["audio"](inputs["audio"])
        v = source["vision"](inputs["vision"])
    scaled = source["audio"].postprocess(a, scale=True)
    plain = source["audio"].postprocess(a, scale=False)
    assert torch.allclose(plain.norm(dim=-1), torch.ones(2))
    assert torch.allclose(scaled, 20.0 * plain, rtol=1e-6)
    assert torch.allclose(source["vision"].postprocess(v).norm(dim=-1), torch.ones(2))


def test_original_layout_roundtrip(ckpt: Path, source, inputs) -> None:
    report = load_imagebind_into(
        {"audio": ImageBindAudioEncoder(CFG), "vision": ImageBindVisionEncoder(CFG)}, ckpt
    )
    assert report.missing == () and report.unexpected == ()
    assert set(report.ignored) == set(OTHER_KEYS)
    n_audio = 14 * CFG.audio_layers + 9  # per-block 14; stem 2+conv, cls, pos, head 3, scale
    n_vision = 12 * CFG.vision_layers + 8
    assert len(report.loaded) == n_audio + n_vision

    loaded = load_imagebind(ckpt, CFG, modalities=("audio", "vision"))
    with torch.no_grad():
        for m in ("audio", "vision"):
            assert not loaded[m].training
            assert torch.equal(loaded[m](inputs[m]), source[m](inputs[m])), m
        out = loaded["audio"].postprocess(loaded["audio"](inputs["audio"]), scale=True)
        ref = source["audio"].postprocess(source["audio"](inputs["audio"]), scale=True)
    assert torch.equal(out, ref)


def test_audio_only_ignores_vision(ckpt: Path, source, inputs, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="eald.imagebind"):
        loaded = load_imagebind(ckpt, CFG)
    assert set(loaded) == {"audio"}
    assert "0 unexpected" in caplog.text
    with torch.no_grad():
        assert torch.equal(loaded["audio"](inputs["audio"]), source["audio"](inputs["audio"]))


def test_full_size_key_layout() -> None:
    """Real imagebind_huge geometry on the meta device: key counts and shapes as in the file."""
    with torch.device("meta"):
        enc = {"audio": ImageBindAudioEncoder(ImageBindConfig()),
               "vision": ImageBindVisionEncoder(ImageBindConfig())}  # fmt: skip
    shapes = {
        original_key(f"{m}.{k}"): tuple(v.shape)
        for m, e in enc.items()
        for k, v in e.state_dict().items()
    }
    assert sum(k.startswith("modality_trunks.audio") for k in shapes) == 14 * 12
    audio = [k for k in shapes if ".audio." in k]
    assert len(audio) == 177 and len(shapes) - len(audio) == 392
    assert shapes["modality_preprocessors.audio.rgbt_stem.proj.weight"] == (768, 1, 16, 16)
    assert shapes["modality_preprocessors.audio.pos_embedding_helper.pos_embed"] == (1, 229, 768)
    assert shapes["modality_trunks.audio.blocks.11.attn.bias_k"] == (1, 1, 768)
    assert shapes["modality_trunks.audio.blocks.0.mlp.fc1.weight"] == (3072, 768)
    assert shapes["modality_heads.audio.2.weight"] == (1024, 768)
    assert shapes["modality_postprocessors.audio.1.log_logit_scale"] == ()
    assert shapes["modality_preprocessors.vision.rgbt_stem.proj.1.weight"] == (1280, 3, 2, 14, 14)
    assert shapes["modality_preprocessors.vision.pos_embedding_helper.pos_embed"] == (1, 257, 1280)
    assert shapes["modality_trunks.vision.blocks.31.attn.in_proj_weight"] == (3840, 1280)
    assert shapes["modality_trunks.vision.pre_transformer_layer.0.weight"] == (1280,)
    assert "modality_trunks.vision.blocks.0.attn.bias_k" not in shapes
    # eps: plain nn.LayerNorm in the audio stem, 1e-6 everywhere else.
    assert enc["audio"].stem_norm.eps == 1e-5
    assert enc["audio"].blocks[0].norm1.eps == enc["vision"].pre_norm.eps == 1e-6
    assert enc["vision"].head_norm.eps == 1e-6


def reference_block(block: Block, x: torch.Tensor) -> torch.Tensor:
    """Pre-norm block with bias_kv attention, written out; x is (B, L, D)."""
    a, heads = block.attn, block.attn.num_heads
    B, L, D = x.shape
    hd = D // heads
    h = F.layer_norm(x, (D,), block.norm1.weight, block.norm1.bias, eps=1e-6)
    wq, wk, wv = a.in_proj_weight.chunk(3)
    bq, bk, bv = a.in_proj_bias.chunk(3)
    q = h @ wq.T + bq
    # The learned bias_k / bias_v are one extra key/value position, appended AFTER projection.
    k = torch.cat([h @ wk.T + bk, a.bias_k.expand(B, 1, D)], dim=1)
    v = torch.cat([h @ wv.T + bv, a.bias_v.expand(B, 1, D)], dim=1)

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(B, -1, heads, hd).transpose(1, 2)

    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(hd)
    att = (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(B, L, D)
    x = x + att @ a.out_proj.weight.T + a.out_proj.bias
    h = F.layer_norm(x, (D,), block.norm2.weight, block.norm2.bias, eps=1e-6)
    mlp = h @ block.fc1.weight.T + block.fc1.bias
    mlp = 0.5 * mlp * (1 + torch.erf(mlp / math.sqrt(2)))
    return x + mlp @ block.fc2.weight.T + block.fc2.bias


def test_block_matches_explicit_reference() -> None:
    block = randomize(Block(32, 4, 4, add_bias_kv=True), 5)
    x = torch.randn(3, 229, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        ours = block(x.transpose(0, 1)).transpose(0, 1)  # blocks run (L, B, D)
        ref = reference_block(block, x)
    assert (ours - ref).abs().max().item() < 1e-5


def test_unexpected_and_missing_keys(tmp_path: Path, source) -> None:
    sd = original_state_dict(source)
    sd["modality_trunks.audio.blocks.0.attn.extra_scale"] = torch.ones(1)
    torch.save(sd, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"blocks\.0\.attn\.extra_scale"):
        load_imagebind(tmp_path / "extra.pth", CFG)

    sd = original_state_dict(source)
    del sd["modality_trunks.audio.blocks.1.attn.bias_v"]
    torch.save(sd, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing keys:\n  audio\.blocks\.1\.attn\.bias_v"):
        load_imagebind(tmp_path / "missing.pth", CFG)


def test_shape_mismatch_names_both_shapes(tmp_path: Path, source) -> None:
    sd = original_state_dict(source)
    sd["modality_preprocessors.audio.pos_embedding_helper.pos_embed"] = torch.zeros(1, 230, 32)
    torch.save(sd, tmp_path / "imagebind_huge.pth")
    with pytest.raises(CheckpointError, match=r"pos_embed: checkpoint \(1, 230, 32\) vs model "
                       r"\(1, 229, 32\)"):  # fmt: skip
        load_imagebind(tmp_path / "imagebind_huge.pth", CFG)


@dataclass
class TrainConfig:  # a non-tensor object, as in Video-LLaMA's {"model", "config", ...} files
    lr: float = 1e-4


def test_wrappers_and_weights_only_fallback(tmp_path: Path, source, inputs, caplog) -> None:
    sd = original_state_dict(source)
    torch.save({"model": sd, "epoch": 3}, tmp_path / "wrapped.pth")
    with caplog.at_level(logging.INFO, logger="eald.convert"):
        assert load_checkpoint(tmp_path / "wrapped.pth").keys() == sd.keys()
    assert "['model']" in caplog.text

    torch.save({"state_dict": {"module": sd}}, tmp_path / "nested.pt")
    assert load_checkpoint(tmp_path / "nested.pt").keys() == sd.keys()

    path = tmp_path / "train_state.pth"
    torch.save({"model": sd, "config": TrainConfig()}, path)
    with pytest.warns(UserWarning, match="train_state.pth"):
        loaded = load_imagebind(path, CFG)
    with torch.no_grad():
        assert torch.equal(loaded["audio"](inputs["audio"]), source["audio"](inputs["audio"]))


def test_safetensors(tmp_path: Path, source, inputs) -> None:
    path = tmp_path / "imagebind_huge.safetensors"
    save_file({k: v.contiguous() for k, v in original_state_dict(source).items()}, path)
    loaded = load_imagebind(path, CFG, modalities=("vision",))
    with torch.no_grad():
        assert torch.equal(loaded["vision"](inputs["vision"]), source["vision"](inputs["vision"]))


def test_merge_apply_and_duplicate_targets() -> None:
    sd = {
        "blocks.0.attn.q_bias": torch.tensor([1.0, 2.0]),
        "blocks.0.attn.v_bias": torch.tensor([5.0, 6.0]),
        "blocks.0.attn.qkv.weight": torch.ones(6, 2),
        "pos_embed": torch.zeros(1, 3, 2),
        "head.weight": torch.ones(1),
    }
    qkv = Merge(r"(.*)\.q_bias", (r"\1.v_bias",), r"\1.qkv.bias",
                lambda q, v: torch.cat([q, torch.zeros_like(v), v]))  # fmt: skip
    km = KeyMap(rules=[(r"blocks\.(.*)", r"visual.blocks.\1"), (r"pos_embed", "visual.pos")],
                ignore=[r"head\..*"])  # fmt: skip
    out, unexpected = apply_keymap(sd, km, [qkv, Apply(r"pos_embed", lambda t: t[0])])
    assert unexpected == []
    assert sorted(out) == ["visual.blocks.0.attn.qkv.bias", "visual.blocks.0.attn.qkv.weight",
                           "visual.pos"]  # fmt: skip
    assert out["visual.blocks.0.attn.qkv.bias"].tolist() == [1, 2, 0, 0, 5, 6]
    assert out["visual.pos"].shape == (3, 2)

    with pytest.raises(CheckpointError, match="v_bias"):
        apply_keymap({"a.q_bias": torch.ones(1)}, km, [qkv])
    with pytest.raises(CheckpointError, match="both map to"):
        apply_keymap({"x": torch.ones(1), "y": torch.ones(1)}, KeyMap([(r"[xy]", "z")]))
    _, unexpected = apply_keymap({"stray": torch.ones(1)}, km)
    assert unexpected == ["stray"]


def test_load_into_allow_missing_and_converted() -> None:
    lin = torch.nn.Linear(2, 3)
    report = load_into(lin, {"weight": torch.ones(3, 2)}, allow_missing=[r"bias"])
    assert report.missing == ("bias",) and report.loaded == ("weight",)
    assert "1 missing (allowed)" in report.summary()
    with pytest.raises(CheckpointError, match="missing keys"):
        load_into(lin, {"weight": torch.ones(3, 2)})
    km = KeyMap([(r"lin\.(.*)", r"\1")], ignore=[r"other\..*"])
    sd = {"lin.weight": torch.ones(3, 2), "lin.bias": torch.ones(3), "other.x": torch.ones(1)}
    assert load_converted(lin, sd, km).ignored == ("other.x",)
    with pytest.raises(CheckpointError, match="stray"):
        load_converted(lin, {**sd, "stray": torch.ones(1)}, km)


def test_fingerprint_files(tmp_path: Path) -> None:
    big = tmp_path / "big.pth"
    small = tmp_path / "small.bin"
    data = bytearray(np.random.default_rng(0).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes())
    big.write_bytes(bytes(data))
    small.write_bytes(b"abc")
    fp = fingerprint_files([big, small])
    assert fp == fingerprint_files([big, small]) and len(fp) == 64
    assert fp != fingerprint_files([small, big])
    data[-1] ^= 1
    big.write_bytes(bytes(data))
    changed = fingerprint_files([big, small])
    assert changed != fp
    renamed = small.rename(tmp_path / "other.bin")  # same bytes, other name
    assert fingerprint_files([big, renamed]) != changed
