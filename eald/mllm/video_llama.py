"""backbone=video_llama: Video-LLaMA (audio-visual; DAMO-NLP-SG/Video-LLaMA), as EALD-MLLM used it.

Modules keep the original attribute names (EVA ViT-g as transformers `Blip2VisionModel`, whose
`post_layernorm` plays `ln_vision`; Q-Formers as `Blip2QFormerModel`; ImageBind's audio tower with
its ×20 postprocessor), so original keys map by renames; one converter path (eald.mllm.convert)
reads every released file. Prompt, stop rule, generation, tiny fixture: `video_llama_prompt`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import transformers as hf
from torch import Tensor, nn

from eald.data.media import fingerprint_files
from eald.data.sampling import Sample
from eald.device import resolve_device
from eald.mllm import CLIP_MEAN, CLIP_STD, BackboneError, Preprocess, convert
from eald.mllm import video_llama_prompt as vp
from eald.mllm.convert import CheckpointError, KeyMap, Merge, apply_keymap, load_checkpoint
from eald.mllm.imagebind import ImageBindConfig, imagebind_keymap, load_imagebind
from eald.mllm.schemas import VideoLlamaConf  # noqa: F401  (re-export)
from eald.mllm.slow_llama_decode import answer_decoder

VERSION = "video_llama-3"  # 2: AL-file precedence, min_length as 4.28, explicit BOS; 3: slow decode
ADDED_TOKENS = ("<ImageHere>", "<AudioHere>")  # appended to the LLaMA vocabulary by the original
FRAME_SIZE = 224
MAX_FRAME_POS = 32  # video_frame_position_embedding rows: the most frames the model can take
AUDIO_POSITIONS = 8  # audio_position_embedding rows (hard-coded 8 in the original)
LN_VISION_EPS = 1e-5  # LAVIS LayerNorm default; Blip2VisionConfig's 1e-6 is EVA's block eps
QUERIES = {"image": 32, "video": 32, "audio": 8}  # query tokens of the three Q-Formers
WEIGHT_FILES = ("eva_vit", "qformer", "imagebind", "vl", "al")
GEN_KEYS = ("max_new_tokens", "do_sample", "num_beams", "top_p", "temperature",
            "repetition_penalty", "length_penalty", "min_length", "max_length")  # fmt: skip
TINY_NAMES = {"eva_vit": "eva_vit_g.pth", "qformer": "blip2_pretrained_flant5xxl.pth",
              "imagebind": "imagebind_huge.pth", "vl": "VL_LLaMA_2_7B_Finetuned.pth",
              "al": "AL_LLaMA_2_7B_Finetuned.pth", "llama": "llama-2-7b-chat-hf"}  # fmt: skip


@dataclass(frozen=True)
class Arch:
    vision: hf.Blip2VisionConfig
    qformer: hf.Blip2QFormerConfig
    video_qformer: hf.Blip2QFormerConfig
    audio_qformer: hf.Blip2QFormerConfig
    imagebind: ImageBindConfig


def build_arch(conf: Any) -> Arch:
    """Released sizes (transformers' defaults are EVA ViT-g and BERT-base), or the same
    structure at tiny widths with the real 224/14 geometry."""
    t = conf.tiny
    w, q, n = (conf.tiny_vision_width, conf.tiny_qformer_width, conf.tiny_layers) if t else (
        1408, 768, 12)  # fmt: skip
    vis = dict(hidden_size=w, intermediate_size=2 * w, num_hidden_layers=n, num_attention_heads=2,
               initializer_range=0.2) if t else {}  # fmt: skip
    bert = dict(hidden_size=q, num_attention_heads=2, intermediate_size=2 * q,
                initializer_range=0.2) if t else {}  # fmt: skip
    ib = ImageBindConfig.tiny() if t else ImageBindConfig()

    def qf(layers: int, freq: int, width: int) -> hf.Blip2QFormerConfig:
        return hf.Blip2QFormerConfig(num_hidden_layers=layers, cross_attention_frequency=freq,
                                     encoder_hidden_size=width, attn_implementation="sdpa",
                                     **bert)  # fmt: skip

    return Arch(hf.Blip2VisionConfig(attn_implementation="sdpa", **vis), qf(n, 2, w), qf(2, 1, q),
                qf(2, 1, ib.embed_dim), ib)  # fmt: skip


class VideoLlamaModel(nn.Module):
    def __init__(self, arch: Arch, llama_model: nn.Module, audio_encoder: nn.Module | None):
        super().__init__()
        q, h = arch.qformer.hidden_size, llama_model.config.hidden_size
        self.arch = arch
        self.visual_encoder = hf.Blip2VisionModel(arch.vision)
        self.visual_encoder.post_layernorm.eps = LN_VISION_EPS
        self.Qformer = hf.Blip2QFormerModel(arch.qformer)
        self.query_tokens = nn.Parameter(torch.randn(1, QUERIES["image"], q) * 0.02)
        self.video_frame_position_embedding = nn.Embedding(MAX_FRAME_POS, q)
        self.video_Qformer = hf.Blip2QFormerModel(arch.video_qformer)
        self.video_query_tokens = nn.Parameter(torch.randn(1, QUERIES["video"], q) * 0.02)
        self.llama_proj = nn.Linear(q, h)
        self.audio_encoder = audio_encoder  # None: no audio branch (equip_audio_branch=False)
        if audio_encoder is not None:
            self.audio_position_embedding = nn.Embedding(AUDIO_POSITIONS, arch.imagebind.embed_dim)
            self.audio_Qformer = hf.Blip2QFormerModel(arch.audio_qformer)
            self.audio_query_tokens = nn.Parameter(torch.randn(1, QUERIES["audio"], q) * 0.02)
            self.audio_llama_proj = nn.Linear(q, h)
        self.llama_model = llama_model
        self.tokenizer: Any = None  # set by the loaders
        self.decode: Callable | None = (
            None  # the original's answer decoding, when the folder has it
        )

    def encode_videoQformer_visual(self, image: Tensor) -> Tensor:  # noqa: N802 (original name)
        """(b, c, t, h, w) normalised frames -> (b, 32, H) LLM inputs."""
        b, c, t, hh, ww = image.shape
        if t > MAX_FRAME_POS:
            raise ValueError(f"{t} frames: the frame position embedding has {MAX_FRAME_POS}")
        x = image.transpose(1, 2).reshape(b * t, c, hh, ww)  # 'b c t h w -> (b t) c h w'
        image_embeds = self.visual_encoder(pixel_values=x).last_hidden_state  # ln_vision(EVA)
        q = self.Qformer(query_embeds=self.query_tokens.expand(b * t, -1, -1),
                         encoder_hidden_states=image_embeds).last_hidden_state  # fmt: skip
        # One position per frame, added to all 32 query outputs of that frame.
        pos = self.video_frame_position_embedding(torch.arange(t, device=q.device))
        frames = (q.reshape(b, t, *q.shape[1:]) + pos[None, :, None, :]).flatten(1, 2)
        v = self.video_Qformer(query_embeds=self.video_query_tokens.expand(b, -1, -1),
                               encoder_hidden_states=frames).last_hidden_state  # fmt: skip
        return self.llama_proj(v)

    def encode_audioQformer(self, audio: Tensor) -> Tensor:  # noqa: N802 (original name)
        """(b, S, 1, 128, 204) fbanks -> (b, 8, H). Positions are added to ImageBind's final
        output (L2-normalised, ×20), as `get_audio_feature`'s second output is used."""
        if self.audio_encoder is None:
            raise ValueError("this model has no audio branch (imagebind_path/al_path unset)")
        b, s = audio.shape[:2]
        if s > AUDIO_POSITIONS:
            raise ValueError(f"{s} audio clips: the audio position embedding has {AUDIO_POSITIONS}")
        enc = self.audio_encoder
        final = enc.postprocess(enc(audio), scale=True)  # (b, S, 1024)
        final = final + self.audio_position_embedding(torch.arange(s, device=final.device))
        a = self.audio_Qformer(query_embeds=self.audio_query_tokens.expand(b, -1, -1),
                               encoder_hidden_states=final).last_hidden_state  # fmt: skip
        return self.audio_llama_proj(a)

    def context_embeds(self, seg_ids: Sequence[Sequence[int]], media: Sequence[Tensor]) -> Tensor:
        """`get_context_emb`: seg0, media0, seg1, media1, ..., seg_last -> (1, L, H)."""
        if len(seg_ids) != len(media) + 1:
            raise ValueError(f"{len(seg_ids)} text segments for {len(media)} media embeddings")
        emb = self.llama_model.get_input_embeddings()
        parts = []
        for i, ids in enumerate(seg_ids):
            parts.append(emb(torch.tensor([list(ids)], device=emb.weight.device)))
            if i < len(media):
                parts.append(media[i].unsqueeze(0).to(parts[-1].dtype))
        return torch.cat(parts, dim=1)


# Original -> ours. P: the three Q-Formers; LAVIS BertModel names become transformers' names.
QFORMERS = ("Qformer", "video_Qformer", "audio_Qformer")
_P = f"({'|'.join(QFORMERS)})"
_QF_RULES = [
    (_P + r"\.bert\.embeddings\.LayerNorm\.(weight|bias)", r"\1.layernorm.\2"),
    (_P + r"\.bert\.encoder\.layer\.(\d+)\.(attention|crossattention)\.self\.(.*)",
     r"\1.encoder.layer.\2.\3.attention.\4"),
    (_P + r"\.bert\.encoder\.layer\.(\d+)\.((?:attention|crossattention)\.output|"
     r"intermediate_query|output_query)\.(.*)", r"\1.encoder.layer.\2.\3.\4"),
]  # fmt: skip
_BUFFERS = [_P + r"\.bert\.embeddings\.position_ids",  # LAVIS BertEmbeddings buffer
            r"llama_model\.model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq"]  # fmt: skip


def _same(*names: str) -> list[tuple[str, str]]:
    return [(n, r"\g<0>") for n in names]


def eva_keymap(layers: int) -> KeyMap:
    """eva_vit_g.pth (plain state dict). A 40th block (EVA-CLIP's last, dropped by BLIP-2:
    LAVIS builds 39 and loads non-strictly) is ignored if the file has it."""
    v = r"visual_encoder.encoder.layers.\1"
    return KeyMap(rules=[
        ("cls_token", "visual_encoder.embeddings.class_embedding"),
        ("pos_embed", "visual_encoder.embeddings.position_embedding"),
        (r"patch_embed\.proj\.(weight|bias)", r"visual_encoder.embeddings.patch_embedding.\1"),
        (r"blocks\.(\d+)\.norm([12])\.(weight|bias)", v + r".layer_norm\2.\3"),
        (r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", v + r".self_attn.qkv.\2"),
        (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", v + r".self_attn.projection.\2"),
        (r"blocks\.(\d+)\.mlp\.(fc[12]\.(?:weight|bias))", v + r".mlp.\2"),
    ], ignore=[rf"blocks\.{layers}\..*"])  # fmt: skip


# EVA's Attention adds cat(q_bias, zeros, v_bias) to qkv; transformers keeps one fused bias.
EVA_TRANSFORMS = [Merge(r"(blocks\.\d+\.attn)\.q_bias", (r"\1.v_bias",), r"\1.qkv.bias",
                        lambda q, v: torch.cat([q, torch.zeros_like(v), v]))]  # fmt: skip
QFORMER_KEYMAP = KeyMap(  # blip2_pretrained_flant5xxl.pth {"model": ...}
    rules=_QF_RULES + _same("query_tokens")
    + [(r"ln_vision\.(weight|bias)", r"visual_encoder.post_layernorm.\1")],
    # Text branch and T5 projection of BLIP-2: not used by Video-LLaMA (it sets them to None).
    ignore=[*_BUFFERS, r"Qformer\.cls\..*", r"t5_proj\..*",
            r"Qformer\.bert\.embeddings\.(word|position)_embeddings\..*",
            r"Qformer\.bert\.encoder\.layer\.\d+\.(intermediate|output)\..*"],
)  # fmt: skip
VL_KEYMAP = KeyMap(  # VL branch {"model": ...}; buffers saved by the runner are ignored
    rules=_QF_RULES + _same("video_query_tokens", r"llama_proj\.(weight|bias)",
                            r"video_frame_position_embedding\.weight"),
    ignore=_BUFFERS)  # fmt: skip
AL_KEYMAP = KeyMap(
    rules=_QF_RULES + _same("audio_query_tokens", r"audio_llama_proj\.(weight|bias)",
                            r"audio_position_embedding\.weight"),
    # audio_encoder.* is ImageBind's layout: applied over ImageBind by _al_overrides, not here
    ignore=[*_BUFFERS, r"audio_encoder\..*"],
)  # fmt: skip


def _file_specs(arch: Arch, equip_audio: bool) -> list[tuple[str, KeyMap, list, str]]:
    """(role, key map, transforms, the one Q-Former whose keys the file may hold)."""
    return [("eva_vit", eva_keymap(arch.vision.num_hidden_layers), EVA_TRANSFORMS, ""),
            ("qformer", QFORMER_KEYMAP, [], "Qformer"), ("vl", VL_KEYMAP, [], "video_Qformer"),
            *([("al", AL_KEYMAP, [], "audio_Qformer")] if equip_audio else [])]  # fmt: skip


def weight_paths(conf: Any) -> dict[str, Path]:
    if conf.tiny:
        raise ValueError("backbone.tiny=true: use backbone=video_llama_tiny (eald.mllm."
                         "video_llama_tiny), which writes and loads the tiny files")  # fmt: skip
    paths = {k: getattr(conf, f"{k}_path") for k in (*WEIGHT_FILES, "llama")}
    if paths["imagebind"] is None and paths["al"] is None:
        paths.pop("imagebind"), paths.pop("al")  # video-only Video-LLaMA
    unset = [f"backbone.{k}_path" for k, v in paths.items() if not v]
    absent = [v for v in paths.values() if v and not Path(v).expanduser().exists()]
    if unset or absent:
        raise ValueError(f"backbone=video_llama: unset {unset}; missing files {absent}")
    return {k: Path(v).expanduser() for k, v in paths.items()}


def device_dtype(conf: Any) -> tuple[torch.device, torch.dtype]:
    dev = resolve_device(conf.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[conf.dtype]
    return torch.device(dev), (torch.float32 if dev == "cpu" else dtype)


def load_video_llama(conf: Any, paths: dict[str, Path] | None = None) -> VideoLlamaModel:
    """Build Video-LLaMA from the original files. Fails on any unexpected or missing key;
    `model.load_reports` lists what each file gave and which keys were knowingly ignored."""
    from transformers import AutoTokenizer

    paths = paths or weight_paths(conf)
    device, dtype = device_dtype(conf)
    tok = AutoTokenizer.from_pretrained(paths["llama"])
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token  # as the original
    llm = hf.LlamaForCausalLM.from_pretrained(paths["llama"], dtype=dtype)
    # A neutral generation config: every generation parameter is passed explicitly, as the demo
    # did; the folder's own defaults (e.g. LLaMA-2-chat's sampling) must not leak in.
    llm.generation_config = hf.GenerationConfig(bos_token_id=tok.bos_token_id,
                                                eos_token_id=tok.eos_token_id,
                                                pad_token_id=tok.pad_token_id)  # fmt: skip
    arch = build_arch(conf)
    equip_audio = "al" in paths
    audio = load_imagebind(paths["imagebind"], arch.imagebind)["audio"] if equip_audio else None
    with torch.device("meta"):  # every tensor comes from a file: skip random init
        model = VideoLlamaModel(arch, llm, audio)
    merged: dict[str, Tensor] = {}
    reports: dict[str, Any] = {}
    for role, keymap, transforms, qformer in _file_specs(arch, equip_audio):
        raw = load_checkpoint(paths[role])
        if role == "al":
            reports["al_over_imagebind"] = _al_overrides(audio, raw, paths[role])
        sd, unexpected = apply_keymap(raw, keymap, transforms)
        # A file's Q-Former rules apply to its own Q-Former only (no cross-file smuggling).
        unexpected += [k for k in sd if k.split(".")[0] in QFORMERS and k.split(".")[0] != qformer]
        if unexpected:
            raise CheckpointError(f"{paths[role].name}: unexpected keys {sorted(unexpected)[:20]}")
        merged.update(sd)
        reports[role] = {"loaded": len(sd),
                         "ignored": sorted(k for k in raw if keymap.is_ignored(k))}  # fmt: skip
    elsewhere = [r"llama_model\..*", r"audio_encoder\..*"]  # from_pretrained / load_imagebind
    report = convert.load_into(model, merged, allow_missing=elsewhere, assign=True)
    reports["missing"] = sorted({k.split(".")[0] for k in report.missing})
    model.load_reports = reports
    model.tokenizer = tok
    model.decode = answer_decoder(paths["llama"], tok, ADDED_TOKENS)
    model.requires_grad_(False).eval().to(device=device, dtype=dtype)
    if audio is not None:  # the scale stays fp32, as the comparison with the original ran
        audio.log_logit_scale = audio.log_logit_scale.float()
    return model


def _al_overrides(audio: nn.Module, raw: dict[str, Tensor], path: Path) -> list[str]:
    """The original loads the AL branch file with strict=False *after* ImageBind, so every
    `audio_encoder.*` tensor it holds wins (the released file's log_logit_scale is 3.0, the bf16
    rounding of ln 20: a x20.09 scale, not x20). Apply the same precedence; returns our keys."""
    over = {k.removeprefix("audio_encoder."): v for k, v in raw.items()
            if k.startswith("audio_encoder.")}  # fmt: skip
    sd, unexpected = apply_keymap(over, imagebind_keymap(("audio",)))
    if unexpected:
        raise CheckpointError(
            f"{path.name}: unexpected audio_encoder keys {sorted(unexpected)[:20]}"
        )
    holder = nn.ModuleDict({"audio": audio})
    target = holder.state_dict()
    for k, v in sd.items():
        if target[k].shape != v.shape:
            raise CheckpointError(
                f"{path.name}: {k}: shape {tuple(v.shape)} vs {tuple(target[k].shape)}"
            )
    holder.load_state_dict(sd, strict=False)
    return sorted(sd)


def frames_tensor(frames: np.ndarray) -> Tensor:
    """(T, H, W, 3) uint8 RGB -> (3, T, 224, 224). Squashed without crop, as decord's
    VideoReader(height=224, width=224); bicubic with antialias, re-quantised to uint8 levels
    (decord hands over uint8), then /255 and CLIP mean/std (AlproVideoEvalProcessor)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(FRAME_SIZE, FRAME_SIZE), mode="bicubic", align_corners=False,
                      antialias=True).round().clamp(0, 255) / 255.0  # fmt: skip
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (CLIP_MEAN, CLIP_STD))
    return ((x - mean) / std).transpose(0, 1)


def _encode_grouped(items: Sequence[Tensor | None], encode: Callable[[Tensor], Tensor]) -> list:
    """Batch the samples whose inputs share a shape; None stays None."""
    out: list[Tensor | None] = [None] * len(items)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, t in enumerate(items):
        if t is not None:
            groups.setdefault(tuple(t.shape), []).append(i)
    for idx in groups.values():
        for i, e in zip(idx, encode(torch.stack([items[i] for i in idx])), strict=True):
            out[i] = e
    return out


class VideoLlamaBackbone:
    name = "video_llama"

    def __init__(self, conf: Any, model: VideoLlamaModel | None = None) -> None:
        ok = 0 < conf.max_frames <= MAX_FRAME_POS and 0 < conf.max_audio_clips <= AUDIO_POSITIONS
        if not ok:
            raise ValueError(f"backbone.max_frames must be 1..{MAX_FRAME_POS} and backbone."
                             f"max_audio_clips 1..{AUDIO_POSITIONS} (position tables)")  # fmt: skip
        vp.render(conf.template, "")  # validates the template name before loading anything
        self.conf = conf
        self.model = model if model is not None else load_video_llama(conf)
        clips = conf.max_audio_clips if self.model.audio_encoder is not None else 0
        self.preprocess = Preprocess(FRAME_SIZE, CLIP_MEAN, CLIP_STD, conf.max_frames, clips)
        self.deterministic = not conf.do_sample
        self.tokenizer = self.model.tokenizer
        self.stops = vp.stop_sequences(self.tokenizer, conf.template)
        p = next(self.model.llama_model.parameters())
        self.device, self.dtype = p.device, p.dtype

    def identity(self) -> dict[str, Any]:
        return identity(self.conf)

    def _to(self, x: Tensor) -> Tensor:
        return x.to(self.device, self.dtype)

    @torch.no_grad()
    def inputs_embeds(self, samples: Sequence[Sample], prompt: Any) -> list[Tensor]:
        """Each sample's LLM input (1, L, H); the encoders run batched over `samples`."""
        m, limit = self.model, self.preprocess.max_frames
        if any(s.frames is not None and len(s.frames) > limit for s in samples):
            raise ValueError(f"more than {limit} frames (backbone.max_frames)")
        audio = _encode_grouped([s.fbank for s in samples],
                                lambda x: m.encode_audioQformer(self._to(x)))  # fmt: skip
        video = _encode_grouped([None if s.frames is None else frames_tensor(s.frames)
                                 for s in samples],
                                lambda x: m.encode_videoQformer_visual(self._to(x)))  # fmt: skip
        out = []
        for s, a, v in zip(samples, audio, video, strict=True):
            media = [e for e in (a, v) if e is not None]  # audio first, as the demo
            segs = vp.segment_ids(self.tokenizer, vp.segments(self.conf.template, s, prompt))
            out.append(m.context_embeds(segs, media))
        return out

    @torch.no_grad()
    def describe(self, samples: Sequence[Sample], prompt: Any) -> list[str]:
        """``batch_size`` prompts per left-padded generate call; greedy answers equal the
        one-by-one answers (``Chat.answer`` runs one video at a time)."""
        out, bs = [], max(1, self.conf.batch_size)
        try:
            for i in range(0, len(samples), bs):
                embs = [e[0] for e in self.inputs_embeds(samples[i : i + bs], prompt)]
                rows = vp.generate_ids_batch(self.model.llama_model, embs, self.conf, self.stops)
                out += [vp.clean_answer(self.tokenizer, r, self.conf.template, self.model.decode)
                        for r in rows]  # fmt: skip
        except ValueError as err:  # e.g. too many frames or clips: this video fails, not the run
            raise BackboneError(f"video_llama: {err}") from err
        return out


def identity(conf: Any, weights: dict[str, Any] | None = None) -> dict[str, Any]:
    """Cache identity from the config and the weight files' fingerprint (no model load)."""
    c = conf
    if weights is None:
        paths = weight_paths(c)
        llama = sorted(p for p in paths["llama"].iterdir()
                       if p.suffix in {".safetensors", ".bin", ".json", ".model"})  # fmt: skip
        files = [paths[k] for k in WEIGHT_FILES if k in paths] + llama
        fingerprint = fingerprint_files(files)
        weights = {"fingerprint": fingerprint, "files": [p.name for p in files]}
    gen = {k: getattr(c, k) for k in GEN_KEYS}
    return {"kind": "video_llama", "version": VERSION, "weights": weights, "template": c.template,
            "preprocess": {"frame_size": FRAME_SIZE, "resize": "squash-bicubic-aa-uint8",
                           "max_frames": c.max_frames, "max_audio_clips": c.max_audio_clips},
            "dtype": c.dtype, "generation": gen, "deterministic": not c.do_sample}  # fmt: skip
