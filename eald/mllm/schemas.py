"""Config schemas of the backbones (the registry's `_schema_`), kept free of heavy imports: the
config is checked at start-up, while torch/transformers load only when a backbone is built."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING


@dataclass
class VideoLlamaConf:
    """backbone=video_llama (real weights) or video_llama_tiny (`tiny: true`, random weights)."""

    name: str = "video_llama"
    eva_vit_path: str | None = None  # LAVIS eva_vit_g.pth
    qformer_path: str | None = None  # blip2_pretrained_flant5xxl.pth: ln_vision, Q-Former
    imagebind_path: str | None = None  # imagebind_huge.pth; null with al_path null: no audio
    vl_path: str | None = None  # VL branch, e.g. VL_LLaMA_2_7B_Finetuned.pth
    al_path: str | None = None  # AL branch, e.g. AL_LLaMA_2_7B_Finetuned.pth
    llama_path: str | None = None  # HF folder, e.g. llama-2-7b-chat-hf
    template: str = "llama2"  # llama2 | vicuna (must match the LLM the branches were tuned on)
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "bf16"  # bf16 | fp16 | fp32 (always fp32 on CPU)
    batch_size: int = 4  # samples per encoder batch; generation runs per sample
    max_new_tokens: int = 300
    do_sample: bool = False  # true (with the defaults below) = the demo's sampling
    num_beams: int = 1
    top_p: float = 0.9
    temperature: float = 1.0
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0
    min_length: int = 1  # the original's: counts the [BOS] generate starts from (1: no block)
    max_length: int = 2000  # context + new tokens; longer prompts lose their start (demo)
    max_frames: int = 32
    max_audio_clips: int = 8
    tiny: bool = False
    seed: int = 0  # tiny: weight seed
    tiny_dir: str | None = None  # tiny checkpoints; null: ~/.cache/eald/tiny
    tiny_vision_width: int = 48
    tiny_qformer_width: int = 32
    tiny_llm_hidden: int = 64
    tiny_layers: int = 2


@dataclass
class PandaGPTConf:
    name: str = "pandagpt"
    imagebind_path: str | None = None  # imagebind_huge.pth
    vicuna_path: str | None = None  # HF folder of Vicuna v0 (7B or 13B)
    delta_path: str | None = None  # the released pytorch_model.pt matching that Vicuna
    device: str = "auto"
    dtype: str = "auto"  # auto (fp16 on GPU, as the demo) | fp32 | fp16 | bf16
    batch_size: int = 1
    max_new_tokens: int = 256  # the web demo's "Maximum length" default
    do_sample: bool = False
    top_p: float = 0.01  # demo defaults, used only when do_sample
    temperature: float = 1.0
    clips_per_video: int = 5
    crops: int = 3
    audio_clips: int | None = 3  # None: every clip of the sample
    lora_r: int = 32
    lora_alpha: int = 32
    lora_dropout: float = 0.1  # inactive at inference
    seed: int = 0  # sampling seed; for tiny also the weights' seed
    tiny: bool = False  # random tiny weights written in the original layout (tests, CPU)
    tiny_hidden_size: int = 64
    tiny_layers: int = 2
    tiny_heads: int = 4


@dataclass
class TinyBackboneConf:
    """backbone=tiny: a real, small multimodal model with random weights (its text is noise)."""

    name: str = "tiny"
    seed: int = 0
    frame_size: int = 32
    hidden_size: int = 64
    layers: int = 2
    heads: int = 4
    max_new_tokens: int = 48
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    batch_size: int = 8  # samples per forward pass (left-padded); greedy answers unchanged


@dataclass
class OpenAIBackboneConf:
    """backbone=openai: any OpenAI-compatible multimodal chat endpoint (vLLM, hosted APIs)."""

    name: str = "openai"
    base_url: str = MISSING
    model: str = MISSING
    api_key_env: str | None = None  # name of the env var holding the key; null: no key needed
    max_frames: int = 8
    detail: str = "low"  # image_url detail: low | high | auto
    jpeg_quality: int = 85
    send_audio: bool = True  # input_audio wav parts; off for servers without audio input
    temperature: float = 0.0
    max_tokens: int = 512
    seed: int | None = None
    timeout_s: float = 300.0
    max_retries: int = 3  # on connection errors, timeouts, 429 and 5xx (eald.openai_chat)
    backoff_base_s: float = 0.5
    backoff_max_s: float = 20.0
    concurrency: int = 8  # requests in flight (a vLLM server batches them); answers unchanged
