"""Config schemas of the judges (the registry's `_schema_`); no heavy imports."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING


@dataclass
class JudgePromptConf:
    system: str = MISSING
    user: str = MISSING  # {response} {nfbl_block}
    nfbl_block: str = MISSING  # {nfbl}


@dataclass
class OpenAIJudgeConf:
    name: str = "openai"
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-3.5-turbo-0125"
    api_key_env: str | None = "OPENAI_API_KEY"
    concurrency: int = 8
    max_retries: int = 6
    timeout_s: float = 60.0
    temperature: float = 0.0
    max_tokens: int = 64
    parse_retries: int = 2
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    seed: int | None = None
    prompt: JudgePromptConf = field(default_factory=JudgePromptConf)


@dataclass
class OfflineJudgeConf:
    """judge=offline: VADER lexicon polarity, NOT the paper's judge (for machines with no LLM)."""

    name: str = "offline"
