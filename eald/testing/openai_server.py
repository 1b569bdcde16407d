"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests (no mocks of the client).

`FakeOpenAIServer(script)` serves POST /v1/chat/completions (and GET /v1/models). For the n-th
request (0-based, in arrival order) `script(n, body)` returns a `Reply` (or a plain string, short
for `Reply(content=...)`) that says what to answer: normal content, an HTTP error with headers,
a malformed body, or a delay longer than the client's timeout. Message content is passed through
untouched, so it also stands in for a multimodal backbone endpoint (content as a list of parts).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    content: str | None = "ok"  # assistant message content for a 200
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    error_message: str = "fake error"
    error_type: str = "server_error"
    delay_s: float = 0.0  # sleep before answering (e.g. longer than the client's timeout)
    usage: dict[str, int] | None = field(
        default_factory=lambda: {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    )
    body: bytes | None = None  # raw body override (malformed JSON etc.)


Script = Callable[[int, dict[str, Any]], "Reply | str"]


class FakeOpenAIServer:
    """Threaded HTTP server in a daemon thread; use as a context manager."""

    def __init__(self, script: Script, latency_s: float = 0.0, keep: bool = True) -> None:
        self.script = script
        self.latency_s = latency_s
        self.keep = keep  # False: bodies are not kept (long benchmark runs), only counted
        self.requests: list[dict[str, Any]] = []
        self.auth_headers: list[str | None] = []
        self.paths: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()  # wakes handlers sleeping in a delay on shutdown
        self._ids = itertools.count()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        # A short poll interval keeps shutdown() fast (it waits for the next poll).
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def start(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._closing.wait(seconds)

    def _completion(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": f"chatcmpl-fake-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake-model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.content},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
        }
        if reply.usage is not None:
            out["usage"] = reply.usage
        return out

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like real servers
            # One buffered write per response and no Nagle: avoids a ~40 ms delayed-ACK stall
            # per request that separate header/body writes cause on keep-alive connections.
            wbufsize = -1
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                pass

            def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up (timeout): fine

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    data = {"object": "list", "data": [{"id": "fake-model", "object": "model"}]}
                    self._send(200, json.dumps(data).encode(), {})
                else:
                    self._send(404, b'{"error": {"message": "not found"}}', {})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if len(raw) < length:  # the client died mid-send: not a request, nothing to answer
                    self.close_connection = True
                    return
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, b'{"error": {"message": "not found"}}', {})
                    return
                body = json.loads(raw or b"{}")
                with server._lock:
                    n = len(server.requests)
                    server.requests.append(body if server.keep else {})
                    server.auth_headers.append(self.headers.get("Authorization"))
                    server.paths.append(self.path)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    reply = server.script(n, body)
                    if isinstance(reply, str):
                        reply = Reply(content=reply)
                    server._wait(server.latency_s + reply.delay_s)
                finally:
                    with server._lock:
                        server.in_flight -= 1
                if reply.body is not None:
                    payload = reply.body
                elif reply.status == 200:
                    payload = json.dumps(server._completion(body, reply)).encode()
                else:
                    err = {"message": reply.error_message, "type": reply.error_type, "code": None}
                    payload = json.dumps({"error": err}).encode()
                self._send(reply.status, payload, reply.headers)

        return Handler


def answer_by_kind(n: int, body: dict[str, Any]) -> str:
    """A judge-style JSON verdict for text-only requests, a description for multimodal ones."""
    if isinstance(body["messages"][-1]["content"], str):
        return '{"emotion": "positive", "score": 7}'
    return "The speaker seems calm and satisfied."


def main(argv: list[str] | None = None) -> int:
    """``python -m eald.testing.openai_server [LATENCY_S]``: serve in this process (as a real
    server would run: apart from the client) until stdin closes; prints the base URL first."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    with FakeOpenAIServer(answer_by_kind, latency_s=float(args[0]) if args else 0.0,
                          keep=False) as srv:  # fmt: skip
        print(srv.base_url, flush=True)
        sys.stdin.read()  # until the parent closes it (or dies)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
