"""The paper's judge: an OpenAI-compatible chat model (gpt-3.5-turbo-0125, temperature 0).

Works with any OpenAI-compatible server (OpenAI, vLLM, llama.cpp, ...) through the official
`openai` client, wrapped by eald.openai_chat (the retry and back-off rules backbone=openai shares).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

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
from eald.openai_chat import USAGE_KEYS, ChatCallError, ChatClient, Tally

log = logging.getLogger("eald.judge")

KIND = "openai-chat"
# Sent after an unparsable answer, with that answer kept in the conversation: re-sending the same
# messages at temperature 0 would mostly reproduce the same unparsable text.
REASK = (
    'Answer again with only a JSON object of the form {"emotion": "positive" or "negative", '
    '"score": an integer from 1 to 10}.'
)


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
        # The key lives only inside the client: never on self, in identity(), logs or errors.
        self._client = ChatClient(
            self.base_url, self._read_key(), timeout_s=self.timeout_s,
            max_retries=self.max_retries, backoff_base_s=self.backoff_base_s,
            backoff_max_s=self.backoff_max_s, seed=self.seed, sleep=sleep, rng=rng,
        )  # fmt: skip

    @property
    def usage_total(self) -> dict[str, int]:
        return self._client.usage_total

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

    def _call(self, req: JudgeRequest, tally: Tally, messages: list[dict[str, str]]) -> Any:
        kwargs: dict[str, Any] = {"temperature": self.temperature}
        if self.max_tokens is not None:
            kwargs["max_tokens"] = self.max_tokens
        if self.seed is not None:
            kwargs["seed"] = self.seed
        return self._client.create(
            f"judge {req.item_id}", tally, model=self.model, messages=messages, **kwargs
        )

    def judge_one(self, req: JudgeRequest) -> Judgement:
        """One request, in the calling thread (the zero-shot pipeline runs these concurrently)."""
        messages = base = build_messages(self.prompt, req)
        usage = dict.fromkeys(USAGE_KEYS, 0)
        tally, parse_asks = Tally(), 0
        raw: str | None = None
        while True:
            try:
                resp = self._call(req, tally, messages)
            except ChatCallError as err:
                log.warning("judge %s failed: %s", req.item_id, err)
                return Judgement(None, None, raw, STATUS_ERROR, str(err), tally.attempts, usage)
            self._client.add_usage(usage, resp)
            raw = (resp.choices[0].message.content if resp.choices else None) or ""
            try:
                emotion, confidence = parse_judgement(raw)
            except JudgeParseError as err:
                if parse_asks >= self.parse_retries:
                    error = self._client.scrub(f"{err} (after {parse_asks + 1} answers)")
                    log.warning("judge %s unparsable: %s", req.item_id, error)
                    return Judgement(
                        None, None, raw, STATUS_UNPARSABLE, error, tally.attempts, usage
                    )
                parse_asks += 1
                bad = {"role": "assistant", "content": raw}  # kept in context (see REASK)
                messages = [*base, bad, {"role": "user", "content": REASK}]
                continue
            log.debug("judge %s -> %s %d (usage %s)", req.item_id, emotion, confidence, usage)
            return Judgement(emotion, confidence, raw, STATUS_OK, None, tally.attempts, usage)

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
            futures = {ex.submit(self.judge_one, r): i for i, r in enumerate(requests)}
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
