"""ChatClient against a real OpenAI-style HTTP server on 127.0.0.1: retries, timeouts, cache."""

from __future__ import annotations

import json
import re
import time

import pytest

from ditkit.errors import ConfigError, RemoteError
from ditkit.openai_compat import DUMMY_API_KEY, ChatClient, EndpointConfig
from fake_openai import FakeOpenAI, bypass_proxies, clear_openai_env


@pytest.fixture(autouse=True)
def _no_proxy_or_env(monkeypatch):
    clear_openai_env(monkeypatch)
    bypass_proxies(monkeypatch)


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
    with FakeOpenAI(["volcanoes"]) as server:
        client = make_client(server)
        assert client.complete(MSG, temperature=0.0, max_tokens=7, seed=3) == "volcanoes"
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["model"] == "fake-judge"
    assert req["messages"] == MSG
    assert (req["max_tokens"], req["seed"], req["temperature"]) == (7, 3, 0.0)


def test_429_then_success_is_retried():
    with FakeOpenAI([429, "fine"]) as server:
        client = make_client(server)
        assert client.complete(MSG) == "fine"
    assert len(server.requests) == 2
    assert (client.calls, client.requests) == (1, 2)


def test_5xx_until_the_last_try_raises_remote_error_naming_the_url():
    with FakeOpenAI([503, 500, 502]) as server:
        client = make_client(server, max_retries=2)
        with pytest.raises(RemoteError) as err:
            client.complete(MSG)
    assert server.url in str(err.value)
    assert "InternalServerError" in str(err.value)
    assert len(server.requests) == 3


def test_client_error_is_not_retried():
    with FakeOpenAI([404]) as server:
        client = make_client(server)
        with pytest.raises(RemoteError, match="rejected"):
            client.complete(MSG)
    assert len(server.requests) == 1


def test_timeout_is_retried_then_raises():
    with FakeOpenAI([("sleep", 1.5), ("sleep", 1.5)]) as server:
        client = make_client(server, timeout_s=0.3, max_retries=1)
        start = time.monotonic()
        with pytest.raises(RemoteError, match="Timeout"):
            client.complete(MSG)
        assert time.monotonic() - start < 1.4
    assert client.requests == 2


def test_connection_refused_raises_remote_error():
    with FakeOpenAI() as server:
        url = server.url
    client = ChatClient(EndpointConfig(base_url=url, model="m", max_retries=1, backoff_s=0.01))
    with pytest.raises(RemoteError, match=re.escape(url)):
        client.complete(MSG)
    assert client.requests == 2


def test_cache_answers_a_repeat_without_the_server(tmp_path):
    cache = tmp_path / "cache"
    with FakeOpenAI(["first", "second"]) as server:
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
