"""Video-LLaMA's text side, as in the released AV demo (`conversation_video.py`,
`demo_audiovideo.py`): conversation text, stop rule, generation, answer clean-up. The tiny fixture
of `backbone=video_llama_tiny` is `video_llama_tiny`.

One user turn is built as the demo builds it: the modality message (audio placeholder first, then
the video placeholder), then what `Chat.ask` appends with a single space: our NFBL text and the
question. The demo sets `system = ""` for videos in BOTH templates, so the LLaMA-2 turn carries
an empty `<<SYS>>` block. The rendered prompt is split on `<ImageHere>`; each text segment is
tokenised on its own (so each gets SentencePiece's leading "▁") and only the first gets BOS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from eald.data.sampling import Sample
from eald.mllm.prompt import left_pad

PLACEHOLDER = "<ImageHere>"
TEMPLATES = ("llama2", "vicuna")

# `Chat.upload_video` with audio, character for character: the source's backslash line
# continuations keep the next lines' indentation (17 and 18 spaces) inside the string.
AV_MESSAGE = (
    "Close your eyes, open your ears and you imagine only based on the sound that: <ImageHere>."
    + " " * 17
    + "Close your ears, open your eyes and you see that <Video><ImageHere></Video>."
    + " " * 18
    + "Now answer my question based on what you have just seen and heard."
)
# Not in the original (its demo has no audio-only path): the AV message's audio sentence and its
# closing sentence with "seen and" dropped, so an audio-only prompt reads like the AV one.
AUDIO_MESSAGE = (
    "Close your eyes, open your ears and you imagine only based on the sound that: <ImageHere>."
    + " " * 17
    + "Now answer my question based on what you have just heard."
)
# `upload_video_without_audio`: placeholder, one space, then `load_video`'s message.
VIDEO_MESSAGE = "<Video><ImageHere></Video> "


def frames_message(frame_times: Sequence[float]) -> str:
    """`load_video(..., return_msg=True)`'s sentence: times as str(round(index / fps, 1))."""
    secs = ", ".join(str(round(t, 1)) for t in frame_times)
    return f"The video contains {len(frame_times)} frames sampled at {secs} seconds. "


def user_message(sample: Sample, prompt: Any) -> str:
    """The one user turn. Absent modalities leave no placeholder and no sentence."""
    has_video, has_audio = sample.frames is not None, sample.fbank is not None
    if has_video and has_audio:
        head = AV_MESSAGE
    elif has_video:
        head = VIDEO_MESSAGE + (frames_message(sample.frame_times) if sample.frame_times else "")
    elif has_audio:
        head = AUDIO_MESSAGE
    else:
        head = None
    tail = [prompt.question]
    if sample.nfbl is not None:
        tail.insert(0, prompt.nfbl_intro.format(nfbl=sample.nfbl))
    if any(PLACEHOLDER in t for t in tail):
        raise ValueError(f"prompt text must not contain {PLACEHOLDER}")
    # `Chat.ask` joins the question onto the media turn with one space.
    return " ".join([head, *tail] if head is not None else tail)


def render(template: str, message: str, system: str = "") -> str:
    """`Conversation.get_prompt()` after `[user message, (assistant, None)]`."""
    if template == "vicuna":  # default_conversation: SINGLE style, sep "###"
        return f"{system}###Human: {message}###Assistant:"
    if template == "llama2":  # conv_llava_llama_2: "<s>[INST] ... [/INST]", then lstrip("<s>")
        return f"[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{message} [/INST]"
    raise ValueError(f"template={template!r}: expected one of {TEMPLATES}")


def segments(template: str, sample: Sample, prompt: Any) -> list[str]:
    """Text around the placeholders; len == number of modality embeddings + 1."""
    return render(template, user_message(sample, prompt)).split(PLACEHOLDER)


def segment_ids(tokenizer: Any, segs: Sequence[str]) -> list[list[int]]:
    """`get_context_emb`: every segment tokenised separately, BOS only on the first. The
    original's slow LlamaTokenizer always adds that BOS; a tokenizer folder whose config lacks
    `add_bos_token` adds none under transformers 5, so it is added here explicitly."""
    ids = [tokenizer(s, add_special_tokens=False).input_ids for s in segs]
    ids[0] = [tokenizer.bos_token_id, *ids[0]]
    return ids


def stop_sequences(tokenizer: Any, template: str) -> list[list[int]]:
    """Vicuna: "###" as one piece ("▁###", id 835 in LLaMA's vocabulary) or as "##" + "#"
    (2277, 29937). LLaMA-2: EOS. Looked up by piece so the tiny vocabulary works too."""
    if template == "llama2":
        return [[tokenizer.eos_token_id]]
    pieces = [["▁###"], ["##", "#"]]
    ids = [tokenizer.convert_tokens_to_ids(p) for p in pieces]
    if any(i is None or i == tokenizer.unk_token_id for seq in ids for i in seq):
        raise ValueError("tokenizer has no '▁###' / '##' / '#' pieces for the vicuna stop rule")
    return ids


class StopOnSequences(StoppingCriteria):
    """`StoppingCriteriaSub`: stop once the generated ids end with any stop sequence. With
    `inputs_embeds`, generate's ids hold only new tokens, as in the original."""

    def __init__(self, stops: Sequence[Sequence[int]]) -> None:
        self.stops = [torch.tensor(s, dtype=torch.long) for s in stops]

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for stop in self.stops:
            n = len(stop)
            if input_ids.shape[1] >= n:
                done |= (input_ids[:, -n:] == stop.to(input_ids.device)).all(dim=1)
        return done


def generate_ids(
    llm: Any, embs: torch.Tensor, conf: Any, stops: Sequence[Sequence[int]]
) -> list[int]:
    """`Chat.answer`'s `generate` call with the configured decoding (greedy unless
    `conf.do_sample`); returns the new token ids."""
    return generate_ids_batch(llm, [embs[0]], conf, stops)[0]


def generate_ids_batch(
    llm: Any, embs: Sequence[torch.Tensor], conf: Any, stops: Sequence[Sequence[int]]
) -> list[list[int]]:
    """:func:`generate_ids` for several prompts (each (L_i, D)) in one left-padded batch: each
    row's ids are cut where the original, run alone, would have stopped (EOS or a stop
    sequence), so greedy rows equal one-by-one runs token for token."""
    c = conf
    # The demo keeps the last max_length - max_new_tokens positions (of each prompt).
    embs = [e[max(0, e.shape[0] + c.max_new_tokens - c.max_length) :] for e in embs]
    x, mask = left_pad(embs)
    gen: dict[str, Any] = dict(
        max_new_tokens=c.max_new_tokens, num_beams=c.num_beams, do_sample=c.do_sample,
        # transformers 4.28 starts input_ids as [BOS] when only inputs_embeds are given, and
        # min_length counts it: min_length=1 blocks nothing, and EOS may come first.
        min_new_tokens=max(0, c.min_length - 1), repetition_penalty=c.repetition_penalty,
        length_penalty=c.length_penalty,
    )  # fmt: skip
    if c.do_sample:  # top_k 50: transformers 4.28's implicit default, in effect in the demo
        gen.update(top_p=c.top_p, temperature=c.temperature, top_k=50)
    eos = llm.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    ids = llm.generate(
        inputs_embeds=x,
        attention_mask=mask,
        **gen,
        # a finished row is filled with EOS until the batch ends; the cut below removes it
        pad_token_id=min(eos_ids) if eos_ids else 0,
        stopping_criteria=StoppingCriteriaList([StopOnSequences(stops)]),
    )
    return [_cut(row, eos_ids, stops) for row in ids.tolist()]


def _cut(row: list[int], eos_ids: set[int], stops: Sequence[Sequence[int]]) -> list[int]:
    """The ids up to and including the first EOS or completed stop sequence."""
    for t, tok in enumerate(row):
        if tok in eos_ids or any(row[: t + 1][-len(s) :] == list(s) for s in stops if s):
            return row[: t + 1]
    return row


def clean_answer(tokenizer: Any, ids: Sequence[int], template: str,
                 decode: Callable | None = None) -> str:  # fmt: skip
    """`Chat.answer`'s post-processing: drop a leading <unk> then a leading <s>, decode with
    special tokens kept (`decode`: the original's slow decoding, see slow_llama_decode), cut at
    the stop text and after the assistant role."""
    ids = list(ids)
    if ids and ids[0] == tokenizer.unk_token_id:
        ids = ids[1:]
    if ids and ids[0] == tokenizer.bos_token_id:
        ids = ids[1:]
    text = decode(ids) if decode else tokenizer.decode(ids, skip_special_tokens=False)
    if template == "vicuna":
        return text.split("###")[0].split("Assistant:")[-1].strip()
    return text.split("</s>")[0].split("ASSISTANT:")[-1].strip()
