"""A small fake OpenAI-compatible chat server on 127.0.0.1, shared by the tests.

    with FakeOpenAI(["first", 429, ("sleep", 1.5)], default="ok") as server:
        client = ChatClient(EndpointConfig(base_url=server.url, model="m"))
        ...
    assert server.count == 3

Every POST (``/v1/chat/completions``) is recorded in ``server.requests`` as
``{"path": ..., **json_body}`` and answered from, in order of preference:

1. ``script``: a list consumed one item per request. A ``str`` is sent as the reply text, an
   ``int`` is sent as that HTTP status with an OpenAI-style error body (429, 500, ...), and
   ``("sleep", seconds)`` waits that long (to make the client time out) and then answers as if
   the script were empty.
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
)

Reply = str | int


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
        script: Iterable[Reply | tuple[str, float]] = (),
        *,
        reply: Callable[[dict], Reply] | None = None,
        default: Reply | None = "ok",
        delay: float = 0.0,
    ):
        self.script = list(script)
        self.reply = reply
        self.default = default
        self.delay = delay
        self.requests: list[dict[str, Any]] = []
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

    def _answer(self, body: dict) -> tuple[int, dict]:
        step = self._next_step()
        if isinstance(step, tuple):  # ("sleep", seconds): stall, then answer as if unscripted
            time.sleep(step[1])
            step = None
        if step is None:
            if self.reply is not None:
                step = self.reply(body)
            elif self.default is not None:
                step = self.default
            else:
                return 500, {"error": {"message": "fake server: script exhausted"}}
        if self.delay:
            time.sleep(self.delay)
        if isinstance(step, int):
            return step, {"error": {"message": f"scripted {step}"}}
        return 200, completion(body, step)

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests.append({"path": self.path, **body})
                status, payload = server._answer(body)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
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
