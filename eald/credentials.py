"""Credentials: read from the environment variable a config names, never stored anywhere else.
One reader for every OpenAI-compatible client (backbone=openai, judge=openai)."""

from __future__ import annotations

import os
import re

# Keyless local servers (vLLM, llama.cpp, Ollama) accept any key; the client insists on one.
NO_KEY = "EMPTY"


class CredentialError(ValueError):
    """The variable a config names is unset or empty; the message names the config key."""


def api_key(env: str | None, key: str) -> str:
    """The value of the environment variable `env` (named by config key `key`, e.g.
    "judge.api_key_env"); NO_KEY when `env` is null."""
    if not env:
        return NO_KEY
    value = os.environ.get(env, "")
    if not value:
        raise CredentialError(
            f"{key} names the environment variable {env!r}, which is not set or empty; export "
            f"it, or set {key}=null for a server that needs no key"
        )
    return value


def public_url(url: str) -> str:
    """`url` without user:password@: credentials must never reach identities, logs or errors."""
    return re.sub(r"^([a-zA-Z][\w+.-]*://)[^/@]*@", r"\1", url)
