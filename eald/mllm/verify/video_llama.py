"""Both sides of the Video-LLaMA comparison that run in eald's environment: the shared tiny
assets (random weights in the released files' layouts, a SentencePiece `tokenizer.model`, inputs)
and the port's stage outputs. The original's side is `original_video_llama.py`, run by another
interpreter; `compare` lines the two up."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from eald.data.sampling import Sample, Window
from eald.mllm import video_llama as vl
from eald.mllm import video_llama_prompt as vp
from eald.mllm import video_llama_tiny as vt

QUESTION = "What is the emotion of the person in the video: positive, neutral or negative?"
NFBL = "- 0.5s to 2.0s: folding arms; - 3.0s to 4.5s: touching the face"
# Stages in pipeline order; tensors are compared numerically, the rest for equality.
STAGES = ("eva", "qformer", "video_tokens", "imagebind_audio", "audio_tokens", "prompt",
          "segment_ids", "context", "logits", "greedy_ids", "sampled_ids", "sampled_answer",
          "decoded")  # fmt: skip


def train_tokenizer(out_dir: Path, vocab_size: int = 320) -> Path:
    """A LLaMA-style SentencePiece model (BPE, byte fallback, split digits, <unk>/<s>/</s> =
    0/1/2) trained on the prompt's own text, so the original's slow `LlamaTokenizer` and the
    port's tokenizer read the same `tokenizer.model`, as with a real LLaMA folder."""
    import sentencepiece as spm

    text = [vp.AV_MESSAGE, vp.render("llama2", QUESTION), vp.render("vicuna", NFBL),
            "The video contains 8 frames sampled at 0.0, 1.5, 3.0 seconds.",
            "The person looks happy, calm, sad, angry or surprised."] * 4  # fmt: skip
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text), model_writer=buf, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, split_digits=True, character_coverage=1.0, num_threads=1,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, hard_vocab_limit=False,
        remove_extra_whitespaces=False, normalization_rule_name="identity", minloglevel=2,
    )  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tokenizer.model").write_bytes(buf.getvalue())
    # As LLaMA folders of the time: the slow class, special tokens, no add_bos_token entry.
    config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
              "unk_token": "<unk>", "model_max_length": 4096}  # fmt: skip
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return out_dir / "tokenizer.model"


def prepare(work: Path, *, seed: int, frames: int, clips: int, max_new_tokens: int,
            template: str, sample_seed: int) -> dict[str, Any]:  # fmt: skip
    """Write the tiny files, the inputs and spec.json under `work`; returns the spec."""
    from transformers import AutoTokenizer

    tok_dir = train_tokenizer(work / "sentencepiece").parent
    tok = AutoTokenizer.from_pretrained(tok_dir)
    conf = conf_for(seed, template, max_new_tokens)
    model = vt.build_tiny_model(conf, tokenizer=tok)
    files = vt.write_checkpoints(model, work / "files", vl.TINY_NAMES)
    # The port reads the folder's tokenizer.json, the original its tokenizer.model: both ship.
    shutil.copy2(tok_dir / "tokenizer.model", files["llama"] / "tokenizer.model")
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, (frames, 90, 160, 3), dtype=np.uint8)
    fbank = torch.from_numpy(rng.standard_normal((clips, 1, 128, 204)).astype(np.float32))
    inputs = {
        "frames": torch.from_numpy(raw),
        "video": vl.frames_tensor(raw)[None],
        "audio": fbank[None],
    }
    torch.save(inputs, work / "inputs.pt")
    a = model.arch
    sizes = {
        "vision": {"width": a.vision.hidden_size, "layers": a.vision.num_hidden_layers,
                   "heads": a.vision.num_attention_heads,
                   "mlp_ratio": a.vision.intermediate_size / a.vision.hidden_size},
        "qformer": {"width": a.qformer.hidden_size, "heads": a.qformer.num_attention_heads,
                    "intermediate": a.qformer.intermediate_size,
                    "layers": a.qformer.num_hidden_layers},
        "imagebind": dataclasses.asdict(a.imagebind),
    }  # fmt: skip
    n = len(tok)  # id sequences both tokenizers decode: specials, byte runs, the added tokens
    cases = [rng.integers(0, n + 2, 24).tolist() for _ in range(16)] + [list(range(n + 2))]
    spec = {"files": {k: str(v) for k, v in files.items()}, "sizes": sizes, "decode": cases,
            "inputs": str(work / "inputs.pt"), "template": template, "seed": seed,
            "question": f"{NFBL} {QUESTION}", "max_new_tokens": max_new_tokens,
            "sample_seed": sample_seed}  # fmt: skip
    (work / "spec.json").write_text(json.dumps(spec, indent=2))
    return spec


def conf_for(seed: int, template: str, max_new_tokens: int, **over: Any) -> vl.VideoLlamaConf:
    return vl.VideoLlamaConf(tiny=True, device="cpu", dtype="fp32", seed=seed, template=template,
                             max_new_tokens=max_new_tokens, **over)  # fmt: skip


@torch.no_grad()
def run_port(spec: dict[str, Any]) -> dict[str, Any]:
    """The port's output at every stage, from the same files and inputs as the original."""
    inputs = torch.load(spec["inputs"], weights_only=False)
    paths = {k: Path(v) for k, v in spec["files"].items()}
    conf = conf_for(spec["seed"], spec["template"], spec["max_new_tokens"])
    backbone = vl.VideoLlamaBackbone(conf, vl.load_video_llama(conf, paths))
    m, video, audio = backbone.model, inputs["video"], inputs["audio"]
    out: dict[str, Any] = {}
    x = video.transpose(1, 2).flatten(0, 1)
    out["eva"] = m.visual_encoder(pixel_values=x).last_hidden_state
    out["qformer"] = m.Qformer(query_embeds=m.query_tokens.expand(len(x), -1, -1),
                               encoder_hidden_states=out["eva"]).last_hidden_state  # fmt: skip
    out["video_tokens"] = m.encode_videoQformer_visual(video)
    out["imagebind_audio"] = m.audio_encoder.postprocess(m.audio_encoder(audio), scale=True)
    out["audio_tokens"] = m.encode_audioQformer(audio)
    frames = inputs["frames"].numpy()
    sample = Sample("verify", "neutral", Window(0.0, 6.0, 1.0, None), frames=frames,
                    frame_times=[float(i) for i in range(len(frames))], fbank=audio[0],
                    nfbl=NFBL)  # fmt: skip
    prompt = SimpleNamespace(question=QUESTION, nfbl_intro="{nfbl}")  # as the config node
    segs = vp.segments(conf.template, sample, prompt)
    out["prompt"] = vp.PLACEHOLDER.join(segs)
    out["segment_ids"] = vp.segment_ids(backbone.tokenizer, segs)
    out["context"] = backbone.inputs_embeds([sample], prompt)[0]
    llm = m.llama_model
    out["logits"] = llm(inputs_embeds=out["context"]).logits[:, -1]
    out["greedy_ids"] = vp.generate_ids(llm, out["context"], conf, backbone.stops)
    sampling = dataclasses.replace(conf, do_sample=True)  # Chat.answer's decoding
    torch.manual_seed(spec["sample_seed"])
    ids = vp.generate_ids(llm, out["context"], sampling, backbone.stops)
    out["sampled_ids"] = ids
    out["sampled_answer"] = vp.clean_answer(backbone.tokenizer, ids, conf.template, m.decode)
    out["decoded"] = [m.decode(c) for c in spec["decode"]]
    return out


def _strip_start(ids: list[int]) -> list[int]:
    """transformers 4.28 returns [BOS] + new ids for inputs_embeds; transformers 5 new ids."""
    return ids[1:] if ids[:1] == [1] else ids


def compare(original: dict[str, Any], port: dict[str, Any], tol: float) -> list[dict[str, Any]]:
    """One row per stage: shapes and max |difference| for tensors, equality for the rest."""
    rows = []
    for stage in STAGES:
        a, b = original[stage], port[stage]
        if stage == "greedy_ids":
            a = _strip_start(a)
        if isinstance(a, torch.Tensor):
            a, b = a.detach().float().reshape(-1), b.detach().float().reshape(-1)
            if a.shape != b.shape:
                rows.append({"stage": stage, "detail": f"shape {tuple(a.shape)} vs "
                             f"{tuple(b.shape)}", "ok": False})  # fmt: skip
                continue
            diff = float((a - b).abs().max())
            scale = float(a.abs().max())
            rows.append({"stage": stage, "n": a.numel(), "max_abs_diff": diff,
                         "max_abs_value": scale, "ok": diff <= tol * max(1.0, scale),
                         "detail": f"max |diff| {diff:.2e} of max |x| {scale:.3g}"})  # fmt: skip
        else:
            rows.append({"stage": stage, "ok": a == b, "detail": _equality(a, b)})
    return rows


def _equality(a: Any, b: Any) -> str:
    if a == b:
        return f"equal ({len(a)} items)" if isinstance(a, list) else "equal"
    if isinstance(a, list) and isinstance(b, list):
        first = next(
            (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
        )
        return f"differ from item {first} (lengths {len(a)} vs {len(b)})"
    return f"differ: {str(a)[:60]!r} vs {str(b)[:60]!r}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| stage | result | detail |", "|---|---|---|"]
    lines += [f"| {r['stage']} | {'ok' if r['ok'] else 'DIFFERS'} | {r['detail']} |"
              for r in rows]  # fmt: skip
    return "\n".join(lines)
