"""backbone=video_llama_tiny: Video-LLaMA's real code on tiny random weights, written once in
the ORIGINAL files' layouts and split (EVA, BLIP-2, ImageBind, VL/AL branch files, an HF LLaMA
folder) and loaded through the same converter as released weights. For tests and CPU runs; its
text is noise. Imports run one way: prompt <- model <- this fixture."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import string
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

from eald.mllm.convert import KeyMap, apply_keymap
from eald.mllm.imagebind import ImageBindAudioEncoder, ImageBindConfig
from eald.mllm.video_llama import (
    TINY_NAMES,
    VideoLlamaBackbone,
    VideoLlamaConf,
    VideoLlamaModel,
    build_arch,
    load_video_llama,
)
from eald.mllm.video_llama import identity as released_identity


@dataclass(frozen=True)
class TinyVocab:
    """A LLaMA-shaped BPE vocabulary: <unk> <s> </s>, the 256 byte-fallback pieces (so "\\n"
    is <0x0A> = 13 as in LLaMA), "▁", printable ASCII and the merges that make "###" encode
    either as "▁###" or as "##" + "#", like LLaMA's."""

    vocab: dict[str, int]
    merges: list[tuple[str, str]]

    @classmethod
    def build(cls) -> TinyVocab:
        vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
        for b in range(256):
            vocab[f"<0x{b:02X}>"] = len(vocab)
        for c in ["▁", *(c for c in string.printable if 33 <= ord(c) < 127)]:
            vocab[c] = len(vocab)
        merges = [("#", "#"), ("▁", "##"), ("▁##", "#")]
        for a, b in merges:
            vocab[a + b] = len(vocab)
        return cls(vocab, merges)


def build_tiny_tokenizer() -> Any:
    """A real `LlamaTokenizer` (tokenizers backend) over `TinyVocab`; saved with
    `save_pretrained` and reloaded with `AutoTokenizer.from_pretrained` like a real one."""
    from transformers import LlamaTokenizer

    v = TinyVocab.build()
    return LlamaTokenizer(vocab=v.vocab, merges=v.merges, add_bos_token=True, add_eos_token=False)


# ---- Tiny fixture: random weights written in the ORIGINAL files' layouts and split ----------

TINY_VERSION = "video_llama-tiny-1"
_P = r"(Qformer|video_Qformer|audio_Qformer)"
_V, _A = r"visual_encoder\.encoder\.layers\.(\d+)\.", r"audio_encoder\."
# Ours -> original: the inverse of video_llama's key maps and of ImageBind's audio map.
TO_ORIGINAL = KeyMap(rules=[
    (r"visual_encoder\.embeddings\.class_embedding", "cls_token"),
    (r"visual_encoder\.embeddings\.position_embedding", "pos_embed"),
    (r"visual_encoder\.embeddings\.patch_embedding\.(.*)", r"patch_embed.proj.\1"),
    (_V + r"layer_norm([12])\.(.*)", r"blocks.\1.norm\2.\3"),
    (_V + r"self_attn\.qkv\.weight", r"blocks.\1.attn.qkv.weight"),
    (_V + r"self_attn\.projection\.(.*)", r"blocks.\1.attn.proj.\2"),
    (_V + r"mlp\.(.*)", r"blocks.\1.mlp.\2"),
    (r"visual_encoder\.post_layernorm\.(.*)", r"ln_vision.\1"),
    (_P + r"\.layernorm\.(.*)", r"\1.bert.embeddings.LayerNorm.\2"),
    (_P + r"\.encoder\.layer\.(\d+)\.(attention|crossattention)\.attention\.(.*)",
     r"\1.bert.encoder.layer.\2.\3.self.\4"),
    (_P + r"\.encoder\.(.*)", r"\1.bert.encoder.\2"),
    (_A + "cls_token", "modality_preprocessors.audio.cls_token"),
    (_A + "pos_embed", "modality_preprocessors.audio.pos_embedding_helper.pos_embed"),
    (_A + r"stem\.weight", "modality_preprocessors.audio.rgbt_stem.proj.weight"),
    (_A + r"stem_norm\.(.*)", r"modality_preprocessors.audio.rgbt_stem.norm_layer.\1"),
    (_A + r"blocks\.(\d+)\.(attn\..*)", r"modality_trunks.audio.blocks.\1.\2"),
    (_A + r"blocks\.(\d+)\.norm([12])\.(.*)", r"modality_trunks.audio.blocks.\1.norm_\2.\3"),
    (_A + r"blocks\.(\d+)\.(fc[12]\..*)", r"modality_trunks.audio.blocks.\1.mlp.\2"),
    (_A + r"head_norm\.(.*)", r"modality_heads.audio.0.\1"),
    (_A + r"proj\.weight", "modality_heads.audio.2.weight"),
    (_A + "log_logit_scale", "modality_postprocessors.audio.1.log_logit_scale"),
    (r"(query_tokens|(video|audio)_.*|llama_proj\..*)", r"\1"),  # branch tensors keep names
], ignore=[r"llama_model\..*", _V + r"self_attn\.qkv\.bias"])  # fmt: skip


def _file_of(key: str) -> str:
    if key.startswith("modality_"):
        return "imagebind"
    if key.split(".")[0] in {"cls_token", "pos_embed", "patch_embed", "blocks"}:
        return "eva_vit"
    if key.split(".")[0] in {"Qformer", "query_tokens", "ln_vision"}:
        return "qformer"
    return "al" if key.startswith("audio_") else "vl"


def _extras(model: Any) -> dict[str, dict[str, torch.Tensor]]:
    """Tensors the released files hold besides the weights we load (buffers the training runner
    saved, BLIP-2's T5 projection, ImageBind's other modalities): the loader must ignore them."""
    pos = {f"{p}.bert.embeddings.position_ids": torch.arange(512)[None]
           for p in ("Qformer", "video_Qformer", "audio_Qformer")}  # fmt: skip
    lc = model.llama_model.config
    hd = lc.hidden_size // lc.num_attention_heads
    inv = 1.0 / 10000 ** (torch.arange(0, hd, 2).float() / hd)
    inv_freq = {f"llama_model.model.layers.{i}.self_attn.rotary_emb.inv_freq": inv
                for i in range(lc.num_hidden_layers)}  # fmt: skip
    ib = {
        "modality_preprocessors.text.mask": torch.full((77, 77), -math.inf).triu(1),
        **{
            f"modality_postprocessors.{m}.1.log_logit_scale": torch.tensor(math.log(s))
            for m, s in (("text", 14.3), ("depth", 5.0), ("thermal", 10.0), ("imu", 5.0))
        },
    }
    q = model.arch.qformer.hidden_size
    return {
        "qformer": {k: v for k, v in pos.items() if k.startswith("Qformer")}
        | {"t5_proj.weight": torch.zeros(24, q), "t5_proj.bias": torch.zeros(24)},
        "vl": {k: v for k, v in pos.items() if "audio" not in k} | inv_freq,
        "al": pos | inv_freq | {f"audio_encoder.{k}": v for k, v in ib.items()}
        | {"audio_encoder.modality_postprocessors.audio.1.log_logit_scale": torch.tensor(3.0)},
        "imagebind": ib,
    }  # fmt: skip


def write_checkpoints(model: Any, out_dir: Path, names: dict[str, str]) -> dict[str, Path]:
    """Write `model` as the released files: eva_vit_g.pth and imagebind_huge.pth plain state
    dicts; BLIP-2, VL and AL files as {"model": ...} (VL/AL with the runner's extra entries);
    the LLM and tokenizer as an HF folder (save_pretrained)."""
    sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    files: dict[str, dict[str, torch.Tensor]] = {k: {} for k in ("eva_vit", "qformer", "imagebind",
                                                                 "vl", "al")}  # fmt: skip
    w = model.arch.vision.hidden_size
    for key, bias in sd.items():  # transformers' fused qkv bias -> EVA's q_bias / v_bias
        m = re.fullmatch(_V + r"self_attn\.qkv\.bias", key)
        if m:
            if bias[w : 2 * w].any():
                raise ValueError(f"{key}: EVA has no k bias; its slot must be 0")
            files["eva_vit"].update(
                {
                    f"blocks.{m[1]}.attn.q_bias": bias[:w].clone(),
                    f"blocks.{m[1]}.attn.v_bias": bias[2 * w :].clone(),
                }
            )
    converted, unexpected = apply_keymap(sd, TO_ORIGINAL)
    if unexpected:
        raise ValueError(f"no original name for {unexpected[:10]}")
    for key, t in converted.items():
        files[_file_of(key)][key] = t.contiguous()
    for role, extra in _extras(model).items():
        files[role].update(extra)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {role: out_dir / names[role] for role in files}
    for role, tensors in files.items():
        wrapped: dict[str, Any] = (
            tensors if role in ("eva_vit", "imagebind") else {"model": tensors}
        )
        if role in ("vl", "al"):
            wrapped.update(optimizer={}, config={"note": "eald tiny fixture"}, scaler=None, epoch=0)
        torch.save(wrapped, paths[role])
    paths["llama"] = out_dir / names["llama"]
    model.llama_model.save_pretrained(paths["llama"])
    model.tokenizer.save_pretrained(paths["llama"])
    return paths


def tiny_spec(conf: Any) -> dict[str, Any]:
    """Everything the tiny random weights follow from (code, seed, sizes, library versions)."""
    return {"code": TINY_VERSION, "seed": conf.seed, "vision_width": conf.tiny_vision_width,
            "qformer_width": conf.tiny_qformer_width, "llm_hidden": conf.tiny_llm_hidden,
            "layers": conf.tiny_layers, "imagebind": asdict(ImageBindConfig.tiny()),
            "torch": torch.__version__, "transformers": transformers.__version__}  # fmt: skip


def build_tiny_model(conf: Any, tokenizer: Any = None) -> Any:
    """Tiny VideoLlamaModel, random weights from `conf.seed` (global RNG untouched). Every
    non-LLM tensor is perturbed, so a misrouted key changes outputs; EVA's k-bias slot stays 0
    because the original layout has no k bias. `tokenizer`: default the `TinyVocab` one."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(conf.seed)
        tok = tokenizer if tokenizer is not None else build_tiny_tokenizer()
        h = conf.tiny_llm_hidden
        llm = LlamaForCausalLM(LlamaConfig(
            vocab_size=len(tok), hidden_size=h, intermediate_size=2 * h,
            num_hidden_layers=conf.tiny_layers, num_attention_heads=4, num_key_value_heads=4,
            max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=0,
            initializer_range=0.2))  # fmt: skip
        arch = build_arch(conf)
        model = VideoLlamaModel(arch, llm, ImageBindAudioEncoder(arch.imagebind))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if not name.startswith("llama_model."):
                    p.add_(torch.randn_like(p) * 0.05)
            w = arch.vision.hidden_size
            for layer in model.visual_encoder.encoder.layers:
                layer.self_attn.qkv.bias[w : 2 * w] = 0
    model.tokenizer = tok
    return model.eval()


def write_tiny_checkpoints(out_dir: str | Path, seed: int = 0, conf: Any = None) -> dict[str, Path]:
    """Build a tiny random model and write every file in the original layouts and split."""
    conf = conf if conf is not None else VideoLlamaConf(tiny=True, seed=seed)
    return write_checkpoints(build_tiny_model(conf), Path(out_dir), TINY_NAMES)


def ensure_tiny_checkpoints(conf: Any) -> dict[str, Path]:
    """The tiny files under `tiny_dir`, written once per spec (atomically: temp dir + rename)."""
    spec = tiny_spec(conf)
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    root = Path(conf.tiny_dir or "~/.cache/eald/tiny").expanduser()
    out = root / f"video_llama-{conf.seed}-{digest}"
    if not (out / "spec.json").exists():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-video_llama-"))
        try:
            write_tiny_checkpoints(tmp, conf=conf)
            (tmp / "spec.json").write_text(json.dumps(spec, sort_keys=True))
            os.replace(tmp, out)
        except OSError:
            if not (out / "spec.json").exists():  # not merely a concurrent writer that won
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return {k: out / v for k, v in TINY_NAMES.items()}


class TinyVideoLlamaBackbone(VideoLlamaBackbone):
    """`VideoLlamaBackbone` over the tiny files (written under `tiny_dir` on first use)."""

    def __init__(self, conf: Any, model: VideoLlamaModel | None = None) -> None:
        if model is None:
            model = load_video_llama(conf, ensure_tiny_checkpoints(conf))
        super().__init__(conf, model)

    def identity(self) -> dict[str, Any]:
        return identity(self.conf)


def identity(conf: Any) -> dict[str, Any]:
    """The released identity with the weights given by the tiny spec (no files read)."""
    return released_identity(conf, weights={"tiny": tiny_spec(conf)})
