"""backbone=tiny: a real, small multimodal LM with RANDOM weights. Its text is noise.

Architecture (a miniature of Video-LLaMA's layout): a conv frame encoder with a learned frame
position embedding, a conv encoder over each audio clip's fbank, linear projections into the
embedding space of a 2-layer `LlamaForCausalLM` (transformers, tiny config), and a character
tokenizer. Weights come from a fixed seed, so the model, its fingerprint and its greedy outputs
are identical on every CPU. It exists so tests and `make demo` exercise the whole pipeline without
weights, a GPU or a network.
"""

from __future__ import annotations

import hashlib
import inspect
import string
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from eald.data.sampling import Sample
from eald.mllm import CLIP_MEAN, CLIP_STD, Preprocess
from eald.mllm.prompt import prompt_parts

# transformers 5 renamed `past_key_values` to `cache` (the old name still works, with a warning)
_PARAMS = inspect.signature(LlamaForCausalLM.forward).parameters
_CACHE_KW = "cache" if "cache" in _PARAMS else "past_key_values"
VERSION = "tiny-2"  # 2: its own decoding loop (prefill alone, batched decode)
MAX_FRAMES = 64


class CharTokenizer:
    """Printable ASCII plus newline; ids 0-3 are pad, bos, eos, unk."""

    PAD, BOS, EOS, UNK = 0, 1, 2, 3

    def __init__(self) -> None:
        chars = "\n" + "".join(c for c in string.printable if 32 <= ord(c) < 127)
        self.itos = ["<pad>", "<s>", "</s>", "<unk>", *chars]
        self.stoi = {c: i for i, c in enumerate(self.itos) if i > 3}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(c, self.UNK) for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.itos[i] for i in ids if i > 3)


class TinyMultimodalLM(nn.Module):
    def __init__(self, vocab: int, hidden: int, layers: int, heads: int) -> None:
        super().__init__()
        self.frame_encoder = nn.Sequential(  # (3, 32, 32) -> 64
            nn.Conv2d(3, 32, 4, 4), nn.GELU(), nn.Conv2d(32, 64, 4, 4), nn.GELU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.frame_position = nn.Embedding(MAX_FRAMES, 64)
        self.audio_encoder = nn.Sequential(  # (1, 128, 204) fbank -> 64
            nn.Conv2d(1, 16, (8, 12), (8, 12)), nn.GELU(), nn.Conv2d(16, 64, 4, 4), nn.GELU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.frame_proj = nn.Linear(64, hidden)
        self.audio_proj = nn.Linear(64, hidden)
        cfg = LlamaConfig(
            vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
            max_position_embeddings=4096, pad_token_id=0, bos_token_id=1, eos_token_id=2,
            initializer_range=0.3,  # wide random weights: outputs then depend on the inputs
        )  # fmt: skip
        self.lm = LlamaForCausalLM(cfg)

    def embed_frames(self, frames: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(frames.shape[0]) % MAX_FRAMES
        return self.frame_proj(self.frame_encoder(frames) + self.frame_position(pos))

    def embed_audio(self, fbank: torch.Tensor) -> torch.Tensor:
        return self.audio_proj(self.audio_encoder(fbank))

    def embed_text(self, ids: list[int]) -> torch.Tensor:
        return self.lm.get_input_embeddings()(torch.tensor(ids, dtype=torch.long))


class TinyBackbone:
    name = "tiny"

    def __init__(self, conf: Any) -> None:
        self.conf = conf
        self.tokenizer = CharTokenizer()
        # Random weights from a fixed seed; a private generator keeps global RNG state untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(conf.seed)
            self.model = TinyMultimodalLM(
                len(self.tokenizer), conf.hidden_size, conf.layers, conf.heads
            )
        self.model.eval()
        self.preprocess = Preprocess(conf.frame_size, CLIP_MEAN, CLIP_STD, MAX_FRAMES, None)
        self.deterministic = not conf.do_sample
        self.weights_fingerprint = weights_fingerprint(self.model)

    def identity(self) -> dict[str, Any]:
        return identity(self.conf)

    def _frames(self, frames: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
        size = self.preprocess.frame_size
        x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        mean = torch.tensor(self.preprocess.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.preprocess.std).view(1, 3, 1, 1)
        return (x - mean) / std

    def prepare(self, sample: Sample) -> Sample:
        """Frame preprocessing (resize, normalise), run by the pipeline in stage 1's threads."""
        if sample.frames is not None:
            sample.prepared["tiny_frames"] = self._frames(sample.frames)
        return sample

    def embed(self, sample: Sample, prompt: Any) -> torch.Tensor:
        """The input sequence: <s> then each prompt part as text tokens or modality tokens."""
        m, tok = self.model, self.tokenizer
        pieces = [m.embed_text([tok.BOS])]
        for kind, payload in prompt_parts(sample, prompt):
            if kind == "text":
                pieces.append(m.embed_text(tok.encode(payload + "\n")))
            elif kind == "frames":
                x = sample.prepared.get("tiny_frames")
                pieces.append(m.embed_frames(x if x is not None else self._frames(payload)))
            elif kind == "audio":
                pieces.append(m.embed_audio(sample.fbank))
        return torch.cat(pieces)

    @torch.no_grad()
    def describe(self, samples: Sequence[Sample], prompt: Any) -> list[str]:
        """``batch_size`` samples per forward pass, left-padded: greedy answers equal the
        one-by-one answers token for token (tests/test_backbones.py)."""
        out: list[str] = []
        bs = max(1, self.conf.batch_size)
        for i in range(0, len(samples), bs):
            embs = [self.embed(s, prompt) for s in samples[i : i + bs]]
            out += [self.tokenizer.decode(row) for row in self.generate_ids(embs)]
        return out

    @torch.no_grad()
    def generate_ids(self, embs: Sequence[torch.Tensor]) -> list[list[int]]:
        """New ids per row, up to and including its EOS.

        Each prompt is prefilled alone (no padding, so attention takes the fused causal path;
        a padded prefill needs a mask and costs ~2.5x here), then the rows decode together:
        their caches left-padded, an attention mask, per-row positions, and a finished row
        padded until the batch ends. Row k is the same whether it decodes alone or in a batch.
        """
        c, lm, n = self.conf, self.model.lm, max(e.shape[0] for e in embs)
        keys: list[list[torch.Tensor]] = []
        values: list[list[torch.Tensor]] = []
        logits = []
        for e in embs:
            out = lm(inputs_embeds=e[None], use_cache=True, logits_to_keep=1)
            logits.append(out.logits[0, -1])
            pad = (0, 0, n - e.shape[0], 0)  # left padding on the sequence axis
            for i, layer in enumerate(getattr(out, _CACHE_KW).layers):
                if i == len(keys):
                    keys.append([]), values.append([])
                keys[i].append(nn.functional.pad(layer.keys, pad))
                values[i].append(nn.functional.pad(layer.values, pad))
        cache = DynamicCache()
        for i in range(len(keys)):
            cache.update(torch.cat(keys[i]), torch.cat(values[i]), i)
        lens = torch.tensor([e.shape[0] for e in embs])
        mask = (torch.arange(n)[None, :] >= (n - lens)[:, None]).long()
        nxt = torch.stack(logits)
        gen = torch.Generator().manual_seed(c.seed) if c.do_sample else None
        rows: list[list[int]] = [[] for _ in embs]
        done = torch.zeros(len(embs), dtype=torch.bool)
        for step in range(c.max_new_tokens):
            tok = self._pick(nxt, gen).masked_fill(done, CharTokenizer.PAD)
            for k in torch.nonzero(~done).flatten().tolist():
                rows[k].append(int(tok[k]))
            done |= tok == CharTokenizer.EOS
            if bool(done.all()) or step == c.max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones(len(embs), 1, dtype=torch.long)], dim=1)
            out = lm(input_ids=tok[:, None], attention_mask=mask, position_ids=(lens + step)[:, None],
                     use_cache=True, **{_CACHE_KW: cache})  # fmt: skip
            nxt = out.logits[:, -1]
        return rows

    def _pick(self, logits: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        """Greedy, or sampling with temperature and top-p (nucleus) from a seeded generator."""
        c = self.conf
        if not c.do_sample:
            return logits.argmax(dim=-1)
        probs = torch.softmax(logits.float() / c.temperature, dim=-1)
        sorted_p, order = probs.sort(dim=-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p > c.top_p  # keep the smallest set reaching top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        pick = torch.multinomial(sorted_p / sorted_p.sum(-1, keepdim=True), 1, generator=gen)
        return order.gather(-1, pick).squeeze(-1)


def identity(conf: Any) -> dict[str, Any]:
    """Cache identity without building the model: the weights follow from the seed, the
    architecture and the library versions that initialise them."""
    c = conf
    return {
        "kind": "tiny",
        "version": VERSION,
        "weights": {"seed": c.seed, "torch": torch.__version__, "transformers": _tf_version()},
        "arch": {"frame_size": c.frame_size, "hidden": c.hidden_size, "layers": c.layers,
                 "heads": c.heads},
        "generation": {"max_new_tokens": c.max_new_tokens, "do_sample": c.do_sample,
                       "temperature": c.temperature, "top_p": c.top_p},
        "deterministic": not c.do_sample,
    }  # fmt: skip


def _tf_version() -> str:
    import transformers

    return transformers.__version__


def weights_fingerprint(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]
