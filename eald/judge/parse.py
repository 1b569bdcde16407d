"""Parse a judge's answer into (emotion, confidence), or refuse.

Strict JSON is tried first (the whole text, else the first JSON object inside it, e.g. in a
```json fence). Only when no JSON object carries the fields do we fall back to tolerant
"Emotion: Negative, Score: 7" style forms. Any doubt raises `JudgeParseError`: a wrong label
silently counted as a prediction is worse than an explicit failure, so nothing is guessed.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from eald.data.taxonomy import LABELS

EMOTION_KEYS = ("emotion", "sentiment", "label")
SCORE_KEYS = ("score", "confidence", "confidence_score")
_SNIPPET = 200


class JudgeParseError(ValueError):
    """The answer does not state one emotion and one integer score 1-10 unambiguously."""


def _fail(reason: str, text: str) -> JudgeParseError:
    snippet = text if len(text) <= _SNIPPET else text[:_SNIPPET] + "..."
    return JudgeParseError(f"cannot parse judge answer ({reason}): {snippet!r}")


def _emotion_value(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    v = value.strip().strip(".!\"'").strip().lower()
    return v if v in LABELS else None


def _score_value(value: Any) -> int | None:
    """Integer-valued 1..10 from an int, float or numeric string ("7", "7.0", "7/10")."""
    if isinstance(value, bool):  # bool is an int subclass; True is not a score
        return None
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*10\s*)?", value)
        if not m:
            return None
        value = float(m.group(1))
    if not isinstance(value, int | float) or not math.isfinite(value):
        return None
    if value != int(value) or not 1 <= int(value) <= 10:
        return None
    return int(value)


def _norm_key(key: str) -> str:
    return re.sub(r"[\s\-]+", "_", key.strip().lower())


def _from_object(obj: dict[str, Any], text: str) -> tuple[str, int] | None:
    """(emotion, score) from a JSON object; None when it has neither field (not our object)."""
    keys = {_norm_key(str(k)): v for k, v in obj.items()}
    emotions = [keys[k] for k in EMOTION_KEYS if k in keys]
    scores = [keys[k] for k in SCORE_KEYS if k in keys]
    if not emotions and not scores:
        return None
    if not emotions:
        raise _fail("JSON has no emotion field", text)
    if not scores:
        raise _fail("JSON has no score field", text)
    parsed_e = {_emotion_value(e) for e in emotions}
    if None in parsed_e or len(parsed_e) != 1:
        raise _fail(f"emotion must be one of {LABELS}", text)
    parsed_s = {_score_value(s) for s in scores}
    if None in parsed_s or len(parsed_s) != 1:
        raise _fail("score must be an integer 1-10", text)
    return parsed_e.pop(), parsed_s.pop()  # type: ignore[return-value]


def _json_objects(text: str) -> list[dict[str, Any]]:
    """The whole text as JSON, else every top-level JSON object found inside it, in order."""
    try:
        whole = json.loads(text)
    except ValueError:
        whole = None
    if isinstance(whole, dict):
        return [whole]
    found: list[dict[str, Any]] = []
    decoder = json.JSONDecoder()
    i = text.find("{")
    while i != -1:
        try:
            obj, end = decoder.raw_decode(text, i)
        except ValueError:
            i = text.find("{", i + 1)
            continue
        if isinstance(obj, dict):
            found.append(obj)
        i = text.find("{", end)
    return found


# "emotion", optional quote/markdown, then ":", "=", "-", "is" or "was", then the value up to the
# end of the clause. Markdown emphasis (* and `) is stripped beforehand.
_EMOTION_RE = re.compile(
    r"\b(?:emotion|sentiment|label)\b[\"']?\s*(?:[:=\-\u2013]|\bis\b|\bwas\b)\s*([^\n,;|]*)",
    re.IGNORECASE,
)
_SCORE_RE = re.compile(
    r"\b(?:confidence[\s_]*score|confidence|score)\b[\"']?\s*"
    r"(?:\(\s*1\s*[-\u2013]\s*10\s*\)\s*)?"  # "Score (1-10): 8"
    r"(?:[:=\-\u2013]|\bis\b|\bof\b)?\s*[\"']?\s*"
    r"(\d+(?:\.\d+)?)(?:\s*(?:/|\bout\s+of\b)\s*(\d+))?",
    re.IGNORECASE,
)
_LABEL_WORD_RE = re.compile(r"\b(positive|negative)\b", re.IGNORECASE)
_NEGATION_RE = re.compile(r"\b(?:not|no|neither|nor)\b|n't\b", re.IGNORECASE)


def _tolerant(text: str) -> tuple[str, int]:
    clean = re.sub(r"[*`]", "", text)
    emotions: set[str] = set()
    for m in _EMOTION_RE.finditer(clean):
        clause = m.group(1)
        words = {w.lower() for w in _LABEL_WORD_RE.findall(clause)}
        if not words:
            continue  # "emotion" used in prose without a value: not a statement of the label
        if _NEGATION_RE.search(clause):
            raise _fail("negated emotion value", text)
        emotions |= words
    if not emotions:
        raise _fail("no emotion field", text)
    if len(emotions) > 1:
        raise _fail("ambiguous emotion (both positive and negative)", text)
    scores: set[int | None] = set()
    for m in _SCORE_RE.finditer(clean):
        if m.group(2) is not None and m.group(2) != "10":
            scores.add(None)  # "8/5" is not on the 1-10 scale
        else:
            scores.add(_score_value(m.group(1)))
    if not scores:
        raise _fail("no score field", text)
    if None in scores:
        raise _fail("score must be an integer 1-10", text)
    if len(scores) > 1:
        raise _fail("ambiguous score", text)
    return emotions.pop(), scores.pop()  # type: ignore[return-value]


def parse_judgement(text: str) -> tuple[str, int]:
    """Return (emotion, confidence) from a judge answer, or raise `JudgeParseError`."""
    if text is None or not str(text).strip():
        raise _fail("empty answer", "" if text is None else str(text))
    text = str(text)
    for obj in _json_objects(text):
        got = _from_object(obj, text)
        if got is not None:
            return got
    return _tolerant(text)
