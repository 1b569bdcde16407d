"""Offline stand-in judge: VADER sentiment on the description. NOT the paper's judge.

For machines with no LLM at all (CI, laptops). The paper's stage 3 asks gpt-3.5-turbo-0125;
numbers produced with this judge are not comparable to the paper's and are labelled so by
identity()["kind"] == "offline-vader".

Rule (deterministic, documented): VADER's compound polarity c in [-1, 1] of the response text
(joined with the NFBL text by a newline when given); c >= 0 -> "positive", else "negative";
confidence = clamp(1 + round(9 * |c|), 1, 10).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

from eald.judge import VERSION, Judgement, JudgeRequest, OnResult

KIND = "offline-vader"


def identity(conf: Any) -> dict[str, Any]:
    """Fixed: the judge has no settings."""
    return {
        "kind": KIND,
        "paper_judge": False,
        "note": "VADER text sentiment stand-in; NOT the paper's gpt-3.5-turbo judge",
        "rule": "compound>=0 -> positive; confidence=clamp(1+round(9*|compound|),1,10)",
        "input": "response + '\\n' + nfbl (when nfbl is given)",
        "version": VERSION,
    }


class OfflineJudge:
    """VADER-based stand-in judge (not the paper's LLM judge); see the module docstring."""

    name = "offline"
    deterministic = True

    def __init__(self, conf: Any = None, **_: Any) -> None:
        # Imported here so that `eald.judge` does not require vaderSentiment for the LLM judge.
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()
        self._lock = threading.Lock()  # VADER is not documented as thread-safe

    def identity(self) -> dict[str, Any]:
        return identity(None)

    def classify(self, request: JudgeRequest) -> Judgement:
        text = request.response if request.nfbl is None else f"{request.response}\n{request.nfbl}"
        with self._lock:
            compound = float(self._analyzer.polarity_scores(text)["compound"])
        emotion = "positive" if compound >= 0 else "negative"
        confidence = min(10, max(1, 1 + round(9 * abs(compound))))
        raw = json.dumps({"emotion": emotion, "score": confidence, "compound": compound})
        return Judgement(
            emotion=emotion, confidence=confidence, raw=raw, status="ok", attempts=0, usage={}
        )

    judge_one = classify  # one request (the zero-shot pipeline's call)

    def judge(
        self, requests: Sequence[JudgeRequest], on_result: OnResult | None = None
    ) -> list[Judgement]:
        out: list[Judgement] = []
        for i, req in enumerate(requests):
            j = self.classify(req)
            out.append(j)
            if on_result is not None:
                on_result(i, j)
        return out

    def __repr__(self) -> str:
        return f"OfflineJudge(kind={KIND!r})"
