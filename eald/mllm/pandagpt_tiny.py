"""backbone=pandagpt_tiny: PandaGPT's real code on tiny random weights, written in the original
layout (imagebind_huge.pth, a Vicuna HF folder, the pytorch_model.pt delta) for this process only
and loaded through `load_pandagpt`, as released weights are. Tests and CPU runs; its text is
noise."""

from __future__ import annotations

import re
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from peft import get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from eald.mllm.convert import LoadReport
from eald.mllm.imagebind import (
    ImageBindAudioEncoder,
    ImageBindConfig,
    ImageBindVisionEncoder,
    imagebind_keymap,
)
from eald.mllm.pandagpt import PandaGPT, PandaGPTBackbone, _tiny_sizes, load_pandagpt, lora_config
from eald.mllm.video_llama_tiny import build_tiny_tokenizer


def _ib_original_key(ours: str) -> str:
    """Inverts imagebind's key map; the round-trip test reloads through the forward map."""
    for pattern, template in imagebind_keymap().rules:
        if m := re.fullmatch(re.sub(r"\\\\(\d)", r"(?P<g\1>.+)", re.escape(template)), ours):
            n = iter(range(1, 10))
            return m.expand(re.sub(r"\([^()]*\)", lambda _, n=n: f"\\g<g{next(n)}>", pattern)
                            .replace("\\.", "."))  # fmt: skip
    raise KeyError(ours)


def build_tiny(seed: int, hidden: int = 64, layers: int = 2, heads: int = 4, lora_r: int = 32,
               lora_alpha: int = 32) -> PandaGPT:  # fmt: skip
    """Random weights from `seed`, all perturbed (LoRA B too); vocab + 1 rows, as Vicuna v0."""
    cfg = LlamaConfig(vocab_size=len(build_tiny_tokenizer()) + 1, hidden_size=hidden,
                      intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=heads, rms_norm_eps=1e-6,
                      max_position_embeddings=2048, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                      initializer_range=0.3)  # wide: outputs then depend on the inputs  # fmt: skip
    ib = ImageBindConfig.tiny()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        enc = {"audio": ImageBindAudioEncoder(ib), "vision": ImageBindVisionEncoder(ib)}
        llama = get_peft_model(LlamaForCausalLM(cfg), lora_config(lora_r, lora_alpha, 0.1))
        model = PandaGPT(enc, llama, ib.embed_dim)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval().requires_grad_(False)


def write_original(model: PandaGPT, out_dir: str | Path, *, default_infix: bool = True,
                   ) -> dict[str, Path]:  # fmt: skip
    """`model` as the original files: imagebind_huge.pth (plain state dict), a Vicuna HF folder,
    pytorch_model.pt (llama_proj + LoRA; `default_infix` False: peft-0.2 names, no ".default.")."""
    (out := Path(out_dir)).mkdir(parents=True, exist_ok=True)
    paths = {"imagebind": out / "imagebind_huge.pth", "vicuna": out / "vicuna",
             "delta": out / "pytorch_model.pt"}  # fmt: skip
    ib = {_ib_original_key(k): v for k, v in model.encoders.state_dict().items()}
    torch.save(ib, paths["imagebind"])
    peft_model = model.llama_model
    base = {k.removeprefix("base_model.model.").replace(".base_layer.", "."): v
            for k, v in peft_model.state_dict().items() if ".lora_" not in k}  # fmt: skip
    plain = LlamaForCausalLM(peft_model.config)
    plain.load_state_dict(base, strict=True)
    plain.save_pretrained(paths["vicuna"])
    build_tiny_tokenizer().save_pretrained(paths["vicuna"])  # LLaMA-shaped, shared with VL
    delta = OrderedDict((f"llama_proj.{k}", v) for k, v in model.llama_proj.state_dict().items())
    for k, v in peft_model.state_dict().items():  # named like agent.save_model's output
        if ".lora_" in k:
            delta["llama_model." + (k if default_infix else k.replace(".default.", "."))] = v
    torch.save(delta, paths["delta"])
    return paths


def write_tiny_checkpoints(out_dir: str | Path, seed: int, *, default_infix: bool = True,
                           **sizes: int) -> dict[str, Path]:  # fmt: skip
    """`build_tiny(seed, **sizes)` in the original layout: {"imagebind", "vicuna", "delta"}."""
    return write_original(build_tiny(seed, **sizes), out_dir, default_infix=default_infix)


class TinyPandaGPTBackbone(PandaGPTBackbone):
    """`PandaGPTBackbone` loading tiny files written for this process only."""

    def _load(self, c: Any, kw: dict[str, Any]) -> tuple[PandaGPT, Any, LoadReport]:
        with tempfile.TemporaryDirectory(prefix="eald-pandagpt-tiny-") as tmp:
            p = write_tiny_checkpoints(tmp, c.seed, **_tiny_sizes(c))
            return load_pandagpt(*p.values(), ib=ImageBindConfig.tiny(), **kw)
