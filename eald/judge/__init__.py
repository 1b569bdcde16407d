"""Stage 3 of EALD-MLLM: an LLM judge turns an MLLM's video description into a verdict.

The judge answers the person's emotion ("positive" | "negative") and a confidence score 1-10.
Judges are registered components (eald.registry; `eald/conf/judge/<name>.yaml`), imported only
when chosen, so `eald.judge` itself stays cheap and the offline judge works without the `openai`
package (and vice versa).

A failed request is reported as a failure (`status != "ok"`, `emotion is None`), never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

# Bump when anything that can change an answer changes (prompt assembly, parsing, re-ask text):
# it is part of every judge's identity(), so cached answers from older code are not reused.
VERSION = "1"

STATUS_OK = "ok"
STATUS_UNPARSABLE = "judge_unparsable"
STATUS_ERROR = "judge_error"


class JudgeConfigError(ValueError):
    """The judge config is unusable (e.g. the API key variable is missing); names the key."""


@dataclass(frozen=True)
class JudgeRequest:
    item_id: str  # video id, for logs
    response: str  # the MLLM's description
    nfbl: str | None  # NFBL text, or None when the modality is off


@dataclass
class Judgement:
    emotion: str | None  # "positive" | "negative"; None on failure
    confidence: int | None  # 1..10
    raw: str | None  # the judge's raw answer text (last attempt)
    status: str  # "ok" | "judge_unparsable" | "judge_error"
    error: str | None = None
    attempts: int = 1  # HTTP attempts made
    usage: dict[str, int] = field(default_factory=dict)


OnResult = Callable[[int, Judgement], None]


@runtime_checkable
class Judge(Protocol):
    name: str
    deterministic: bool  # True when answers may be cached

    def identity(self) -> dict[str, Any]: ...

    def judge(
        self, requests: Sequence[JudgeRequest], on_result: OnResult | None = None
    ) -> list[Judgement]: ...

    # Optional: `judge_one(request) -> Judgement`, one request in the calling thread. The
    # zero-shot pipeline uses it when present (else `judge([request])[0]`).


_MISSING = object()


def conf_get(conf: Any, key: str, default: Any = _MISSING) -> Any:
    """Read `key` from an OmegaConf node, a mapping or a plain attribute object."""
    if isinstance(conf, Mapping):  # DictConfig is a MutableMapping, so this covers it too
        if key in conf:
            return conf[key]
    elif hasattr(conf, key):
        return getattr(conf, key)
    if default is _MISSING:
        raise JudgeConfigError(f"judge config has no field {key!r}")
    return default


# Only these placeholders are substituted, in a single pass: prompt templates routinely contain
# literal JSON braces (`{"emotion": ...}`), which str.format would choke on, and a description
# that happens to contain "{nfbl_block}" must not be expanded a second time.
_FIELD_RE = re.compile(r"\{(response|nfbl_block|nfbl)\}")


def fill_template(template: str, **values: str) -> str:
    """Substitute `{name}` for the given names only; every other brace is kept literally."""

    def sub(m: re.Match[str]) -> str:
        return values[m.group(1)] if m.group(1) in values else m.group(0)

    return _FIELD_RE.sub(sub, template)


def build_messages(prompt: Any, request: JudgeRequest) -> list[dict[str, str]]:
    """Chat messages for one request: optional system message, then the filled user template.

    The NFBL block is `prompt.nfbl_block` filled with `{nfbl}` when `request.nfbl` is not None,
    else the empty string, so modality ablations differ only by that block.
    """
    nfbl_block = ""
    if request.nfbl is not None:
        nfbl_block = fill_template(str(conf_get(prompt, "nfbl_block")), nfbl=request.nfbl)
    user = fill_template(
        str(conf_get(prompt, "user")), response=request.response, nfbl_block=nfbl_block
    )
    messages: list[dict[str, str]] = []
    system = conf_get(prompt, "system", None)
    if system:
        messages.append({"role": "system", "content": str(system)})
    messages.append({"role": "user", "content": user})
    return messages


__all__ = [
    "VERSION",
    "STATUS_OK",
    "STATUS_UNPARSABLE",
    "STATUS_ERROR",
    "Judge",
    "JudgeConfigError",
    "JudgeRequest",
    "Judgement",
    "OnResult",
    "build_messages",
    "conf_get",
    "fill_template",
]
