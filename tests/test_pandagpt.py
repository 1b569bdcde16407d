"""PandaGPT port: checkpoints written in the ORIGINAL layout (imagebind_huge.pth, a Vicuna HF
folder, the delta pytorch_model.pt with and without peft's ".default.") load through the real
converter into a model that computes exactly what the source model computes; preprocessing,
prompt text, tokenisation and the stop rule follow the original; generation runs end to end on
the demo data."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from eald.data.dataset import load_dataset
from eald.data.sampling import Sample, Window, sample_video
from eald.mllm import CLIP_MEAN, CLIP_STD, BackboneError
from eald.mllm import pandagpt as pg
from eald.mllm import pandagpt_tiny as pt
from eald.mllm.convert import CheckpointError, load_checkpoint
from eald.mllm.imagebind import ImageBindConfig
from tests.conftest import REPO, sample_cfg

BASE = OmegaConf.load(REPO / "eald" / "conf" / "config.yaml")
LAYERS = 2


def _conf(**over) -> OmegaConf:
    return OmegaConf.merge(OmegaConf.structured(pg.PandaGPTConf), {"tiny": True, **over})


def _sample(root: Path, mods: str, vid: str = "1") -> Sample:
    return sample_video(
        load_dataset(root).videos[vid], sample_cfg(mods=mods, num_frames=8, audio_clips=3)
    )


@pytest.fixture(scope="module")
def model_a() -> pg.PandaGPT:
    return pt.build_tiny(seed=3, layers=LAYERS)


@pytest.fixture(scope="module", params=[True, False], ids=["default-infix", "peft02-names"])
def written(request, model_a, tmp_path_factory):
    paths = pt.write_original(model_a, tmp_path_factory.mktemp("pg"), default_infix=request.param)
    model_b, tok, report = pg.load_pandagpt(*paths.values(), ib=ImageBindConfig.tiny())
    return paths, model_b, tok, report, request.param


@pytest.fixture(scope="module")
def backbone():
    return pt.TinyPandaGPTBackbone(_conf(max_new_tokens=12))


def test_round_trip_original_layout(written, model_a) -> None:
    paths, model_b, tok, report, infix = written
    delta = load_checkpoint(paths["delta"])
    assert len(delta) == 2 + LAYERS * 4 * 2  # llama_proj.{weight,bias} + A/B per q,k,v,o
    assert all((".default." in k) == infix for k in delta if "lora_" in k)
    assert report.unexpected == () and len(report.loaded) == len(delta)  # every key consumed
    assert report.missing and not [k for k in report.missing if ".lora_" in k]
    assert not [k for k in load_checkpoint(paths["imagebind"]) if not k.startswith("modality_")]
    sa, sb = model_a.state_dict(), model_b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert model_b.llama_model.get_input_embeddings().weight.shape[0] == len(tok) + 1  # v0 quirk

    g = torch.Generator().manual_seed(0)
    views = torch.randn(15, 3, 2, 224, 224, generator=g)
    fbank = torch.randn(3, 1, 128, 204, generator=g)
    with torch.no_grad():
        out = {}
        for name, m in (("a", model_a), ("b", model_b)):
            v, a = m.encode_video(views), m.encode_audio(fbank)
            token = m.media_token([a, v])
            embeds = m.embed_prompt(tok, "How does the speaker feel?", token)
            out[name] = (v, a, token, embeds, m.llama_model(inputs_embeds=embeds[None]).logits)
        for x, y in zip(out["a"], out["b"], strict=True):
            assert torch.equal(x, y)
        v, a, token = out["a"][:3]
        proj = model_a.llama_proj
        # the sum of PROJECTED vectors: llama_proj's bias counts once per modality
        assert torch.allclose(token, proj(a) + proj(v), atol=1e-6)
        assert torch.allclose(token - proj(a + v), proj.bias, atol=1e-5)
        enc = model_a.encoders  # mean of the L2-normalised views; audio without the x20 scale
        assert torch.equal(v, F.normalize(enc["vision"](views), dim=-1).mean(0))
        assert torch.equal(a, F.normalize(enc["audio"](fbank), dim=-1).mean(0))


def test_delta_with_unknown_or_missing_keys_fails(written, model_a, tmp_path) -> None:
    paths = written[0]
    delta = load_checkpoint(paths["delta"])
    extra = {**delta, "llama_model.base_model.model.lm_head.lora_A.weight": torch.zeros(1)}
    torch.save(extra, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match="unexpected"):
        pg.load_delta(model_a, tmp_path / "extra.pt")
    torch.save({k: v for k, v in delta.items() if "layers.1.self_attn.v_proj.lora_B" not in k},
               tmp_path / "missing.pt")  # fmt: skip
    with pytest.raises(CheckpointError, match="missing"):
        pg.load_delta(model_a, tmp_path / "missing.pt")


def _frames_sample(h: int, w: int, n: int = 8, dur: float = 6.0) -> Sample:
    rng = np.random.default_rng(0)
    s = Sample("x", "positive", Window(0.0, dur, 1.0, None))
    s.frames = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    s.frame_times = [k * dur / n for k in range(n)]
    return s


def test_video_clips_crops_and_normalisation() -> None:
    s = _frames_sample(240, 320)
    # 5 clips over 6 s start at 0, 1, 2, 3, 4 s; frames every 0.75 s; nearest to start and end
    pairs = pg.clip_frame_pairs(s, 5)
    assert pairs == [(0, 3), (1, 4), (3, 5), (4, 7), (5, 7)]
    views = pg.video_views(s.frames, pairs, crops=3)
    assert views.shape == (15, 3, 2, 224, 224)
    x = torch.from_numpy(s.frames[[0, 3]]).permute(0, 3, 1, 2).float() / 255
    x = F.interpolate(x, size=(224, 298), mode="bilinear", align_corners=False)  # 320*224/240
    x = (x - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    clip = x.permute(1, 0, 2, 3)  # (3, 2, H, W): frame of the clip start, then of its end
    for i, off in enumerate((0, 37, 74)):  # left, centre (ceil(74 / 2)), right
        assert torch.allclose(views[i], clip[..., off : off + 224], atol=1e-6)
    portrait = pg.video_views(_frames_sample(320, 240).frames, [(0, 1)], crops=3)
    assert portrait.shape == (3, 3, 2, 224, 224)  # crops along the height: 298 -> 0, 37, 74
    assert pg.video_views(s.frames, [(0, 1)], crops=1).shape == (1, 3, 2, 224, 224)
    gray = np.full((1, 100, 120, 3), 128, np.uint8)
    const = pg.video_views(gray, [(0, 0)], crops=1)[0, :, 0]
    want = (128 / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(const.mean((1, 2)), want, atol=1e-6)
    # frames far apart (long window): a clip is one frame twice, like a static 2-s clip
    assert all(a == b for a, b in pg.clip_frame_pairs(_frames_sample(24, 32, 4, 600.0), 5))


def test_audio_clip_selection() -> None:
    s = Sample("x", "positive", Window(0.0, 20.0, 1.0, None))
    s.fbank = torch.zeros(5, 1, 128, 204)
    s.clip_spans = [(t, t + 2) for t in (0.0, 4.5, 9.0, 13.5, 18.0)]
    assert pg.audio_clip_indices(s, 3) == [0, 2, 4]  # the 3-clip sampler's starts 0, 9, 18
    assert pg.audio_clip_indices(s, None) == [0, 1, 2, 3, 4]
    s.fbank, s.clip_spans = s.fbank[:3], [(0.0, 2.0), (9.0, 11.0), (18.0, 20.0)]
    assert pg.audio_clip_indices(s, 3) == [0, 1, 2]


def test_prompt_text_as_the_original(backbone, demo_root) -> None:
    van, n = _sample(demo_root, "van"), _sample(demo_root, "n")
    q = BASE.prompt.question
    text = pg.prompt_text(van, BASE.prompt)
    assert text == van.nfbl + "\n" + q and pg.prompt_text(n, BASE.prompt) == n.nfbl + "\n" + q
    assert pg.prompt_text(_sample(demo_root, "va"), BASE.prompt) == q
    pieces = pg.prompt_pieces(text, with_media=True)
    assert "<s>" + "<EMB>".join(pieces) == f"<s>### Human: <Img><EMB></Img> {text}\n### Assistant:"
    assert pg.prompt_pieces(text, False) == [f"### Human: {text}\n### Assistant:"]
    tok, m = backbone.tokenizer, backbone.model
    ids = [tok(p, add_special_tokens=False).input_ids for p in pieces]
    media = torch.ones(m.llama_proj.out_features)
    with torch.no_grad():
        e = m.embed_prompt(tok, text, media)
        emb = m.llama_model.get_input_embeddings()
        assert len(e) == 1 + len(ids[0]) + 1 + len(ids[1])
        assert torch.equal(e[0], emb.weight[tok.bos_token_id])
        assert torch.equal(e[1 + len(ids[0])], media)
        only_text = tok(pg.prompt_pieces(text, False)[0], add_special_tokens=False).input_ids
        assert len(m.embed_prompt(tok, text, None)) == 1 + len(only_text)  # no <Img>, no token
    # "\n### Assistant:" ends with <0x0A> "##" "#" as in LLaMA, so the stop piece exists
    tail = tok.convert_ids_to_tokens(tok("x\n###", add_special_tokens=False).input_ids)
    assert tail[-3:] == ["<0x0A>", "##", "#"]
    assert backbone.stop_id == tok.convert_tokens_to_ids("##")


def test_tokenizer_from_sentencepiece_model_matches_it(tmp_path, demo_root) -> None:
    """A Vicuna folder ships tokenizer.model; the original encoded with slow SentencePiece. Train a
    LLaMA-like SentencePiece model, load it as Vicuna's would be, compare ids on our pieces."""
    spm = pytest.importorskip("sentencepiece")
    from transformers import AutoTokenizer

    text = pg.prompt_text(_sample(demo_root, "van"), BASE.prompt)
    corpus = [line for line in text.split("\n") if line] * 20 + ["### Human: <Img></Img> a##b"] * 20
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=buf, model_type="bpe", vocab_size=512,
        byte_fallback=True, split_digits=True, character_coverage=1.0, num_threads=1,
        normalization_rule_name="identity", remove_extra_whitespaces=False, unk_id=0, bos_id=1,
        eos_id=2, pad_id=-1, minloglevel=2, hard_vocab_limit=False)  # fmt: skip
    (tmp_path / "tokenizer.model").write_bytes(buf.getvalue())
    config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
              "unk_token": "<unk>"}  # fmt: skip
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    tok = AutoTokenizer.from_pretrained(tmp_path)
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    for piece in [*pg.prompt_pieces(text, True), *pg.prompt_pieces(text, False)]:
        assert tok(piece, add_special_tokens=False).input_ids == sp.encode(piece)


def test_stop_rule_unit() -> None:
    assert pg.finish_ids([5, 6, 7, 13, 9, 8, 8], stop_id=9, eos_id=2) == [5, 6, 7]
    assert pg.finish_ids([5, 6, 2, 2, 2], stop_id=9, eos_id=2) == [5]  # EOS ends, dropped too
    assert pg.finish_ids([5, 6, 7, 8], stop_id=9, eos_id=2) == [5, 6]  # length limit: as original
    assert pg.finish_ids([9], stop_id=9, eos_id=2) == []


def test_generation_end_to_end_on_demo(backbone, demo_root) -> None:
    van, n = _sample(demo_root, "van"), _sample(demo_root, "n")
    assert backbone.deterministic and backbone.preprocess.frame_size == 224
    assert (backbone.preprocess.mean, backbone.preprocess.std) == (CLIP_MEAN, CLIP_STD)
    first = backbone.describe([van, n], BASE.prompt)
    assert all(isinstance(t, str) for t in first)
    embeds = backbone.embed(van, BASE.prompt)
    raw = backbone.generate_ids([embeds])[0]  # a second run: the same greedy ids
    assert first[0] == backbone.decode(raw)
    backbone.conf.batch_size = 2  # a left-padded batch gives what one-by-one gives
    try:
        assert backbone.describe([van, n], BASE.prompt) == first
    finally:
        backbone.conf.batch_size = 1
    # Force the stop piece: "##" scores twice what the token generated at step 4 scores.
    head, stop = backbone.model.llama_model.get_output_embeddings(), backbone.stop_id
    saved = head.weight[stop].clone()
    try:
        with torch.no_grad():
            head.weight[stop] = 2 * head.weight[raw[4]]
        ids = backbone.generate_ids([embeds])[0]
    finally:
        with torch.no_grad():
            head.weight[stop] = saved
    assert stop in ids and ids.index(stop) == len(ids) - 1 <= 4  # generation stopped right there
    want = backbone.tokenizer.decode(ids[:-2], skip_special_tokens=True)
    assert backbone.decode(ids) == want and ids[:-2] == raw[: len(ids) - 2]


def test_identity_and_real_paths(backbone, model_a, demo_root, tmp_path, monkeypatch) -> None:
    ident = pg.identity(_conf(max_new_tokens=12))
    assert ident == backbone.identity() and ident["deterministic"] is True
    assert pg.identity(_conf(seed=1))["weights"] != ident["weights"]
    assert pg.identity(_conf(do_sample=True))["deterministic"] is False
    with pytest.raises(ValueError, match="imagebind_path"):
        pg.identity(_conf(tiny=False))
    paths = {k: str(v) for k, v in pt.write_original(model_a, tmp_path).items()}
    real = _conf(tiny=False, imagebind_path=paths["imagebind"], vicuna_path=paths["vicuna"],
                 delta_path=paths["delta"], max_new_tokens=8)  # fmt: skip
    assert set(pg.identity(real)["weights"]) == {"imagebind", "vicuna", "delta"}
    with pytest.raises(CheckpointError, match="shape mismatches"):  # huge ImageBind vs tiny file
        pg.PandaGPTBackbone(real)
    monkeypatch.setattr(pg, "ImageBindConfig", ImageBindConfig.tiny)  # the real path, tiny sizes
    bb = pg.PandaGPTBackbone(real)
    assert isinstance(bb.describe([_sample(demo_root, "an")], BASE.prompt)[0], str)
    with pytest.raises(BackboneError, match="context"):
        bb.generate_ids([torch.zeros(2045, bb.model.llama_proj.out_features)])


@pytest.mark.gpu
def test_gpu_smoke(demo_root) -> None:
    van = _sample(demo_root, "van")
    for dtype in ("float16", "bfloat16"):
        bb = pt.TinyPandaGPTBackbone(_conf(device="cuda", dtype=dtype, max_new_tokens=16))
        assert next(bb.model.parameters()).is_cuda
        out = bb.describe([van, van], BASE.prompt)
        assert out[0] == out[1] == bb.describe([van], BASE.prompt)[0]
