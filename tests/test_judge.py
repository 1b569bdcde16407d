"""The judge, tested with the real `openai` client against a real local HTTP server."""

from __future__ import annotations

import email.utils
import json
import threading
import time
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from eald.judge import Judge, JudgeConfigError, JudgeRequest, build_messages
from eald.judge.parse import JudgeParseError, parse_judgement
from eald.registry import REGISTRY
from eald.testing.openai_server import FakeOpenAIServer, Reply


def build_judge(conf, **kw):
    return REGISTRY.build("judge", conf, **kw)


PROMPT = {
    "system": "You judge emotions.",
    "user": 'Description: {response}\n{nfbl_block}Answer as JSON {"emotion": ..., "score": ...}.',
    "nfbl_block": "Body language: {nfbl}\n",
}
GOOD = '{"emotion": "negative", "score": 7}'


def judge_conf(base_url: str, **over) -> object:
    conf = dict(name="openai", base_url=base_url, model="gpt-3.5-turbo-0125", api_key_env=None,
                concurrency=4, max_retries=3, timeout_s=5.0, temperature=0.0, max_tokens=64,
                parse_retries=1, backoff_base_s=0.5, backoff_max_s=20.0, seed=None, prompt=PROMPT)  # fmt: skip
    return OmegaConf.create({**conf, **over})


def make(server: FakeOpenAIServer, sleeps: list | None = None, **over) -> Judge:
    """OpenAIJudge on `server`; its back-off waits are recorded in `sleeps`, never slept."""
    sleep = (sleeps if sleeps is not None else []).append
    return build_judge(judge_conf(server.base_url, **over), sleep=sleep)


def reqs(n: int, nfbl: str | None = None) -> list[JudgeRequest]:
    return [JudgeRequest(f"v{i}", f"description number {i}", nfbl) for i in range(n)]


def body_index(body: dict) -> str:
    """The request number encoded in the description ("description number N")."""
    return body["messages"][1]["content"].split("description number ")[1].split("\n")[0]


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ('{"emotion": "positive", "score": 8}', ("positive", 8)),
        ('{"Sentiment": " Negative ", "Confidence": "7.0"}', ("negative", 7)),
        ('{"label": "POSITIVE", "confidence_score": 10}', ("positive", 10)),
        ('Sure!\n```json\n{"emotion": "negative", "score": 3}\n```\n', ("negative", 3)),
        ("Emotion: Negative, Score: 7", ("negative", 7)),
        ("emotion - positive; confidence score: 9/10", ("positive", 9)),
        ("**Emotion:** Positive\n**Confidence score:** 8", ("positive", 8)),
        ("The emotion is negative, with a confidence score of 6.", ("negative", 6)),
    ],
)
def test_parse_accepts(text, want):
    assert parse_judgement(text) == want


@pytest.mark.parametrize(
    "text",
    [
        '{"emotion": "positive"}',  # missing score
        "Emotion: Negative",
        '{"emotion": "positive", "score": 0}',
        '{"emotion": "positive", "score": 11}',
        '{"emotion": "positive", "score": 7.5}',
        "Emotion: Positive, Score: 7.5",
        '{"emotion": "neutral", "score": 5}',
        "Emotion: positive or negative, Score: 5",  # ambiguous
        "Emotion: Positive\nScore: 6\nEmotion: Negative",
        "Emotion: not positive, Score: 4",  # negation: never guess the other label
        "The person seems positive. 8",  # no fields stated
        "",
        "   \n",
        "x" * 1000,
    ],
)
def test_parse_rejects(text):
    with pytest.raises(JudgeParseError, match="cannot parse judge answer") as e:
        parse_judgement(text)
    assert len(str(e.value)) < 300  # quotes the answer, truncated


def test_build_messages_fills_only_known_fields():
    prompt = SimpleNamespace(**PROMPT)
    with_nfbl = build_messages(prompt, JudgeRequest("a", "he smiles {nfbl_block}", "N3 x2"))
    assert with_nfbl[0] == {"role": "system", "content": "You judge emotions."}
    assert with_nfbl[1]["content"] == (
        "Description: he smiles {nfbl_block}\nBody language: N3 x2\n"
        'Answer as JSON {"emotion": ..., "score": ...}.'
    )
    without = build_messages(prompt, JudgeRequest("a", "he smiles", None))
    assert "Body language" not in without[1]["content"]


def test_normal_answers_and_request_shape():
    answers = {0: '{"emotion": "positive", "score": 9}', 1: GOOD, 2: "Emotion: Positive, Score: 4"}
    with FakeOpenAIServer(lambda n, body: answers[int(body_index(body))]) as srv:
        judge = make(srv, seed=1234)
        batch = reqs(2, nfbl="N16 folding arms") + [
            JudgeRequest("v2", "description number 2", None)
        ]
        out = judge.judge(batch)
    got = [(j.status, j.emotion, j.confidence, j.attempts) for j in out]
    assert got == [("ok", "positive", 9, 1), ("ok", "negative", 7, 1), ("ok", "positive", 4, 1)]
    assert all(j.usage == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
               for j in out)  # fmt: skip
    assert judge.usage_total["total_tokens"] == 45
    for body in srv.requests:
        assert body["temperature"] == 0 and body["model"] == "gpt-3.5-turbo-0125"
        assert body["max_tokens"] == 64 and body["seed"] == 1234
        user = body["messages"][1]["content"]
        assert f"description number {body_index(body)}" in user
        assert ("Body language: N16 folding arms" in user) == (body_index(body) != "2")
    assert judge.deterministic and srv.auth_headers == ["Bearer EMPTY"] * 3


def test_malformed_then_good_is_reasked():
    with FakeOpenAIServer(lambda n, b: "I think they are happy" if n == 0 else GOOD) as srv:
        (j,) = make(srv, concurrency=1).judge(reqs(1))
    assert (j.status, j.emotion, j.confidence, j.attempts) == ("ok", "negative", 7, 2)
    assert j.usage["total_tokens"] == 30
    reask = srv.requests[1]["messages"]
    assert reask[-2] == {"role": "assistant", "content": "I think they are happy"}
    assert reask[-1]["role"] == "user" and "JSON" in reask[-1]["content"]


def test_always_malformed_is_unparsable_with_raw_kept():
    with FakeOpenAIServer(lambda n, b: f"no idea #{n}") as srv:
        (j,) = make(srv, parse_retries=2).judge(reqs(1))
    assert srv.count == 3  # 1 + parse_retries asks
    assert (j.status, j.emotion, j.confidence, j.attempts) == ("judge_unparsable", None, None, 3)
    assert j.raw == "no idea #2" and "cannot parse" in j.error


@pytest.mark.parametrize(
    ("form", "low", "high"), [("s", 0.05, 0.06), ("date", 2, 3), ("big", 3, 3)]
)
def test_429_honours_retry_after_capped_by_backoff_max(form, low, high):
    when = email.utils.formatdate(time.time() + 4, usegmt=True)  # HTTP date, 1 s resolution
    value = {"s": "0.05", "date": when, "big": "3600"}[form]
    script = iter([Reply(status=429, headers={"Retry-After": value}, error_type="rate")])
    sleeps: list[float] = []
    with FakeOpenAIServer(lambda n, b: next(script, GOOD)) as srv:
        # backoff_base tiny, so only Retry-After (seconds or HTTP date) explains the wait
        (j,) = make(srv, sleeps, backoff_base_s=0.001, backoff_max_s=3.0).judge(reqs(1))
    assert (j.status, j.attempts) == ("ok", 2)
    assert len(sleeps) == 1 and low <= sleeps[0] <= high


def test_500_twice_then_ok():
    sleeps: list[float] = []
    with FakeOpenAIServer(lambda n, b: Reply(status=500) if n < 2 else GOOD) as srv:
        (j,) = make(srv, sleeps, backoff_base_s=0.5, backoff_max_s=20).judge(reqs(1))
    assert (j.status, j.attempts) == ("ok", 3)
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 0.5 and 0 <= sleeps[1] <= 1.0  # full jitter


@pytest.mark.parametrize(
    ("status", "attempts", "why"),
    [(503, 3, "retries exhausted"), (400, 1, "not retryable"), (401, 1, "not"), (404, 1, "not")],
)
def test_http_errors_fail_explicitly(status, attempts, why):
    """5xx forever: max_retries + 1 attempts; other 4xx: no retry. Message and code kept."""
    with FakeOpenAIServer(lambda n, b: Reply(status=status, error_message="bad thing")) as srv:
        (j,) = make(srv, max_retries=2).judge(reqs(1))
    assert srv.count == attempts
    assert (j.status, j.emotion, j.confidence, j.attempts) == ("judge_error", None, None, attempts)
    assert str(status) in j.error and "bad thing" in j.error and why in j.error


@pytest.mark.parametrize(("slow", "status", "attempts"), [(2, "ok", 3), (99, "judge_error", 3)])
def test_timeouts_are_retried(slow, status, attempts):
    """The server sleeps 1 s for the first `slow` requests; the client gives up after 0.2 s."""
    with FakeOpenAIServer(lambda n, b: Reply(content=GOOD, delay_s=1.0 if n < slow else 0)) as srv:
        t0 = time.monotonic()
        (j,) = make(srv, timeout_s=0.2, max_retries=2).judge(reqs(1))
    assert (j.status, j.attempts) == (status, attempts) and time.monotonic() - t0 < 1.5
    if status != "ok":
        assert j.emotion is None and "timed out" in j.error and "Timeout" in j.error


def test_bounded_concurrency():
    with FakeOpenAIServer(lambda n, b: GOOD, latency_s=0.2) as srv:
        t0 = time.monotonic()
        out = make(srv, concurrency=2).judge(reqs(8))
        wall = time.monotonic() - t0
    assert all(j.status == "ok" for j in out)
    assert srv.max_in_flight == 2
    assert 0.75 <= wall < 1.6, wall  # 4 rounds x 0.2 s


def test_mixed_script_every_request_predicted_or_failed():
    # Per request (by its description number): a fixed behaviour, some needing retries.
    plan = {
        "0": [GOOD],
        "1": ['{"emotion": "positive", "score": 8}'],
        "2": [Reply(status=500), GOOD],
        "3": [Reply(status=400)],
        "4": ["garbage", "garbage", "garbage"],
        "5": ["garbage", "Emotion: Positive, Score: 6"],
        "6": [Reply(status=429, headers={"Retry-After": "0"}), GOOD],
        "7": [Reply(status=500)] * 5,
        "8": ['{"emotion": "positive", "score": 11}'] * 3,
        "9": [Reply(content=GOOD, delay_s=1.0), GOOD],
        "10": [Reply(status=200, body=b"not json at all")],
        "11": ["Emotion: positive or negative, Score: 5"] * 3,
    }
    lock, seen = threading.Lock(), {}

    def script(n, body):
        k = body_index(body)
        with lock:
            step = seen.get(k, 0)
            seen[k] = step + 1
        return plan[k][min(step, len(plan[k]) - 1)]

    with FakeOpenAIServer(script) as srv:
        out = make(srv, timeout_s=0.3, max_retries=2, parse_retries=2).judge(reqs(12))
    got = {i: (j.status, j.emotion) for i, j in enumerate(out)}
    assert got == {
        0: ("ok", "negative"), 1: ("ok", "positive"), 2: ("ok", "negative"),
        3: ("judge_error", None), 4: ("judge_unparsable", None), 5: ("ok", "positive"),
        6: ("ok", "negative"), 7: ("judge_error", None), 8: ("judge_unparsable", None),
        9: ("ok", "negative"), 10: ("judge_error", None), 11: ("judge_unparsable", None),
    }  # fmt: skip
    for j in out:
        assert (j.status == "ok") == (j.emotion is not None) == (j.confidence is not None)
        assert (j.status == "ok") == (j.error is None)


def test_api_key_sent_and_never_leaked(monkeypatch):
    secret = "sk-test-SECRET-4f2a9c"
    monkeypatch.setenv("EALD_TEST_JUDGE_KEY", secret)
    script = iter([Reply(status=401, error_message="invalid key")])
    with FakeOpenAIServer(lambda n, b: next(script, GOOD)) as srv:
        judge = make(srv, api_key_env="EALD_TEST_JUDGE_KEY")
        out = judge.judge(reqs(2))
    assert set(srv.auth_headers) == {f"Bearer {secret}"}
    assert sorted(j.status for j in out) == ["judge_error", "ok"]
    assert secret not in repr(judge)
    assert secret not in json.dumps(judge.identity())
    assert secret not in json.dumps([vars(j) for j in out])
    assert secret not in json.dumps({k: str(v) for k, v in vars(judge).items() if k != "_client"})


def test_missing_key_env_is_config_error(monkeypatch):
    monkeypatch.delenv("EALD_TEST_ABSENT_KEY", raising=False)
    with pytest.raises(JudgeConfigError, match=r"judge\.api_key_env.*EALD_TEST_ABSENT_KEY"):
        build_judge(judge_conf("http://127.0.0.1:9/v1", api_key_env="EALD_TEST_ABSENT_KEY"))


def test_on_result_called_once_per_request_with_index():
    calls: list[tuple[int, str]] = []
    with FakeOpenAIServer(lambda n, b: f'{{"emotion": "positive", "score": {n % 10 + 1}}}') as srv:
        out = make(srv, concurrency=3).judge(
            reqs(7), on_result=lambda i, j: calls.append((i, j.raw))
        )
    assert sorted(i for i, _ in calls) == list(range(7))
    assert {i: raw for i, raw in calls} == {i: j.raw for i, j in enumerate(out)}


def test_identity_and_attribute_conf():
    conf = SimpleNamespace(**judge_conf("http://u:pw@127.0.0.1:9/v1"))  # plain attribute object
    conf.prompt = SimpleNamespace(**PROMPT)
    ident = build_judge(conf).identity()
    assert ident["kind"] == "openai-chat" and ident["model"] == "gpt-3.5-turbo-0125"
    assert ident["base_url"] == "http://127.0.0.1:9/v1" and ident["temperature"] == 0.0
    assert ident["prompt"]["user"] == PROMPT["user"] and "version" in ident


def test_offline_judge():
    judge = build_judge(OmegaConf.create({"name": "offline", "model": "ignored"}))
    texts = [
        JudgeRequest("p", "He smiles broadly, laughs and looks delighted and proud.", None),
        JudgeRequest("n", "He looks sad, angry and frustrated; a terrible, awful loss.", None),
        JudgeRequest("nf", "He answers questions.", "crying, miserable, hurt"),
    ]
    calls = []
    a = judge.judge(texts, on_result=lambda i, j: calls.append(i))
    b = judge.judge(texts)
    assert [(j.status, j.emotion) for j in a] == [
        ("ok", "positive"), ("ok", "negative"), ("ok", "negative"),
    ]  # fmt: skip
    assert a[0].confidence >= 8 and a == b and calls == [0, 1, 2]
    assert json.loads(a[0].raw)["emotion"] == "positive"
    ident = judge.identity()
    assert judge.deterministic and ident["kind"] == "offline-vader" and not ident["paper_judge"]
