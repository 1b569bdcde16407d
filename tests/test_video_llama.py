"""Video-LLaMA port: checkpoints in the ORIGINAL layouts load exactly through the converter, the
preprocessing constants, the demo's prompt text, the stop rule and end-to-end generation.

Weights cannot be downloaded, so a tiny random model is written as the released files
(eva_vit_g.pth, blip2_pretrained_flant5xxl.pth, imagebind_huge.pth, VL/AL branch files, an HF
LLaMA folder) and loaded back through `load_video_llama`."""

from __future__ import annotations

import copy
import dataclasses
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from eald.data.dataset import load_dataset
from eald.data.sampling import Sample, Window, sample_video
from eald.mllm import CLIP_MEAN, CLIP_STD, BackboneError
from eald.mllm import video_llama as vl
from eald.mllm import video_llama_prompt as vp
from eald.mllm import video_llama_tiny as vt
from eald.mllm.convert import CheckpointError
from tests.conftest import REPO

BASE = OmegaConf.load(REPO / "eald" / "conf" / "config.yaml")
PROMPT = OmegaConf.create({"question": "Q?", "nfbl_intro": "NFBL: {nfbl}"})
WB = ("weight", "bias")
# The demo's audio-video turn, spelled out (the source's line continuations keep 17 / 18 spaces).
AV = (
    "Close your eyes, open your ears and you imagine only based on the sound that: <ImageHere>."
    "                 Close your ears, open your eyes and you see that <Video><ImageHere></Video>."
    "                  Now answer my question based on what you have just seen and heard."
)


def _conf(**over) -> vl.VideoLlamaConf:
    return dataclasses.replace(vl.VideoLlamaConf(tiny=True, device="cpu"), **over)


@pytest.fixture(scope="module")
def model_a() -> vl.VideoLlamaModel:
    return vt.build_tiny_model(_conf(seed=3))


@pytest.fixture(scope="module")
def files(model_a, tmp_path_factory) -> dict[str, Path]:
    return vt.write_checkpoints(model_a, tmp_path_factory.mktemp("vl_ckpt"), vl.TINY_NAMES)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> vl.VideoLlamaBackbone:
    """The tiny backbone as `backbone=video_llama_tiny` builds it (files cached in tiny_dir)."""
    return vt.TinyVideoLlamaBackbone(_conf(tiny_dir=str(tmp_path_factory.mktemp("tiny")),
                                       max_new_tokens=16))  # fmt: skip


def _sample(video=True, audio=True, nfbl=True, frames=4, clips=3, seed=0) -> Sample:
    rng = np.random.default_rng(seed)
    return Sample(
        "x", "positive", Window(0.0, 6.0, 1.0, None),
        frames=rng.integers(0, 256, (frames, 60, 80, 3), dtype=np.uint8) if video else None,
        frame_times=[2.0 * i for i in range(frames)] if video else None,
        fbank=torch.from_numpy(rng.standard_normal((clips, 1, 128, 204)).astype(np.float32))
        if audio else None,
        nfbl="- 0.5s to 2.0s: folding arms" if nfbl else None,
    )  # fmt: skip


def _bert(prefix: str, layers: int, cross_every: int) -> set[str]:
    """LAVIS BertModel key names of a stripped Q-Former (no text FFN, no word embeddings)."""
    keys = {f"{prefix}.bert.embeddings.LayerNorm.{x}" for x in WB}
    for i in range(layers):
        p = f"{prefix}.bert.encoder.layer.{i}."
        parts = ["attention"] + (["crossattention"] if i % cross_every == 0 else [])
        for a in parts:
            keys |= {f"{p}{a}.self.{m}.{x}" for m in ("query", "key", "value") for x in WB}
            keys |= {f"{p}{a}.output.{m}.{x}" for m in ("dense", "LayerNorm") for x in WB}
        keys |= {f"{p}intermediate_query.dense.{x}" for x in WB}
        keys |= {f"{p}output_query.{m}.{x}" for m in ("dense", "LayerNorm") for x in WB}
    return keys


def _inner(path: Path) -> dict[str, torch.Tensor]:
    obj = torch.load(path, weights_only=True)
    return obj["model"] if "model" in obj and isinstance(obj["model"], dict) else obj


def test_written_files_have_the_original_key_layout(files):
    eva = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"}
    for i in range(2):
        eva |= {f"blocks.{i}.{n}" for n in (
            "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.q_bias", "attn.v_bias",
            "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias",
            "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias")}  # fmt: skip
    pos = {f"{q}.bert.embeddings.position_ids" for q in ("Qformer", "video_Qformer")}
    inv = {f"llama_model.model.layers.{i}.self_attn.rotary_emb.inv_freq" for i in range(2)}
    blip2 = _bert("Qformer", 2, 2) | {"query_tokens", "ln_vision.weight", "ln_vision.bias",
                                      "t5_proj.weight", "t5_proj.bias",
                                      "Qformer.bert.embeddings.position_ids"}  # fmt: skip
    vl_keys = _bert("video_Qformer", 2, 1) | pos | inv | {
        "video_query_tokens", "video_frame_position_embedding.weight", "llama_proj.weight",
        "llama_proj.bias"}  # fmt: skip
    ib_buffers = {"modality_preprocessors.text.mask"} | {
        f"modality_postprocessors.{m}.1.log_logit_scale"
        for m in ("text", "depth", "thermal", "imu")
    }
    al_keys = _bert("audio_Qformer", 2, 1) | pos | inv | {
        "audio_Qformer.bert.embeddings.position_ids", "audio_query_tokens",
        "audio_position_embedding.weight", "audio_llama_proj.weight", "audio_llama_proj.bias",
        "audio_encoder.modality_postprocessors.audio.1.log_logit_scale",
        *(f"audio_encoder.{k}" for k in ib_buffers)}  # fmt: skip
    pre, trunk = "modality_preprocessors.audio.", "modality_trunks.audio.blocks."
    ib = ib_buffers | {pre + "cls_token", pre + "rgbt_stem.proj.weight",
                       pre + "rgbt_stem.norm_layer.weight", pre + "rgbt_stem.norm_layer.bias",
                       pre + "pos_embedding_helper.pos_embed", "modality_heads.audio.0.weight",
                       "modality_heads.audio.0.bias", "modality_heads.audio.2.weight",
                       "modality_postprocessors.audio.1.log_logit_scale"}  # fmt: skip
    for i in range(2):
        ib |= {
            f"{trunk}{i}.attn.{n}"
            for n in (
                "in_proj_weight",
                "in_proj_bias",
                "bias_k",
                "bias_v",
                "out_proj.weight",
                "out_proj.bias",
            )
        }
        ib |= {
            f"{trunk}{i}.{n}.{x}" for n in ("norm_1", "norm_2", "mlp.fc1", "mlp.fc2") for x in WB
        }
    expected = {"eva_vit": eva, "qformer": blip2, "vl": vl_keys, "al": al_keys, "imagebind": ib}
    for role, keys in expected.items():
        assert set(_inner(files[role])) == keys, role
    assert set(torch.load(files["vl"], weights_only=True)) >= {"model", "epoch"}
    assert not isinstance(torch.load(files["eva_vit"], weights_only=True).get("model"), dict)
    al, blip = _inner(files["al"]), _inner(files["qformer"])
    assert blip["Qformer.bert.encoder.layer.0.crossattention.self.key.weight"].shape == (32, 48)
    assert al["audio_Qformer.bert.encoder.layer.1.crossattention.self.key.weight"].shape == (32, 16)
    assert al["audio_query_tokens"].shape == (1, 8, 32)
    assert al["audio_position_embedding.weight"].shape == (8, 16)
    assert _inner(files["vl"])["video_frame_position_embedding.weight"].shape == (32, 32)
    assert (files["llama"] / "tokenizer.json").exists() and (
        files["llama"] / "config.json"
    ).exists()


def test_round_trip_is_exact(model_a, files):
    conf = _conf(seed=3)
    b = vl.load_video_llama(conf, files)
    assert b.load_reports["missing"] == ["audio_encoder", "llama_model"]  # loaded elsewhere
    assert "t5_proj.weight" in b.load_reports["qformer"]["ignored"]
    # The AL file is loaded after ImageBind, as the original does: its log_logit_scale (3.0, ln 20
    # rounded to bf16, as in the released file) wins over ImageBind's ln 20.
    assert b.load_reports["al_over_imagebind"] == ["audio.log_logit_scale"]
    assert b.audio_encoder.log_logit_scale.item() == 3.0
    assert torch.load(files["imagebind"], weights_only=True)[
        "modality_postprocessors.audio.1.log_logit_scale"
    ].item() == pytest.approx(math.log(20))
    model_a = copy.deepcopy(model_a)  # the model the files describe, with that precedence
    with torch.no_grad():
        model_a.audio_encoder.log_logit_scale.fill_(3.0)
    sa, sb = model_a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert [k for k in sa if not torch.equal(sa[k], sb[k])] == []
    x, au = torch.randn(2, 3, 4, 224, 224), torch.randn(2, 8, 1, 128, 204)
    with torch.no_grad():
        va, aa = model_a.encode_videoQformer_visual(x), model_a.encode_audioQformer(au)
        assert va.shape == (2, 32, 64) and aa.shape == (2, 8, 64)
        assert torch.equal(va, b.encode_videoQformer_visual(x))
        assert torch.equal(aa, b.encode_audioQformer(au))
        ba, bb = vl.VideoLlamaBackbone(conf, model_a), vl.VideoLlamaBackbone(conf, b)
        (ea,), (eb,) = ba.inputs_embeds([_sample()], PROMPT), bb.inputs_embeds([_sample()], PROMPT)
        assert torch.equal(ea, eb)
        la = model_a.llama_model(inputs_embeds=ea).logits
        assert torch.equal(la, b.llama_model(inputs_embeds=eb).logits)
        # The prompt really carries the media: other frames change the logits.
        (ec,) = bb.inputs_embeds([_sample(seed=1)], PROMPT)
        assert not torch.equal(la, b.llama_model(inputs_embeds=ec).logits)


def _edit(files: dict[str, Path], tmp: Path, role: str, fn) -> dict[str, Path]:
    out = dict(files)
    out[role] = tmp / files[role].name
    obj = torch.load(files[role], weights_only=True)
    fn(obj["model"] if isinstance(obj.get("model"), dict) else obj)
    torch.save(obj, out[role])
    return out


def test_converter_ignores_known_extras_and_rejects_the_rest(files, tmp_path):
    conf = _conf(seed=3)

    def extras(sd):  # a 40th EVA block analogue and BLIP-2 text-branch tensors
        sd.update({"blocks.2.attn.q_bias": torch.zeros(48), "blocks.2.attn.v_bias": torch.zeros(48),
                   "blocks.2.attn.qkv.weight": torch.zeros(144, 48)})  # fmt: skip

    ok = _edit(files, tmp_path, "eva_vit", extras)
    ok = _edit(
        ok,
        tmp_path,
        "qformer",
        lambda sd: sd.update(
            {
                "Qformer.cls.predictions.bias": torch.zeros(5),
                "Qformer.bert.embeddings.word_embeddings.weight": torch.zeros(5, 32),
                "Qformer.bert.encoder.layer.0.intermediate.dense.weight": torch.zeros(64, 32),
            }
        ),
    )
    rep = vl.load_video_llama(conf, ok).load_reports
    assert "blocks.2.attn.q_bias" in rep["eva_vit"]["ignored"]
    assert "Qformer.cls.predictions.bias" in rep["qformer"]["ignored"]
    bad = [
        (
            "vl",
            lambda sd: sd.update({"video_Qformer.bert.pooler.dense.weight": torch.zeros(1)}),
            "pooler",
        ),
        (
            "vl",
            lambda sd: sd.update(
                {"audio_Qformer.bert.embeddings.LayerNorm.weight": torch.zeros(32)}
            ),
            "audio_Qformer",
        ),  # not VL's
        ("al", lambda sd: sd.pop("audio_llama_proj.bias"), "missing"),
        ("vl", lambda sd: sd.update({"llama_proj.weight": torch.zeros(64, 31)}), "shape"),
    ]
    for role, fn, words in bad:  # fmt: skip
        with pytest.raises(CheckpointError, match=words):
            vl.load_video_llama(conf, _edit(files, tmp_path, role, fn))


def test_preprocessing_shapes_and_constants(backbone):
    p = backbone.preprocess
    assert (p.frame_size, p.mean, p.std, p.max_frames, p.max_audio_clips) == (
        224, CLIP_MEAN, CLIP_STD, 32, 8)  # fmt: skip
    frames = np.full((5, 90, 160, 3), (255, 128, 0), dtype=np.uint8)
    x = vl.frames_tensor(frames)
    assert x.shape == (3, 5, 224, 224)  # (c, t, h, w): squashed, no crop
    want = [(v / 255 - m) / s for v, m, s in zip((255, 128, 0), CLIP_MEAN, CLIP_STD, strict=True)]
    assert torch.allclose(x.mean(dim=(1, 2, 3)), torch.tensor(want), atol=1e-5)
    assert backbone.inputs_embeds([_sample(frames=32, clips=8)], PROMPT)[0].shape[1] > 32 + 8
    with pytest.raises(BackboneError, match="frames"):
        backbone.describe([_sample(frames=33)], PROMPT)
    with pytest.raises(BackboneError, match="audio clips"):
        backbone.describe([_sample(clips=9)], PROMPT)
    with pytest.raises(BackboneError, match="128, 204"):
        backbone.describe(
            [dataclasses.replace(_sample(), fbank=torch.zeros(2, 1, 64, 204))], PROMPT
        )
    for bad in ({"max_frames": 33}, {"max_audio_clips": 9}, {"template": "chatml"}):
        with pytest.raises(ValueError):
            vl.VideoLlamaBackbone(_conf(**bad), model=backbone.model)


def _turn(tpl: str, msg: str) -> str:
    return {"llama2": f"[INST] <<SYS>>\n\n<</SYS>>\n\n{msg} [/INST]",
            "vicuna": f"###Human: {msg}###Assistant:"}[tpl]  # fmt: skip


AUDIO_ONLY = (
    "Close your eyes, open your ears and you imagine only based on the sound that: <ImageHere>."
    "                 Now answer my question based on what you have just heard."
)


@pytest.mark.parametrize("tpl", ["llama2", "vicuna"])
def test_prompt_text_follows_the_demo(tpl):
    vid = "<Video><ImageHere></Video> The video contains 4 frames sampled at 0.0, 2.0, 4.0, 6.0"
    vid += " seconds. "
    cases = {
        (True, True, True): f"{AV} NFBL: - 0.5s to 2.0s: folding arms Q?",
        (True, True, False): f"{AV} Q?",
        (True, False, False): f"{vid} Q?",
        (False, True, True): f"{AUDIO_ONLY} NFBL: - 0.5s to 2.0s: folding arms Q?",
        (False, False, True): "NFBL: - 0.5s to 2.0s: folding arms Q?",
        (False, False, False): "Q?",
    }  # fmt: skip
    for (v, a, n), msg in cases.items():
        text = vp.render(tpl, vp.user_message(_sample(v, a, n), PROMPT))
        assert text == _turn(tpl, msg)
        segs = vp.segments(tpl, _sample(v, a, n), PROMPT)
        assert len(segs) == 1 + v + a and "<ImageHere>" not in "".join(segs)
    segs = vp.segments(tpl, _sample(), PROMPT)
    head = {"llama2": "[INST] <<SYS>>\n\n<</SYS>>\n\n", "vicuna": "###Human: "}[tpl]
    assert (
        segs[0]
        == head + "Close your eyes, open your ears and you imagine only based on the sound that: "
    )
    assert segs[1] == ".                 Close your ears, open your eyes and you see that <Video>"
    assert segs[2].startswith("</Video>.                  Now answer")


def test_bos_is_added_whatever_the_tokenizer_folder_says(backbone, tmp_path):
    """Some LLaMA tokenizer folders add no BOS under transformers 5 (a SentencePiece folder
    whose tokenizer_config.json lacks add_bos_token; here, a tokenizer.json without the BOS
    template); the original's slow tokenizer always added one: the port adds it itself."""
    import json

    from transformers import AutoTokenizer

    backbone.tokenizer.save_pretrained(tmp_path)
    spec = json.loads((tmp_path / "tokenizer.json").read_text())
    spec["post_processor"] = None
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert tok("hi").input_ids[0] != tok.bos_token_id  # this folder really adds no BOS
    segs = vp.segments("vicuna", _sample(), PROMPT)
    ids = vp.segment_ids(tok, segs)
    assert ids[0][0] == tok.bos_token_id and ids[0].count(tok.bos_token_id) == 1
    assert ids == vp.segment_ids(backbone.tokenizer, segs)


def test_segments_are_tokenised_separately_with_one_bos(backbone):
    tok = backbone.tokenizer
    ids = vp.segment_ids(tok, vp.segments("vicuna", _sample(), PROMPT))
    assert ids[0][0] == tok.bos_token_id and all(tok.bos_token_id not in s for s in ids[1:])
    assert all(tok.convert_ids_to_tokens(s[0]) == "▁" for s in ids[1:])  # SentencePiece prefix
    assert tok.convert_ids_to_tokens(tok("###", add_special_tokens=False).input_ids) == ["▁###"]
    assert vp.stop_sequences(tok, "vicuna") == [
        tok.convert_tokens_to_ids(["▁###"]),
        tok.convert_tokens_to_ids(["##", "#"]),
    ]


class _Scripted(nn.Module):
    """Wraps lm_head: step k's logits peak at script[k] (to exercise the stop rule)."""

    def __init__(self, head: nn.Module, script: list[int]) -> None:
        super().__init__()
        self.head, self.script, self.steps = head, script, 0

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.head(h).clone()
        out[..., self.script[min(self.steps, len(self.script) - 1)]] += 1e4
        self.steps += 1
        return out


@pytest.mark.parametrize("tpl,tail", [("vicuna", ["▁###"]), ("vicuna", ["##", "#"]),
                                      ("llama2", ["</s>"])])  # fmt: skip
def test_generation_stops_on_the_stop_rule(backbone, tpl, tail):
    tok, llm = backbone.tokenizer, backbone.model.llama_model
    head = llm.lm_head
    script = tok.convert_tokens_to_ids(["▁", "O", "K", *tail, "x", "y", "z"])
    llm.lm_head = _Scripted(head, script)
    try:
        bb = vl.VideoLlamaBackbone(_conf(template=tpl, max_new_tokens=16), backbone.model)
        assert bb.describe([_sample()], PROMPT) == ["OK"]
        assert llm.lm_head.steps == 3 + len(tail)  # stopped right after the stop text
    finally:
        llm.lm_head = head
    stop = vp.StopOnSequences([[7], [5, 6]])
    assert stop(torch.tensor([[1, 5, 6], [5, 6, 1]]), None).tolist() == [True, False]
    ids = tok.convert_tokens_to_ids(["<unk>", "<s>", "▁", "h", "i", "</s>"])
    assert vp.clean_answer(tok, ids,
                           "llama2") == "hi"  # fmt: skip


@pytest.mark.parametrize("tpl,want", [("vicuna", "</s>"), ("llama2", "")])
def test_eos_first_ends_the_answer_as_in_the_original(backbone, tpl, want):
    """transformers 4.28 generated from [BOS] when given only inputs_embeds, and min_length=1
    counted that BOS: EOS may be the very first token. The original's post-processing then
    gives "</s>" (vicuna: decoded with special tokens, cut at "###") or "" (llama2: cut at
    "</s>"); the port answers the same, after one step."""
    tok, llm = backbone.tokenizer, backbone.model.llama_model
    head = llm.lm_head
    llm.lm_head = _Scripted(head, [tok.eos_token_id, *tok.convert_tokens_to_ids(["O", "K"])])
    try:
        bb = vl.VideoLlamaBackbone(_conf(template=tpl, max_new_tokens=16), backbone.model)
        assert bb.describe([_sample()], PROMPT) == [want]
        assert llm.lm_head.steps == 1
        assert vp.clean_answer(tok, [tok.bos_token_id, tok.eos_token_id], tpl) == want
    finally:
        llm.lm_head = head


def test_generation_end_to_end_on_demo_video(backbone, demo_root):
    cfg = OmegaConf.create({
        "seed": 0, "sequence": {"fraction": 1.0}, "nfbl_text": BASE.nfbl_text,
        "sampling": {**BASE.sampling, "num_frames": 8, "audio_clips": 8},
        "modality": {"video": True, "audio": True, "nfbl": True},
    })  # fmt: skip
    sample = sample_video(load_dataset(demo_root).videos["1"], cfg)
    assert sample.fbank.shape == (8, 1, 128, 204) and sample.frames.shape[0] == 8
    first = backbone.describe([sample], BASE.prompt)
    assert first == backbone.describe([sample], BASE.prompt) and isinstance(first[0], str)
    assert backbone.deterministic and backbone.identity()["deterministic"]
    (embs,) = backbone.inputs_embeds([sample], BASE.prompt)
    segs = vp.segment_ids(backbone.tokenizer, vp.segments("llama2", sample, BASE.prompt))
    assert embs.shape[1] == sum(map(len, segs)) + 8 + 32  # audio queries + video queries
    no_audio = dataclasses.replace(sample, fbank=None)
    assert len(backbone.describe([sample, no_audio], BASE.prompt)) == 2
    # The demo's decoding is one override away: do_sample=true (top_p 0.9, temperature 1.0).
    demo = vl.VideoLlamaBackbone(_conf(do_sample=True, max_new_tokens=4), backbone.model)
    assert not demo.deterministic and isinstance(demo.describe([sample], BASE.prompt)[0], str)


def test_identity(files, backbone, tmp_path):
    paths = vt.ensure_tiny_checkpoints(backbone.conf)  # written once, then reused as is
    stamp = paths["vl"].stat().st_mtime_ns
    assert vt.ensure_tiny_checkpoints(backbone.conf) == paths
    assert paths["vl"].stat().st_mtime_ns == stamp
    ident = vt.identity(_conf(seed=3))
    assert ident["kind"] == "video_llama" and ident["weights"]["tiny"]["seed"] == 3
    assert ident["deterministic"] and not vt.identity(_conf(do_sample=True))["deterministic"]
    with pytest.raises(ValueError, match="backbone=video_llama_tiny"):
        vl.identity(_conf(seed=3))  # the released identity never guesses a tiny model's files
    real = _conf(tiny=False, **{f"{k}_path": str(files[k]) for k in vl.TINY_NAMES})
    fp = vl.identity(real)["weights"]["fingerprint"]
    assert "config.json" in vl.identity(real)["weights"]["files"]
    copy = shutil.copytree(files["llama"], tmp_path / "llama")
    with open(copy / "config.json", "a") as f:
        f.write("\n")
    changed = dataclasses.replace(real, llama_path=str(copy))
    assert vl.identity(changed)["weights"]["fingerprint"] != fp
    with pytest.raises(ValueError, match="vl_path"):
        vl.identity(dataclasses.replace(real, vl_path=None))


@pytest.mark.gpu
def test_tiny_bf16_on_cuda(backbone, tmp_path):
    bb = vt.TinyVideoLlamaBackbone(_conf(tiny_dir=str(tmp_path), device="cuda", dtype="bf16",
                                     max_new_tokens=16))  # fmt: skip
    (gpu,) = bb.inputs_embeds([_sample()], PROMPT)
    (cpu,) = backbone.inputs_embeds([_sample()], PROMPT)
    assert gpu.dtype == torch.bfloat16 and gpu.device.type == "cuda"
    cos = torch.nn.functional.cosine_similarity(gpu.float().cpu(), cpu, dim=-1)
    assert cos.min() > 0.95, cos.min()
    out = bb.describe([_sample(), _sample(video=False)], PROMPT)
    assert len(out) == 2 and out == bb.describe([_sample(), _sample(video=False)], PROMPT)


def test_batched_greedy_equals_one_by_one(backbone):
    """Left padding + attention mask + per-row stop rules: prompts of different lengths in one
    batch give the ids (and answers) each gives alone."""
    samples = [_sample(), _sample(audio=False, seed=1), _sample(video=False, nfbl=False, seed=2),
               _sample(frames=2, clips=1, seed=3), _sample(video=False, audio=False, seed=4)]  # fmt: skip
    embs = [e[0] for e in backbone.inputs_embeds(samples, PROMPT)]
    assert len({e.shape[0] for e in embs}) == 4  # 4 lengths (video: 32 tokens, any frames)
    llm, conf, stops = backbone.model.llama_model, backbone.conf, backbone.stops
    one = [vp.generate_ids(llm, e[None], conf, stops) for e in embs]
    assert vp.generate_ids_batch(llm, embs, conf, stops) == one
    serial = vl.VideoLlamaBackbone(_conf(max_new_tokens=16, batch_size=1), backbone.model)
    batched = vl.VideoLlamaBackbone(_conf(max_new_tokens=16, batch_size=3), backbone.model)
    assert batched.describe(samples, PROMPT) == serial.describe(samples, PROMPT)
    # A finished row is padded with EOS until the batch ends: cut where the row stopped.
    assert vp._cut([5, 6, 2, 2, 2], {2}, [[9]]) == [5, 6, 2]
    assert vp._cut([5, 8, 9, 4, 2], {2}, [[8, 9]]) == [5, 8, 9]  # a stop sequence ends it
    assert vp._cut([5, 6, 7], {2}, [[9]]) == [5, 6, 7]  # the length limit
