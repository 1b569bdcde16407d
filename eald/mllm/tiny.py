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
import string
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from eald.data.sampling import Sample
from eald.mllm import CLIP_MEAN, CLIP_STD, Preprocess
from eald.mllm.prompt import prompt_parts

VERSION = "tiny-1"
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

    def generate_ids(self, embs: Sequence[torch.Tensor]) -> list[list[int]]:
        """New ids per row, cut after the row's EOS (a finished row is padded meanwhile)."""
        c, n = self.conf, max(len(e) for e in embs)
        x = embs[0].new_zeros(len(embs), n, embs[0].shape[-1])
        mask = torch.zeros(len(embs), n, dtype=torch.long)
        for k, e in enumerate(embs):  # left padding: every row's last prompt token is aligned
            x[k, n - len(e) :], mask[k, n - len(e) :] = e, 1
        kwargs: dict[str, Any] = {"do_sample": c.do_sample}
        if c.do_sample:
            kwargs.update(temperature=c.temperature, top_p=c.top_p)
        ids = self.model.lm.generate(
            inputs_embeds=x,
            attention_mask=mask,
            max_new_tokens=c.max_new_tokens,
            pad_token_id=CharTokenizer.PAD,
            eos_token_id=CharTokenizer.EOS,
            **kwargs,
        )
        rows = []
        for row in ids.tolist():
            cut = row.index(CharTokenizer.EOS) + 1 if CharTokenizer.EOS in row else len(row)
            rows.append(row[:cut])
        return rows


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
