"""Backbones: the modality switches reach every backbone; absent modalities are neither encoded
nor mentioned. backbone=openai is driven through the real openai client against a real server."""

from __future__ import annotations

import base64
import dataclasses
import io
import wave

import pytest
from omegaconf import OmegaConf

from eald.data.dataset import load_dataset
from eald.data.sampling import sample_video
from eald.mllm import BackboneError
from eald.registry import REGISTRY
from eald.testing.openai_server import FakeOpenAIServer, Reply
from tests.conftest import REPO, sample_cfg


def build_backbone(conf):
    return REGISTRY.build("backbone", conf)


BASE = OmegaConf.load(REPO / "eald" / "conf" / "config.yaml")
MODALITIES = ["v", "a", "n", "va", "vn", "an", "van"]


def _conf(group: str, name: str, **over):
    return REGISTRY.option(group, name, **over)


def _sample(root, mods: str, vid: str = "1"):
    return sample_video(
        load_dataset(root).videos[vid], sample_cfg(mods=mods, num_frames=6, audio_clips=3)
    )


def test_openai_backbone_parts_follow_the_modalities(demo_root):
    with FakeOpenAIServer(lambda n, body: "A calm speaker.") as server:
        bb = build_backbone(_conf("backbone", "openai", base_url=server.base_url, max_frames=4))
        for mods in MODALITIES:
            assert bb.describe([_sample(demo_root, mods)], BASE.prompt) == ["A calm speaker."]
        assert server.count == len(MODALITIES)
        for mods, body in zip(MODALITIES, server.requests, strict=True):
            (msg,) = body["messages"]
            parts = msg["content"]
            kinds = [p["type"] for p in parts]
            text = " ".join(p["text"] for p in parts if p["type"] == "text")
            assert kinds.count("image_url") == (4 if "v" in mods else 0)
            assert kinds.count("input_audio") == (3 if "a" in mods else 0)
            assert ("frames sampled" in text) == ("v" in mods)
            assert ("audio clips" in text) == ("a" in mods)
            assert ("Non-facial body language" in text) == ("n" in mods)
            assert parts[-1]["text"] == BASE.prompt.question
            assert body["model"] == "Qwen/Qwen2.5-Omni-7B" and body["temperature"] == 0
            for p in parts:
                if p["type"] == "image_url":
                    url = p["image_url"]["url"]
                    assert (
                        url.startswith("data:image/jpeg;base64,")
                        and p["image_url"]["detail"] == "low"
                    )
                    assert base64.b64decode(url.split(",", 1)[1])[:2] == b"\xff\xd8"  # JPEG SOI
                if p["type"] == "input_audio":
                    raw = base64.b64decode(p["input_audio"]["data"])
                    with wave.open(io.BytesIO(raw)) as w:
                        assert (w.getframerate(), w.getnframes()) == (16000, 32000)


def test_openai_backbone_without_audio_support_sends_no_audio(demo_root):
    with FakeOpenAIServer(lambda n, body: "ok") as server:
        bb = build_backbone(_conf("backbone", "openai", base_url=server.base_url, send_audio=False))
        bb.describe([_sample(demo_root, "van")], BASE.prompt)
        parts = server.requests[0]["messages"][0]["content"]
        assert "input_audio" not in [p["type"] for p in parts]
        assert not any("audio clips" in p.get("text", "") for p in parts)


def test_openai_backbone_http_error_is_a_backbone_error(demo_root):
    with FakeOpenAIServer(lambda n, body: Reply(status=400, error_message="bad image")) as server:
        bb = build_backbone(_conf("backbone", "openai", base_url=server.base_url, max_retries=0))
        with pytest.raises(BackboneError, match="bad image"):
            bb.describe([_sample(demo_root, "v")], BASE.prompt)


def test_tiny_backbone_is_deterministic_and_sees_each_modality(demo_root):
    bb = build_backbone(_conf("backbone", "tiny", max_new_tokens=12))
    again = build_backbone(_conf("backbone", "tiny", max_new_tokens=12))
    assert bb.identity() == again.identity()
    assert bb.weights_fingerprint == again.weights_fingerprint  # same seed, same weights
    other = build_backbone(_conf("backbone", "tiny", seed=1))
    assert other.identity()["weights"] != bb.identity()["weights"]
    assert other.weights_fingerprint != bb.weights_fingerprint
    lengths = {}
    for mods in MODALITIES:
        s = _sample(demo_root, mods)
        emb = bb.embed(s, BASE.prompt)
        lengths[mods] = emb.shape[0]
        assert bb.describe([s], BASE.prompt) == again.describe([s], BASE.prompt)
    text = lambda m: len(bb.tokenizer.encode(m))  # noqa: E731
    # Modality tokens: one per frame (6) and per audio clip (3), plus their intros.
    assert lengths["va"] - lengths["a"] == 6 + text(
        BASE.prompt.video_intro.format(n=6, duration=6.0) + "\n"
    )
    assert lengths["van"] > lengths["va"] > lengths["v"]
    # Different videos give different descriptions (the model's inputs matter).
    outs = {bb.describe([_sample(demo_root, "van", v)], BASE.prompt)[0] for v in "0123"}
    assert len(outs) == 4


def test_unknown_backbone_is_rejected():
    with pytest.raises(ValueError, match="backbone .gpt5. is not registered"):
        build_backbone(OmegaConf.create({"name": "gpt5"}))


def test_openai_prompt_describes_exactly_what_is_sent(demo_root):
    """6 frames sampled, max_frames=4: the text says 4 frames (and the clips and seconds it
    gets), never the sampler's count. Frames 0, 1, 3, 4 of the 6 are sent."""
    with FakeOpenAIServer(lambda n, body: "ok") as server:
        bb = build_backbone(_conf("backbone", "openai", base_url=server.base_url, max_frames=4))
        sample = _sample(demo_root, "va")
        bb.describe([sample], BASE.prompt)
        parts = server.requests[0]["messages"][0]["content"]
        texts = [p["text"] for p in parts if p["type"] == "text"]
        dur = sample.window.duration_s
        assert texts[0] == BASE.prompt.video_intro.format(n=4, duration=dur)
        assert texts[0].startswith("These are 4 frames sampled")
        assert texts[1] == BASE.prompt.audio_intro.format(n=3, clip_s=2.0, duration=dur)
        sent = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
        from eald.mllm.openai_backbone import jpeg_b64

        want = [f"data:image/jpeg;base64,{jpeg_b64(sample.frames[i], 85)}" for i in (0, 1, 3, 4)]
        assert sent == want


def test_tiny_batched_greedy_equals_one_by_one(demo_root):
    """Left padding + attention mask + per-row EOS: a batch answers exactly as one by one, with
    prompts of different lengths in one batch (mixed modalities and videos)."""
    samples = [_sample(demo_root, m, v) for m, v in
               (("van", "0"), ("v", "1"), ("an", "2"), ("va", "3"), ("n", "0"), ("a", "1"))]  # fmt: skip
    serial = build_backbone(_conf("backbone", "tiny", batch_size=1, max_new_tokens=40))
    batched = build_backbone(_conf("backbone", "tiny", batch_size=4, max_new_tokens=40))
    assert serial.identity() == batched.identity()  # batch size never changes an answer
    lengths = {serial.embed(s, BASE.prompt).shape[0] for s in samples}
    assert len(lengths) == len(samples)  # really different lengths: padding is exercised
    one = [serial.generate_ids([serial.embed(s, BASE.prompt)])[0] for s in samples]
    rows = batched.generate_ids([batched.embed(s, BASE.prompt) for s in samples[:4]])
    rows += batched.generate_ids([batched.embed(s, BASE.prompt) for s in samples[4:]])
    assert rows == one  # token for token
    assert any(r[-1] == 2 and len(r) < 40 for r in one)  # some rows stop early at EOS ...
    want = serial.describe(samples, BASE.prompt)
    assert batched.describe(samples, BASE.prompt) == want
    # stage 1's preprocessing (prepare, in the sampling threads) changes nothing either
    prepared = [batched.prepare(dataclasses.replace(s, prepared={})) for s in samples]
    assert any(p.prepared for p in prepared) and batched.describe(prepared, BASE.prompt) == want


def test_tiny_decoding_loop_equals_transformers_generate(demo_root):
    """tiny's own loop (prefill alone, cached decode) against transformers' greedy generate."""
    import torch

    bb = build_backbone(_conf("backbone", "tiny", max_new_tokens=30))
    for mods, vid in (("van", "0"), ("v", "2")):
        emb = bb.embed(_sample(demo_root, mods, vid), BASE.prompt)
        with torch.no_grad():
            ref = bb.model.lm.generate(
                inputs_embeds=emb[None], attention_mask=torch.ones(1, len(emb), dtype=torch.long),
                max_new_tokens=30, do_sample=False, pad_token_id=0, eos_token_id=2,
            )[0].tolist()  # fmt: skip
        assert bb.generate_ids([emb])[0] == ref
