"""One OpenAI-compatible chat client for the judge and for backbone=openai.

The `openai` client's own retries are off (max_retries=0). They are replaced by one explicit loop
(:meth:`ChatClient.create`), so which errors are retried, how long each wait is and how many there
are is visible, the same for both users, and testable:

* retried: connection errors and timeouts, HTTP 429 and 5xx, a 200 whose body is not JSON;
* not retried: every other 4xx (a bad request stays bad);
* waits: full jitter, uniform(0, min(backoff_max_s, backoff_base_s * 2**i)), and at least the
  server's Retry-After (capped at backoff_max_s) on a 429.

The API key lives only inside the client: never on an attribute, in a log line or an error text
(answers are scrubbed of it, in case a server echoes it back).
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import openai

log = logging.getLogger("eald.openai")
USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


class ChatCallError(RuntimeError):
    """A request failed for good: not retryable, or its retries are spent. The text is scrubbed."""


@dataclass
class Tally:
    """One item's attempts and HTTP retries, kept across its calls (a judge's re-asks share one
    retry budget)."""

    attempts: int = 0
    retries: int = 0


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


def retryable(err: Exception) -> bool:
    # The client raises a bare json.JSONDecodeError (not an openai error) for a 200 whose body
    # is not JSON; treat it like a 5xx (typically a proxy page or a truncated body).
    if isinstance(err, openai.APIConnectionError | json.JSONDecodeError):  # incl. APITimeoutError
        return True
    if isinstance(err, openai.APIStatusError):
        return err.status_code == 429 or err.status_code >= 500
    return False


class ChatClient:
    """Chat completions with the retry rules above; thread-safe (one client, many requests in
    flight). ``sleep`` and ``rng`` are injectable so tests can record waits without waiting."""

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        timeout_s: float,
        max_retries: int,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 20.0,
        seed: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.backoff_base_s, self.backoff_max_s = backoff_base_s, backoff_max_s
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random(seed or 0)
        self._lock = threading.Lock()
        self.usage_total: dict[str, int] = dict.fromkeys(USAGE_KEYS, 0)
        self._client = openai.OpenAI(
            base_url=base_url, api_key=key, timeout=timeout_s, max_retries=0
        )

    def scrub(self, text: str) -> str:
        """Belt and braces: a server could echo the key back in an error message."""
        key = self._client.api_key
        if key and key != "EMPTY" and len(key) >= 4:
            text = text.replace(key, "<redacted>")
        return text

    def describe(self, err: Exception) -> str:
        """One scrubbed line that says what went wrong."""
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
        return self.scrub(msg)

    def backoff(self, retry_index: int, err: Exception) -> float:
        """Full jitter: uniform(0, min(max, base * 2**i)); at least Retry-After on a 429."""
        cap = min(self.backoff_max_s, self.backoff_base_s * (2.0**retry_index))
        with self._lock:
            delay = self._rng.uniform(0.0, cap)
        if isinstance(err, openai.RateLimitError):
            asked = retry_after_s(err)
            if asked is not None:
                delay = max(delay, min(asked, self.backoff_max_s))
        return delay

    def create(self, label: str, tally: Tally, **request: Any) -> Any:
        """``chat.completions.create(**request)`` with the retry rules; counts into ``tally``
        and the usage totals. Raises ChatCallError (scrubbed, with the attempts) when it gives up."""
        while True:
            tally.attempts += 1
            try:
                resp = self._client.chat.completions.create(**request)
            except (openai.OpenAIError, json.JSONDecodeError) as err:
                if not retryable(err) or tally.retries >= self.max_retries:
                    reason = "not retryable" if not retryable(err) else "retries exhausted"
                    raise ChatCallError(
                        f"{self.describe(err)} ({reason}; {tally.attempts} attempts)"
                    ) from None  # the cause could carry request headers: not chained
                delay = self.backoff(tally.retries, err)
                tally.retries += 1
                log.info("%s: %s; retry %d/%d in %.2f s", label, self.describe(err),
                         tally.retries, self.max_retries, delay)  # fmt: skip
                self._sleep(delay)
                continue
            return resp

    def add_usage(self, usage: dict[str, int], resp: Any) -> None:
        """Add a response's token usage to ``usage`` and to the client's totals."""
        u = getattr(resp, "usage", None)
        if u is None:
            return
        with self._lock:
            for k in USAGE_KEYS:
                n = int(getattr(u, k, 0) or 0)
                usage[k] += n
                self.usage_total[k] += n
