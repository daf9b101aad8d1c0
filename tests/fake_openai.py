"""A small fake OpenAI-compatible chat server on 127.0.0.1, shared by the tests.

    with FakeOpenAI(["first", 429, ("sleep", 1.5)], default="ok") as server:
        client = ChatClient(EndpointConfig(base_url=server.url, model="m"))
        ...
    assert server.count == 3

Every POST (``/v1/chat/completions``) is recorded in ``server.requests`` as
``{"path": ..., **json_body}`` (its headers, lower-cased, in ``server.headers``) and answered
from, in order of preference:

0. ``reject``: parameter names the server refuses the way OpenAI's reasoning models do, with a
   400 and OpenAI's own error text: ``"max_tokens"`` (whenever it is sent) and ``"temperature"``
   (whenever it is sent with a value other than 1). A rejection does not use up a script item.
1. ``script``: a list consumed one item per request:

   - a ``str`` is sent as the reply text;
   - an ``int`` is sent as that HTTP status with an OpenAI-style error body (429, 500, ...);
   - ``("status", code, headers[, message])`` is the same with extra response headers and
     optionally the error message, e.g. ``("status", 429, {"Retry-After": "1"})``;
   - ``("sleep", seconds)`` waits that long (to make the client time out) and then answers as
     if the script were empty;
   - ``("drop",)`` closes the connection without sending anything;
   - ``("truncate",)`` starts a 200 answer and closes the connection halfway through its body;
   - ``("body", text)`` sends a 200 whose body is exactly ``text`` (bad JSON, no ``choices``).
2. ``reply``: a function of the request body that returns a reply text (or an ``int`` status).
3. ``default``: a fixed reply text (or status). With ``default=None`` and no ``reply``, a request
   beyond the script gets a 500 saying the script ran out.

``delay`` (seconds) is slept before every answer. Use it as a context manager, or call
``start()`` and ``stop()`` (e.g. from a fixture).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LOCAL_NO_PROXY = "127.0.0.1,localhost"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
OPENAI_ENV_VARS = (
    "DITKIT_OPENAI_BASE_URL",
    "OPENAI_BASE_URL",
    "DITKIT_OPENAI_MODEL",
    "DITKIT_OPENAI_API_KEY",
    "OPENAI_API_KEY",
    "DITKIT_OPENAI_TIMEOUT_S",
    "DITKIT_OPENAI_MAX_RETRIES",
    "DITKIT_OPENAI_MAX_BACKOFF_S",
)

Reply = str | int
Step = Reply | tuple

# What api.openai.com answers reasoning models (o1, o3, gpt-5) for parameters they do not take.
UNSUPPORTED_MAX_TOKENS = {
    "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
    "Use 'max_completion_tokens' instead.",
    "type": "invalid_request_error",
    "param": "max_tokens",
    "code": "unsupported_parameter",
}


def unsupported_temperature(value: Any) -> dict:
    return {
        "message": f"Unsupported value: 'temperature' does not support {value} with this model. "
        "Only the default (1) value is supported.",
        "type": "invalid_request_error",
        "param": "temperature",
        "code": "unsupported_value",
    }


def bypass_proxies(monkeypatch) -> None:
    """Let requests to 127.0.0.1 reach the fake server directly, whatever proxy is configured."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", LOCAL_NO_PROXY)


def clear_openai_env(monkeypatch) -> None:
    """Remove the endpoint settings the environment could supply, so tests see only their own."""
    for name in OPENAI_ENV_VARS:
        monkeypatch.delenv(name, raising=False)


def completion(body: dict, content: str) -> dict:
    """A minimal chat.completion response body carrying ``content``."""
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
    }


class FakeOpenAI:
    """A configurable chat-completions server; see the module docstring."""

    def __init__(
        self,
        script: Iterable[Step] = (),
        *,
        reply: Callable[[dict], Reply] | None = None,
        default: Reply | None = "ok",
        delay: float = 0.0,
        reject: Iterable[str] = (),
    ):
        self.script = list(script)
        self.reply = reply
        self.default = default
        self.delay = delay
        self.reject = set(reject)
        unknown = self.reject - {"max_tokens", "temperature"}
        if unknown:
            raise ValueError(f"FakeOpenAI can reject max_tokens and temperature, not {unknown}")
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @property
    def count(self) -> int:
        """How many requests the server has received."""
        return len(self.requests)

    def _next_step(self):
        with self._lock:
            return self.script.pop(0) if self.script else None

    def _rejection(self, body: dict) -> dict | None:
        if "max_tokens" in self.reject and "max_tokens" in body:
            return UNSUPPORTED_MAX_TOKENS
        if "temperature" in self.reject and body.get("temperature", 1) != 1:
            return unsupported_temperature(body["temperature"])
        return None

    def _answer(self, body: dict) -> tuple[str, int, dict[str, str], bytes]:
        """(action, status, extra headers, body bytes); action is "send", "drop" or "truncate"."""
        error = self._rejection(body)
        if error is not None:
            return "send", 400, {}, json.dumps({"error": error}).encode()
        step = self._next_step()
        if isinstance(step, tuple) and step[0] == "sleep":  # stall, then answer as if unscripted
            time.sleep(step[1])
            step = None
        if step is None:
            if self.reply is not None:
                step = self.reply(body)
            elif self.default is not None:
                step = self.default
            else:
                error = {"message": "fake server: script exhausted"}
                return "send", 500, {}, json.dumps({"error": error}).encode()
        if self.delay:
            time.sleep(self.delay)
        if isinstance(step, int):
            step = ("status", step, {})
        if isinstance(step, tuple):
            kind, *args = step
            if kind == "drop":
                return "drop", 0, {}, b""
            if kind == "truncate":
                return "truncate", 200, {}, json.dumps(completion(body, "cut short")).encode()
            if kind == "body":
                return "send", 200, {}, args[0].encode()
            if kind != "status":
                raise ValueError(f"FakeOpenAI: unknown script step {step!r}")
            step, headers, *message = args
            error = {"message": message[0] if message else f"scripted {step}"}
            return "send", step, headers, json.dumps({"error": error}).encode()
        return "send", 200, {}, json.dumps(completion(body, step)).encode()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests.append({"path": self.path, **body})
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                action, status, headers, data = server._answer(body)
                self.close_connection = True
                if action == "drop":  # the socket closes when this handler returns
                    return
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data if action == "send" else data[: len(data) // 2])
                except OSError:  # the client gave up (timeout tests)
                    pass

        return Handler

    def start(self) -> FakeOpenAI:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port (later requests to ``url`` are refused)."""
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread = None
        self.httpd.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
