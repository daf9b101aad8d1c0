"""ChatClient against a real OpenAI-style HTTP server on 127.0.0.1: retries, timeouts, cache."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ditkit.errors import ConfigError, RemoteError
from ditkit.openai_compat import DUMMY_API_KEY, ChatClient, EndpointConfig


class FakeServer:
    """Answers chat completions from a script: each item is a reply text, an int HTTP status,
    or ("sleep", seconds); when the script runs out, `default` is sent."""

    def __init__(self, script=(), default="ok"):
        self.script = list(script)
        self.default = default
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, **body})
                step = server.script.pop(0) if server.script else server.default
                if isinstance(step, tuple):
                    time.sleep(step[1])
                    step = server.default
                if isinstance(step, int):
                    payload, status = {"error": {"message": f"scripted {step}"}}, step
                else:
                    status = 200
                    payload = {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": step},
                                "finish_reason": "stop",
                            }
                        ],
                    }
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout test)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def _no_proxy_or_env(monkeypatch):
    for name in ("DITKIT_OPENAI_BASE_URL", "OPENAI_BASE_URL", "DITKIT_OPENAI_MODEL"):
        monkeypatch.delenv(name, raising=False)
    for name in ("DITKIT_OPENAI_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def make_client(server, **kw):
    kw.setdefault("backoff_s", 0.01)
    return ChatClient(EndpointConfig(base_url=server.url, model="fake-judge", **kw))


MSG = [{"role": "user", "content": "hello"}]


def test_resolve_reads_env_and_names_missing_settings(monkeypatch):
    with pytest.raises(ConfigError, match="DITKIT_OPENAI_BASE_URL"):
        EndpointConfig(model="m").resolve()
    with pytest.raises(ConfigError, match="DITKIT_OPENAI_MODEL"):
        EndpointConfig(base_url="http://h/v1").resolve()
    monkeypatch.setenv("OPENAI_BASE_URL", "http://fallback/v1/")
    monkeypatch.setenv("DITKIT_OPENAI_MODEL", "qwen")
    cfg = EndpointConfig().resolve()
    assert (cfg.base_url, cfg.model, cfg.api_key) == ("http://fallback/v1", "qwen", DUMMY_API_KEY)
    monkeypatch.setenv("DITKIT_OPENAI_BASE_URL", "http://preferred/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    cfg = EndpointConfig().resolve()
    assert (cfg.base_url, cfg.api_key) == ("http://preferred/v1", "sk-test")
    assert EndpointConfig(base_url="http://explicit/v1").resolve().base_url == "http://explicit/v1"


@pytest.mark.parametrize("field,value", [("timeout_s", 0), ("max_retries", -1), ("backoff_s", -1)])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        EndpointConfig(**{field: value})


def test_complete_sends_the_request_and_returns_the_reply():
    with FakeServer(["volcanoes"]) as server:
        client = make_client(server)
        assert client.complete(MSG, temperature=0.0, max_tokens=7, seed=3) == "volcanoes"
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["model"] == "fake-judge"
    assert req["messages"] == MSG
    assert (req["max_tokens"], req["seed"], req["temperature"]) == (7, 3, 0.0)


def test_429_then_success_is_retried():
    with FakeServer([429, "fine"]) as server:
        client = make_client(server)
        assert client.complete(MSG) == "fine"
    assert len(server.requests) == 2
    assert (client.calls, client.requests) == (1, 2)


def test_5xx_until_the_last_try_raises_remote_error_naming_the_url():
    with FakeServer([503, 500, 502]) as server:
        client = make_client(server, max_retries=2)
        with pytest.raises(RemoteError) as err:
            client.complete(MSG)
    assert server.url in str(err.value)
    assert "InternalServerError" in str(err.value)
    assert len(server.requests) == 3


def test_client_error_is_not_retried():
    with FakeServer([404]) as server:
        client = make_client(server)
        with pytest.raises(RemoteError, match="rejected"):
            client.complete(MSG)
    assert len(server.requests) == 1


def test_timeout_is_retried_then_raises():
    with FakeServer([("sleep", 1.5), ("sleep", 1.5)]) as server:
        client = make_client(server, timeout_s=0.3, max_retries=1)
        start = time.monotonic()
        with pytest.raises(RemoteError, match="Timeout"):
            client.complete(MSG)
        assert time.monotonic() - start < 1.4
    assert client.requests == 2


def test_connection_refused_raises_remote_error():
    with FakeServer() as server:
        url = server.url
    client = ChatClient(EndpointConfig(base_url=url, model="m", max_retries=1, backoff_s=0.01))
    with pytest.raises(RemoteError, match=re.escape(url)):
        client.complete(MSG)
    assert client.requests == 2


def test_cache_answers_a_repeat_without_the_server(tmp_path):
    cache = tmp_path / "cache"
    with FakeServer(["first", "second"]) as server:
        client = make_client(server, cache_dir=str(cache))
        assert client.complete(MSG, seed=1) == "first"
        assert client.complete(MSG, seed=1) == "first"
        assert client.cache_hits == 1
        assert len(server.requests) == 1
        # A different request parameter is a different cache entry.
        assert client.complete(MSG, seed=2) == "second"
        assert len(server.requests) == 2
    files = sorted(cache.glob("*.json"))
    assert len(files) == 2
    assert not list(cache.glob("*.tmp"))
    record = json.loads(files[0].read_text())
    assert record["reply"] in {"first", "second"}
    # A new client (a rerun) reads the same cache; the server is gone, so a miss would fail.
    rerun = ChatClient(
        EndpointConfig(base_url=server.url, model="fake-judge", cache_dir=str(cache))
    )
    assert rerun.complete(MSG, seed=1) == "first"
    assert (rerun.cache_hits, rerun.requests) == (1, 0)
