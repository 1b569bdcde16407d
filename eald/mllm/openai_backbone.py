"""backbone=openai: any OpenAI-compatible multimodal chat endpoint (vLLM serving Qwen2.5-Omni or
similar, or a hosted API).

Frames go as base64 JPEG `image_url` parts (at most `max_frames`, spread uniformly over the
sampled ones, with `detail`), audio clips as base64 WAV `input_audio` parts (switch off with
`send_audio=false` for servers without audio), NFBL and the question as text. The API key is read
from the environment variable named by `api_key_env` and lives only inside the client.

Requests go through eald.openai_chat (the judge's retry and back-off rules). The runner keeps
`concurrency` of them in flight (a vLLM server batches concurrent requests); answers do not depend
on it.
"""

from __future__ import annotations

import base64
import io
import wave
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from eald.credentials import api_key, public_url
from eald.data.sampling import Sample
from eald.mllm import BackboneError, Preprocess
from eald.mllm.prompt import prompt_parts
from eald.openai_chat import ChatCallError, ChatClient, Tally

VERSION = "openai-backbone-2"  # 2: the frame intro counts the frames sent


def jpeg_b64(frame: np.ndarray, quality: int) -> str:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return base64.b64encode(buf.getvalue()).decode()


def wav_b64(clip: np.ndarray, sample_rate: int) -> str:
    pcm = (np.clip(clip, -1.0, 1.0) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return base64.b64encode(buf.getvalue()).decode()


def identity(conf: Any) -> dict[str, Any]:
    """Cache identity (no credentials): endpoint, model, request shape and generation."""
    c = conf
    return {
        "kind": "openai",
        "version": VERSION,
        "base_url": public_url(c.base_url),
        "model": c.model,
        "request": {"max_frames": c.max_frames, "detail": c.detail,
                    "jpeg_quality": c.jpeg_quality, "send_audio": c.send_audio},
        "generation": {"temperature": c.temperature, "max_tokens": c.max_tokens,
                       "seed": c.seed},
        "deterministic": c.temperature == 0,
    }  # fmt: skip


class OpenAIBackbone:
    name = "openai"

    def __init__(self, conf: Any) -> None:
        self.conf = conf
        if conf.concurrency < 1:
            raise ValueError(f"backbone.concurrency={conf.concurrency}: need >= 1")
        self._client = ChatClient(
            conf.base_url, api_key(conf.api_key_env, "backbone.api_key_env"),
            timeout_s=conf.timeout_s, max_retries=conf.max_retries,
            backoff_base_s=conf.backoff_base_s, backoff_max_s=conf.backoff_max_s, seed=conf.seed,
        )  # fmt: skip
        self.preprocess = Preprocess(None, None, None, None, None, audio_input="waveform")
        self.deterministic = conf.temperature == 0
        self.concurrency = conf.concurrency  # requests the runner keeps in flight

    def __repr__(self) -> str:
        return f"OpenAIBackbone(model={self.conf.model!r}, base_url={public_url(self.conf.base_url)!r})"

    def identity(self) -> dict[str, Any]:
        return identity(self.conf)

    def content(self, sample: Sample, prompt: Any) -> list[dict[str, Any]]:
        """The user message's content parts for one video."""
        c = self.conf
        out: list[dict[str, Any]] = []
        for kind, payload in prompt_parts(sample, prompt, max_frames=c.max_frames):
            if kind == "text":
                out.append({"type": "text", "text": payload})
            elif kind == "frames":
                for frame in payload:  # already thinned to max_frames
                    url = f"data:image/jpeg;base64,{jpeg_b64(frame, c.jpeg_quality)}"
                    out.append({"type": "image_url", "image_url": {"url": url, "detail": c.detail}})
            elif kind == "audio":
                if not c.send_audio:
                    out.pop()  # drop the audio intro too: the model receives no audio
                    continue
                for clip in payload:
                    data = wav_b64(clip, sample.sample_rate)
                    out.append(
                        {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}
                    )
        return out

    def describe(self, samples: Sequence[Sample], prompt: Any) -> list[str]:
        """One request per sample, in order (the runner calls this from `concurrency` threads)."""
        c = self.conf
        kwargs: dict[str, Any] = {"temperature": c.temperature, "max_tokens": c.max_tokens}
        if c.seed is not None:
            kwargs["seed"] = c.seed
        where = f"{public_url(c.base_url)} ({c.model})"
        texts = []
        for sample in samples:
            messages = [{"role": "user", "content": self.content(sample, prompt)}]
            try:
                resp = self._client.create(
                    f"describe {sample.video_id}", Tally(), model=c.model, messages=messages,
                    **kwargs,
                )  # fmt: skip
            except ChatCallError as err:
                raise BackboneError(f"{where}: {err}") from None
            text = resp.choices[0].message.content if resp.choices else None
            if not text:
                raise BackboneError(f"{where}: empty response")
            texts.append(text)
        return texts
