"""Answer decoding as the original demos did it: transformers 4.28's *slow* `LlamaTokenizer`
(`use_fast=False`) over the folder's SentencePiece `tokenizer.model`.

Why not the folder's fast tokenizer: the two agree on clean UTF-8 text but not elsewhere.
SentencePiece decodes the valid bytes of a byte-fallback run and replaces only the bad ones,
where the fast decoder replaces the whole run (an answer cut mid-character, or a model emitting
stray bytes); and 4.28 applied `clean_up_tokenization_spaces` (" ." -> ".", " n't" -> "n't", ...)
unless the folder's config turns it off. `eald-verify-port` found the first on tiny weights.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# PreTrainedTokenizerBase.clean_up_tokenization in transformers 4.28, in its order.
CLEANUPS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
            (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))  # fmt: skip
DEFAULT_SPECIALS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def _content(tok: Any) -> str | None:
    return tok.get("content") if isinstance(tok, dict) else tok


class SlowLlamaDecoder:
    """`LlamaTokenizer.decode(ids, skip_special_tokens=False)` of transformers 4.28. `added`:
    tokens the original appended after the SentencePiece vocabulary (Video-LLaMA adds
    <ImageHere> and <AudioHere>); they decode as separate pieces, joined with spaces."""

    def __init__(self, folder: str | Path, added: Sequence[str] = ()) -> None:
        import sentencepiece as spm

        folder = Path(folder)
        self.sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
        config: dict[str, Any] = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):  # config wins
            if (folder / name).is_file():
                config.update(json.loads((folder / name).read_text()))
        self.specials = {_content(config.get(k)) or v for k, v in DEFAULT_SPECIALS.items()}
        self.clean_up = bool(config.get("clean_up_tokenization_spaces", True))  # 4.28 default
        n = self.sp.get_piece_size()
        self.added = {n + i: t for i, t in enumerate(added)}

    def _pieces_to_text(self, pieces: list[str]) -> str:
        """`LlamaTokenizer.convert_tokens_to_string`: specials kept verbatim, after a space."""
        out, run, prev_special = "", [], False
        for i, piece in enumerate(pieces):
            if piece in self.specials:
                if not prev_special and i != 0:
                    out += " "
                out += self.sp.decode(run) + piece
                run, prev_special = [], True
            else:
                run.append(piece)
                prev_special = False
        return out + self.sp.decode(run)

    def __call__(self, ids: Sequence[int]) -> str:
        texts, run = [], []
        for i in ids:
            if i in self.added:  # `_decode`: added tokens split the text
                if run:
                    texts.append(self._pieces_to_text(run))
                    run = []
                texts.append(self.added[i])
            else:
                run.append(self.sp.id_to_piece(int(i)))
        if run:
            texts.append(self._pieces_to_text(run))
        text = " ".join(texts)
        if self.clean_up:
            for a, b in CLEANUPS:
                text = text.replace(a, b)
        return text


def answer_decoder(folder: str | Path, tokenizer: Any, added: Sequence[str] = ()) -> Callable:
    """The original's decoding when the folder ships `tokenizer.model` (every LLaMA release
    does); a folder with only tokenizer.json (the tiny fixture) has no slow tokenizer to match,
    and decodes with the tokenizer it has."""
    if (Path(folder) / "tokenizer.model").is_file():
        return SlowLlamaDecoder(folder, added)
    return lambda ids: tokenizer.decode(list(ids), skip_special_tokens=False)
