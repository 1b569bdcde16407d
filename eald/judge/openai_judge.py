"""The paper's judge: an OpenAI-compatible chat model (gpt-3.5-turbo-0125, temperature 0).

Works with any OpenAI-compatible server (OpenAI, vLLM, llama.cpp, ...) through the official
`openai` client. The client's own retries are disabled (max_retries=0) and replaced by an explicit
loop here, so which errors are retried, how long we wait and how often is visible and testable.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import openai

from eald.credentials import CredentialError, api_key, public_url
from eald.judge import (
    STATUS_ERROR,
    STATUS_OK,
    STATUS_UNPARSABLE,
    VERSION,
    JudgeConfigError,
    Judgement,
    JudgeRequest,
    OnResult,
    build_messages,
    conf_get,
)
from eald.judge.parse import JudgeParseError, parse_judgement

log = logging.getLogger("eald.judge")

KIND = "openai-chat"
# Sent after an unparsable answer, with that answer kept in the conversation: re-sending the same
# messages at temperature 0 would mostly reproduce the same unparsable text.
REASK = (
    'Answer again with only a JSON object of the form {"emotion": "positive" or "negative", '
    '"score": an integer from 1 to 10}.'
)
USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


def identity(conf: Any) -> dict[str, Any]:
    """Everything that changes an answer, from the config alone (no client, no key)."""
    max_tokens, seed, prompt = (conf_get(conf, k, None) for k in ("max_tokens", "seed", "prompt"))
    return {
        "kind": KIND,
        "model": str(conf_get(conf, "model")),
        "base_url": public_url(str(conf_get(conf, "base_url"))),
        "prompt": {
            "system": str(conf_get(prompt, "system", "") or ""),
            "user": str(conf_get(prompt, "user")),
            "nfbl_block": str(conf_get(prompt, "nfbl_block", "")),
        },
        "reask": REASK,
        "temperature": float(conf_get(conf, "temperature", 0.0)),
        "max_tokens": None if max_tokens is None else int(max_tokens),
        "seed": None if seed is None else int(seed),
        "parse_retries": int(conf_get(conf, "parse_retries", 0)),
        "version": VERSION,
    }


def retry_after_s(err: openai.APIStatusError) -> float | None:
    """Seconds asked for by the Retry-After (or retry-after-ms) header, if any."""
    headers = err.response.headers if err.response is not None else {}
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:  # HTTP date form, e.g. "Wed, 21 Oct 2026 07:28:00 GMT"
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _retryable(err: Exception) -> bool:
    # The client raises a bare json.JSONDecodeError (not an openai error) for a 200 whose body
    # is not JSON; treat it like a 5xx (typically a proxy page or a truncated body).
    if isinstance(err, openai.APIConnectionError | json.JSONDecodeError):  # incl. APITimeoutError
        return True
    if isinstance(err, openai.APIStatusError):
        return err.status_code == 429 or err.status_code >= 500
    return False


class OpenAIJudge:
    """LLM judge over the chat-completions API; see the module docstring.

    `sleep` and `rng` are injectable so tests can record back-off waits without waiting.
    """

    name = "openai"

    def __init__(
        self,
        conf: Any,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._conf = conf
        self.base_url = str(conf_get(conf, "base_url"))
        self.model = str(conf_get(conf, "model"))
        self.api_key_env: str | None = conf_get(conf, "api_key_env", None) or None
        self.concurrency = int(conf_get(conf, "concurrency", 1))
        self.max_retries = int(conf_get(conf, "max_retries", 0))
        self.timeout_s = float(conf_get(conf, "timeout_s", 60.0))
        self.temperature = float(conf_get(conf, "temperature", 0.0))
        max_tokens = conf_get(conf, "max_tokens", None)
        self.max_tokens: int | None = None if max_tokens is None else int(max_tokens)
        self.parse_retries = int(conf_get(conf, "parse_retries", 0))
        self.backoff_base_s = float(conf_get(conf, "backoff_base_s", 0.5))
        self.backoff_max_s = float(conf_get(conf, "backoff_max_s", 20.0))
        seed = conf_get(conf, "seed", None)
        self.seed: int | None = None if seed is None else int(seed)
        prompt = conf_get(conf, "prompt")
        self.prompt = {
            "system": str(conf_get(prompt, "system", "") or ""),
            "user": str(conf_get(prompt, "user")),
            "nfbl_block": str(conf_get(prompt, "nfbl_block", "")),
        }
        for key, ok in (
            ("concurrency", self.concurrency >= 1),
            ("max_retries", self.max_retries >= 0),
            ("parse_retries", self.parse_retries >= 0),
            ("timeout_s", self.timeout_s > 0),
        ):
            if not ok:
                raise JudgeConfigError(f"judge.{key} is out of range")
        self.deterministic = self.temperature == 0
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random(self.seed or 0)
        self._rng_lock = threading.Lock()
        self._usage_lock = threading.Lock()
        self.usage_total: dict[str, int] = dict.fromkeys(USAGE_KEYS, 0)
        # The key lives only inside the client: never on self, in identity(), logs or errors.
        self._client = openai.OpenAI(
            base_url=self.base_url,
            api_key=self._read_key(),
            timeout=self.timeout_s,
            max_retries=0,
        )

    def _read_key(self) -> str:
        try:
            return api_key(self.api_key_env, "judge.api_key_env")
        except CredentialError as err:
            raise JudgeConfigError(str(err)) from None

    def identity(self) -> dict[str, Any]:
        return identity(self._conf)

    def __repr__(self) -> str:
        return (
            f"OpenAIJudge(model={self.model!r}, base_url={public_url(self.base_url)!r}, "
            f"api_key_env={self.api_key_env!r}, concurrency={self.concurrency})"
        )

    def _scrub(self, text: str) -> str:
        """Belt and braces: a server could echo the key back in an error message."""
        key = self._client.api_key
        if key and key != "EMPTY" and len(key) >= 4:
            text = text.replace(key, "<redacted>")
        return text

    def _describe(self, err: Exception) -> str:
        if isinstance(err, openai.APIStatusError):
            msg = f"HTTP {err.status_code} {type(err).__name__}: {err.message}"
        elif isinstance(err, json.JSONDecodeError):
            msg = f"response body is not JSON ({err})"
        elif isinstance(err, openai.APITimeoutError):
            msg = f"APITimeoutError: request timed out after {self.timeout_s:g} s"
        else:
            msg = f"{type(err).__name__}: {err}"
            if err.__cause__ is not None:  # "Connection error." alone does not say why
                msg += f" ({type(err.__cause__).__name__}: {err.__cause__})"
        return self._scrub(msg)

    def _backoff(self, retry_index: int, err: Exception) -> float:
        """Full jitter: uniform(0, min(max, base * 2**i)); at least Retry-After on a 429."""
        cap = min(self.backoff_max_s, self.backoff_base_s * (2.0**retry_index))
        with self._rng_lock:
            delay = self._rng.uniform(0.0, cap)
        if isinstance(err, openai.RateLimitError):
            asked = retry_after_s(err)
            if asked is not None:
                delay = max(delay, min(asked, self.backoff_max_s))
        return delay

    def _call(self, messages: list[dict[str, str]]) -> Any:
        kwargs: dict[str, Any] = {"temperature": self.temperature}
        if self.max_tokens is not None:
            kwargs["max_tokens"] = self.max_tokens
        if self.seed is not None:
            kwargs["seed"] = self.seed
        return self._client.chat.completions.create(model=self.model, messages=messages, **kwargs)

    def _judge_one(self, req: JudgeRequest) -> Judgement:
        messages = base = build_messages(self.prompt, req)
        usage = dict.fromkeys(USAGE_KEYS, 0)
        attempts = http_retries = parse_asks = 0
        raw: str | None = None
        while True:
            attempts += 1
            try:
                resp = self._call(messages)
            except (openai.OpenAIError, json.JSONDecodeError) as err:
                if not _retryable(err) or http_retries >= self.max_retries:
                    reason = "not retryable" if not _retryable(err) else "retries exhausted"
                    error = f"{self._describe(err)} ({reason}; {attempts} attempts)"
                    log.warning("judge %s failed: %s", req.item_id, error)
                    return Judgement(None, None, raw, STATUS_ERROR, error, attempts, usage)
                delay = self._backoff(http_retries, err)
                http_retries += 1
                log.info(
                    "judge %s: %s; retry %d/%d in %.2f s",
                    req.item_id, self._describe(err), http_retries, self.max_retries, delay,
                )  # fmt: skip
                self._sleep(delay)
                continue
            self._add_usage(usage, resp)
            raw = (resp.choices[0].message.content if resp.choices else None) or ""
            try:
                emotion, confidence = parse_judgement(raw)
            except JudgeParseError as err:
                if parse_asks >= self.parse_retries:
                    error = self._scrub(f"{err} (after {parse_asks + 1} answers)")
                    log.warning("judge %s unparsable: %s", req.item_id, error)
                    return Judgement(None, None, raw, STATUS_UNPARSABLE, error, attempts, usage)
                parse_asks += 1
                bad = {"role": "assistant", "content": raw}  # kept in context (see REASK)
                messages = [*base, bad, {"role": "user", "content": REASK}]
                continue
            log.debug("judge %s -> %s %d (usage %s)", req.item_id, emotion, confidence, usage)
            return Judgement(emotion, confidence, raw, STATUS_OK, None, attempts, usage)

    def _add_usage(self, usage: dict[str, int], resp: Any) -> None:
        u = getattr(resp, "usage", None)
        if u is None:
            return
        with self._usage_lock:
            for k in USAGE_KEYS:
                n = int(getattr(u, k, 0) or 0)
                usage[k] += n
                self.usage_total[k] += n

    def judge(
        self, requests: Sequence[JudgeRequest], on_result: OnResult | None = None
    ) -> list[Judgement]:
        """Judge all requests with at most `concurrency` in flight; results in request order.

        on_result(i, judgement) runs in this (the calling) thread as each request finishes, so
        calls are serialised without the caller needing a lock, and an exception it raises
        cancels the requests not yet started and propagates.
        """
        results: list[Judgement | None] = [None] * len(requests)
        if not requests:
            return []
        t0 = time.monotonic()
        before = dict(self.usage_total)
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="judge") as ex:
            futures = {ex.submit(self._judge_one, r): i for i, r in enumerate(requests)}
            try:
                for fut in as_completed(futures):
                    i = futures[fut]
                    results[i] = fut.result()
                    if on_result is not None:
                        on_result(i, results[i])
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
        spent = {k: self.usage_total[k] - before[k] for k in USAGE_KEYS}
        n_ok = sum(1 for r in results if r is not None and r.status == STATUS_OK)
        log.info(
            "judge %s: %d/%d ok in %.1f s; tokens this call %s; total %s",
            self.model, n_ok, len(requests), time.monotonic() - t0, spent, self.usage_total,
        )  # fmt: skip
        return [r for r in results if r is not None]
