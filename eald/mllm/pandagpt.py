"""backbone=pandagpt: PandaGPT (yxuansu/PandaGPT @ 9b77e04, code/model/openllama.py and
code/web_demo.py) on current transformers/peft; the MM'24 EALD-MLLM paper's second backbone.

Kept: ImageBind-huge vision + audio embeddings, L2-normalised then averaged over views/clips, audio
WITHOUT the x20 logit scale (PandaGPT's ImageBind copy skips it); ONE token = sum over present
modalities of llama_proj(embedding) (bias once per modality); <s> "### Human: <Img>" token
"</Img> {text}\n### Assistant:", each piece tokenised alone; Vicuna v0 (32001 embedding rows for
32000 tokens, kept) + LoRA r 32/alpha 32 on q,k,v,o + the delta pytorch_model.pt (with or without
peft 0.3's ".default."); stop once "##" (LLaMA id 2277) is generated, then decode(ids[:-2]).

Differences: (1) video: the original decodes 5 clips of 2 s (ConstantClipsPerVideoSampler) and
takes each clip's first and last frame; here clip i is the pair of OUR sampled frames (uniform
over the window) nearest to its start s_i and end min(s_i + 2, D) (frames > 2 s apart: a static
clip); then ShortSideScale(224, bilinear), CLIP mean/std, 3 crops: 15 views. (2) audio: of the
project's fbank clips, the `audio_clips` (3, as the original) nearest to a 3-clip sampler's starts
(exact when sampling.audio_clips == 3). (3) no video/audio (the demo refuses): <s> "### Human:
{text}\n### Assistant:". (4) text = NFBL text (if on) + "\n" + question; no frame/audio intros.
(5) greedy by default (do_sample=true: the demo's top_p 0.01, temperature 1.0). (6) transformers
5 LlamaTokenizer (SentencePiece's ids for our pieces). (7) batches left-padded (1 = original);
over-long prompts raise BackboneError; ids >= len(tokenizer) are not decoded.
"""

from __future__ import annotations

import importlib.metadata as md
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eald.data.fbank import clip_starts
from eald.data.media import fingerprint_files
from eald.data.sampling import Sample
from eald.device import resolve_device
from eald.mllm import CLIP_MEAN, CLIP_STD, BackboneError, Preprocess
from eald.mllm.convert import KeyMap, LoadReport, load_checkpoint, load_converted
from eald.mllm.imagebind import ImageBindConfig, load_imagebind
from eald.mllm.prompt import left_pad
from eald.mllm.schemas import PandaGPTConf  # noqa: F401  (re-export)

VERSION = "pandagpt-1"
PROMPT_START = "### Human: <Img>"  # openllama.py PROMPT_START
IMG_END, TURN_END = "</Img> ", "\n### Assistant:"
TEXT_ONLY_START = "### Human: "  # ours: the original has no text-only path
STOP_PIECE = "##"
CLIP_S = 2.0  # ImageBind clip duration (video and audio)
FRAME_SIZE = 224
CROP_INDICES = {1: (1,), 3: (0, 1, 2)}  # SpatialCrop: num_crops 1 -> centre only
LIBS = ("torch", "transformers", "peft", "tokenizers")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]

DELTA_KEYMAP = KeyMap(rules=[
    (r"llama_proj\.(weight|bias)", r"llama_proj.\1"),
    # peft 0.3.0 (pinned by the original) names adapters ".default."; peft 0.2 did not.
    (r"(llama_model\.base_model\.model\.model\.layers\.\d+\.self_attn\.[qkvo]_proj\.lora_[AB])"
     r"(?:\.default)?\.weight", r"\1.default.weight"),
])  # fmt: skip
# Everything of the base model except LoRA comes from the Vicuna folder, not from the delta.
DELTA_ALLOW_MISSING = [r"llama_model\.base_model\.model\.(?!.*\.lora_[AB]\.).*"]


def prompt_text(sample: Sample, prompt: Any) -> str:  # NFBL text (when on), then the question
    return "\n".join([*([sample.nfbl] if sample.nfbl is not None else []), prompt.question])


def prompt_pieces(text: str, with_media: bool) -> list[str]:
    """Text pieces of the turn; BOS precedes them and the media token goes between two pieces."""
    if with_media:
        return [PROMPT_START, IMG_END + text + TURN_END]
    return [TEXT_ONLY_START + text + TURN_END]


def finish_ids(ids: Sequence[int], stop_id: int, eos_id: int) -> list[int]:
    """A row as the original returns it: up to its first stop/EOS token, minus the last two."""
    ends = [i for i, t in enumerate(ids) if t in (stop_id, eos_id)]
    return list(ids[: ends[0] + 1] if ends else ids)[:-2]


def clip_frame_pairs(sample: Sample, clips: int) -> list[tuple[int, int]]:
    """Indices into sample.frames of each clip's (first, last) frame; see module docstring."""
    dur = sample.window.duration_s
    times = np.asarray(sample.frame_times) - sample.window.start_s
    near = lambda t: int(np.argmin(np.abs(times - t)))  # noqa: E731  (ties: earliest frame)
    return [(near(s), near(min(s + CLIP_S, dur))) for s in clip_starts(dur, CLIP_S, clips)]


def short_side_scale(x: Tensor, size: int = FRAME_SIZE) -> Tensor:
    """pytorchvideo ShortSideScale: bilinear, align_corners False, no antialias; (N, C, H, W)."""
    h, w = x.shape[-2:]
    new = (int(math.floor(h / w * size)), size) if w < h else (size, int(math.floor(w / h * size)))
    return F.interpolate(x, size=new, mode="bilinear", align_corners=False)


def uniform_crop(x: Tensor, size: int, idx: int) -> Tensor:
    """ImageBind data.uniform_crop: 0/1/2 = left/centre/right (top/centre/bottom if portrait)."""
    h, w = x.shape[-2:]
    y, xo = math.ceil((h - size) / 2), math.ceil((w - size) / 2)
    y = {0: 0, 1: y, 2: h - size}[idx] if h > w else y
    xo = xo if h > w else {0: 0, 1: xo, 2: w - size}[idx]
    return x[..., y : y + size, xo : xo + size]


def video_views(frames: np.ndarray, pairs: Sequence[tuple[int, int]], crops: int = 3) -> Tensor:
    """(clips*crops, 3, 2, 224, 224) views ordered clip-major, as SpatialCrop returns them."""
    used = sorted({i for p in pairs for i in p})
    x = torch.from_numpy(np.ascontiguousarray(frames[used])).permute(0, 3, 1, 2).float() / 255.0
    x = short_side_scale(x)  # per frame: same per-plane result as scaling the (C, T, H, W) clip
    x = (x - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    pos = {f: k for k, f in enumerate(used)}
    clips = [torch.stack([x[pos[a]], x[pos[b]]], dim=1) for a, b in pairs]  # (3, 2, H, W)
    return torch.stack([uniform_crop(c, FRAME_SIZE, i) for c in clips for i in CROP_INDICES[crops]])


def audio_clip_indices(sample: Sample, wanted: int | None) -> list[int]:
    k, dur = len(sample.fbank), sample.window.duration_s
    if wanted is None or k <= wanted:
        return list(range(k))
    have = [a - sample.window.start_s for a, _ in sample.clip_spans]
    return [int(np.argmin([abs(h - t) for h in have])) for t in clip_starts(dur, CLIP_S, wanted)]


class PandaGPT(nn.Module):
    """llama_model (peft Vicuna), llama_proj: the original names, so the delta's keys apply."""

    def __init__(self, encoders: dict[str, nn.Module], llama_model: nn.Module, embed_dim: int):
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.llama_model = llama_model
        self.llama_proj = nn.Linear(embed_dim, llama_model.config.hidden_size)

    def encode_video(self, views: Tensor) -> Tensor:  # (V, 3, 2, 224, 224) -> (E,)
        enc = self.encoders["vision"]
        return enc.postprocess(enc(views)).mean(0)

    def encode_audio(self, fbank: Tensor) -> Tensor:  # (S, 1, 128, 204) -> (E,); no x20
        enc = self.encoders["audio"]
        return enc.postprocess(enc(fbank), scale=False).mean(0)

    def media_token(self, feats: Sequence[Tensor]) -> Tensor | None:
        """Sum of the PROJECTED embeddings (bias once per modality), or None without media."""
        return torch.stack([self.llama_proj(f) for f in feats]).sum(0) if feats else None

    def embed_prompt(self, tokenizer: Any, text: str, media: Tensor | None) -> Tensor:  # (L, H)
        emb = self.llama_model.get_input_embeddings()
        ids = lambda s: tokenizer(s, add_special_tokens=False).input_ids  # noqa: E731
        tensor = lambda i: torch.tensor(i, dtype=torch.long, device=emb.weight.device)  # noqa: E731
        pieces = [emb(tensor([tokenizer.bos_token_id]))]
        for i, piece in enumerate(prompt_pieces(text, media is not None)):
            if i == 1:
                pieces.append(media.view(1, -1).to(emb.weight.dtype))
            pieces.append(emb(tensor(ids(piece))))
        return torch.cat(pieces)


def lora_config(r: int, alpha: int, dropout: float) -> Any:
    from peft import LoraConfig, TaskType

    return LoraConfig(task_type=TaskType.CAUSAL_LM, inference_mode=False, r=r, lora_alpha=alpha,
                      lora_dropout=dropout, target_modules=LORA_TARGETS)  # fmt: skip


def load_delta(model: PandaGPT, path: str | Path) -> LoadReport:
    holder = nn.Module()  # only the parts the delta fills, so the towers need no allow_missing
    holder.llama_model, holder.llama_proj = model.llama_model, model.llama_proj
    return load_converted(holder, load_checkpoint(path), DELTA_KEYMAP,
                          allow_missing=DELTA_ALLOW_MISSING)  # fmt: skip


def load_pandagpt(imagebind_path: str | Path, vicuna_path: str | Path, delta_path: str | Path, *,
                  ib: ImageBindConfig | None = None, lora: tuple[int, int, float] = (32, 32, 0.1),
                  device: str = "cpu", dtype: torch.dtype = torch.float32,
                  ) -> tuple[PandaGPT, Any, LoadReport]:  # fmt: skip
    """As the original: ImageBind, Vicuna, get_peft_model, llama_proj, then the delta."""
    from peft import get_peft_model
    from transformers import AutoTokenizer, LlamaForCausalLM

    ib = ib or ImageBindConfig()
    encoders = load_imagebind(imagebind_path, ib, modalities=("audio", "vision"))
    llama = LlamaForCausalLM.from_pretrained(vicuna_path, dtype=dtype)
    model = PandaGPT(encoders, get_peft_model(llama, lora_config(*lora)), ib.embed_dim)
    report = load_delta(model, delta_path)
    model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return model, AutoTokenizer.from_pretrained(vicuna_path), report


def resolve(conf: Any) -> tuple[str, torch.dtype]:
    """auto device: cuda when available; auto dtype: float16 on cuda (the demo's .half())."""
    device = resolve_device(conf.device)
    short = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # VideoLlamaConf's names
    name = conf.dtype if conf.dtype != "auto" else ("float16" if "cuda" in device else "float32")
    name = short.get(name, name)
    if name not in ("float32", "float16", "bfloat16"):
        raise ValueError(f"backbone.dtype={conf.dtype!r}: auto | float32 | float16 | bfloat16")
    return device, getattr(torch, name)


class PandaGPTBackbone:
    name = "pandagpt"

    def __init__(self, conf: Any) -> None:
        self.conf = c = conf
        if c.crops not in CROP_INDICES:
            raise ValueError(f"backbone.crops={c.crops}: 1 or 3 (ImageBind's SpatialCrop)")
        self.device, self.dtype = resolve(c)
        self.preprocess = Preprocess(FRAME_SIZE, CLIP_MEAN, CLIP_STD, None, None)
        self.deterministic = not c.do_sample
        kw = {"lora": (c.lora_r, c.lora_alpha, c.lora_dropout), "device": self.device,
              "dtype": self.dtype}  # fmt: skip
        self.model, self.tokenizer, self.report = self._load(c, kw)
        self.stop_id = self.tokenizer.convert_tokens_to_ids(STOP_PIECE)
        if self.stop_id in (None, self.tokenizer.unk_token_id):
            raise ValueError(f"tokenizer has no {STOP_PIECE!r} token for the stop rule")

    def _load(self, c: Any, kw: dict[str, Any]) -> tuple[PandaGPT, Any, LoadReport]:
        if c.tiny:
            raise ValueError("backbone.tiny=true: use backbone=pandagpt_tiny "
                             "(eald.mllm.pandagpt_tiny)")  # fmt: skip
        return load_pandagpt(*_weight_paths(c), **kw)

    def identity(self) -> dict[str, Any]:
        return identity(self.conf)

    def embed(self, sample: Sample, prompt: Any) -> Tensor:
        m, c, dev = self.model, self.conf, self.device
        feats = []
        if sample.fbank is not None:  # original order: image, audio, video
            fb = sample.fbank[audio_clip_indices(sample, c.audio_clips)]
            feats.append(m.encode_audio(fb.to(dev, self.dtype)))
        if sample.frames is not None:
            views = video_views(sample.frames, clip_frame_pairs(sample, c.clips_per_video), c.crops)
            feats.append(m.encode_video(views.to(dev, self.dtype)))
        return m.embed_prompt(self.tokenizer, prompt_text(sample, prompt), m.media_token(feats))

    @torch.no_grad()
    def generate_ids(self, embeds: Sequence[Tensor]) -> list[list[int]]:
        """Raw generated ids per row (left-padded batch), before the original's post-processing."""
        c, tok, n = self.conf, self.tokenizer, max(len(e) for e in embeds)
        limit = self.model.llama_model.config.max_position_embeddings
        if n + c.max_new_tokens > limit:
            raise BackboneError(f"prompt of {n} tokens + {c.max_new_tokens} new > {limit} context")
        x, mask = left_pad(embeds)
        kw = {"top_p": c.top_p, "temperature": c.temperature} if c.do_sample else {}
        with torch.random.fork_rng(devices=[self.device] if "cuda" in self.device else []):
            torch.manual_seed(c.seed)  # sampling reproducible per call, global RNG untouched
            out = self.model.llama_model.generate(
                inputs_embeds=x, attention_mask=mask, max_new_tokens=c.max_new_tokens,
                do_sample=c.do_sample, use_cache=True, pad_token_id=tok.eos_token_id,
                # StoppingCriteriaSub(stops=[2277]) = stop once "##" is generated: an extra EOS.
                eos_token_id=[tok.eos_token_id, self.stop_id], **kw)  # fmt: skip
        return out.tolist()

    def decode(self, ids: Sequence[int]) -> str:
        kept = finish_ids(ids, self.stop_id, self.tokenizer.eos_token_id)
        return self.tokenizer.decode([i for i in kept if i < len(self.tokenizer)],
                                     skip_special_tokens=True)  # fmt: skip

    @torch.no_grad()
    def describe(self, samples: Sequence[Sample], prompt: Any) -> list[str]:
        out: list[str] = []
        bs = max(1, self.conf.batch_size)
        for i in range(0, len(samples), bs):
            embeds = [self.embed(s, prompt) for s in samples[i : i + bs]]
            out += [self.decode(row) for row in self.generate_ids(embeds)]
        return out


def _weight_paths(c: Any) -> list[Path]:
    paths = {k: getattr(c, k) for k in ("imagebind_path", "vicuna_path", "delta_path")}
    for key, value in paths.items():
        if not value or not Path(value).exists():
            raise ValueError(f"backbone.{key}={value!r}: no such path (random: pandagpt_tiny)")
    return [Path(v) for v in paths.values()]


def _tiny_sizes(c: Any) -> dict[str, int]:
    return {"hidden": c.tiny_hidden_size, "layers": c.tiny_layers, "heads": c.tiny_heads,
            "lora_r": c.lora_r, "lora_alpha": c.lora_alpha}  # fmt: skip


def identity(c: Any) -> dict[str, Any]:
    """Cache identity from the config alone (no model load, no transformers import)."""
    if c.tiny:  # the weights follow from seed, sizes and the libraries that initialise them
        weights: dict[str, Any] = {**_tiny_sizes(c), "seed": c.seed}
        weights.update((lib, md.version(lib)) for lib in LIBS)
    else:
        ib, vicuna, delta = _weight_paths(c)
        files = sorted(p for p in vicuna.iterdir() if p.is_file() and not p.name.startswith("."))
        weights = {"imagebind": fingerprint_files([ib]), "vicuna": fingerprint_files(files),
                   "delta": fingerprint_files([delta])}  # fmt: skip
    device, dtype = resolve(c)
    gen = ("max_new_tokens", "do_sample", "top_p", "temperature", "clips_per_video", "crops",
           "audio_clips", "lora_r", "lora_alpha") + (("seed",) if c.do_sample else ())  # fmt: skip
    return {"kind": "pandagpt", "version": VERSION, "weights": weights,
            "numerics": [device.split(":")[0], str(dtype).removeprefix("torch.")],
            "params": {k: getattr(c, k) for k in gen},
            "deterministic": not c.do_sample}  # fmt: skip
