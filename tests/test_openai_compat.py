"""ChatClient against a real OpenAI-style HTTP server on 127.0.0.1.

Retries (timeouts, dropped connections, 5xx, 429 with Retry-After: the openai client's; malformed
replies: ditkit's), jittered backoff, errors that say how to fix them, reasoning-model parameter
fallbacks and the reply cache.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import time
from datetime import UTC, datetime, timedelta

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
LOGGER = "ditkit.openai_compat"


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


@pytest.mark.parametrize(
    "field,value",
    [("timeout_s", 0), ("max_retries", -1), ("backoff_s", -1), ("max_backoff_s", -1)],
)
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


# --- what is retried --------------------------------------------------------------------------


def test_429_then_success_is_retried():
    with FakeOpenAI([429, "fine"]) as server:
        client = make_client(server)
        assert client.complete(MSG) == "fine"
    assert len(server.requests) == 2
    assert (client.calls, client.requests) == (1, 2)


def _client_retries(server):
    """The openai client's own x-stainless-retry-count of each request: always 0, since every
    retry is ditkit's (the client runs with max_retries=0)."""
    return [int(h["x-stainless-retry-count"]) for h in server.headers]


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured_then_succeeds(status, caplog):
    with (
        caplog.at_level(logging.WARNING, logger=LOGGER),
        FakeOpenAI([("status", status, {"Retry-After": "0.2"}), "fine"]) as server,
    ):
        client = make_client(server)
        start = time.monotonic()
        assert client.complete(MSG) == "fine"
        waited = time.monotonic() - start
    assert 0.19 <= waited < 3  # the server's 0.2 s, not backoff_s (0.01 s)
    assert _client_retries(server) == [0, 0]  # two attempts, both ditkit's
    assert (client.calls, client.requests) == (1, 2)
    (warning,) = _warnings(caplog, "retry 1/5")
    assert f"HTTP {status}" in warning.getMessage()
    assert "Retry-After: 0.2 s" in warning.getMessage()


def test_retry_after_ms_is_honoured():
    with FakeOpenAI([("status", 429, {"retry-after-ms": "300"}), "fine"]) as server:
        client = make_client(server)
        start = time.monotonic()
        assert client.complete(MSG) == "fine"
        waited = time.monotonic() - start
    assert 0.29 <= waited < 3
    assert server.count == 2


def test_5xx_are_retried():
    with FakeOpenAI([500, 502, 503, "fine"]) as server:
        client = make_client(server, max_retries=3)
        assert client.complete(MSG) == "fine"
    assert server.count == client.requests == 4


@pytest.mark.parametrize("max_retries", [0, 2])
def test_5xx_until_the_last_try_raises_remote_error_naming_url_model_attempts(max_retries):
    with FakeOpenAI(default=503) as server:
        client = make_client(server, max_retries=max_retries)
        with pytest.raises(RemoteError) as err:
            client.complete(MSG)
    attempts = max_retries + 1
    assert server.count == client.requests == attempts
    msg = str(err.value)
    assert server.url in msg and "'fake-judge'" in msg
    assert f"all {attempts} attempt" in msg
    assert "HTTP 503: scripted 503" in msg and "check its logs" in msg


def test_rate_limit_until_the_last_try_names_retry_after_and_the_fix():
    with FakeOpenAI([("status", 429, {"Retry-After": "0"})] * 2, default=None) as server:
        client = make_client(server, max_retries=1)
        with pytest.raises(RemoteError) as err:
            client.complete(MSG)
    assert server.count == client.requests == 2
    msg = str(err.value)
    assert "all 2 attempts" in msg and "HTTP 429: scripted 429 (Retry-After: 0)" in msg
    assert "kept rate-limiting" in msg and "DITKIT_OPENAI_MAX_BACKOFF_S" in msg


def test_x_should_retry_false_is_not_retried():
    with FakeOpenAI([("status", 503, {"x-should-retry": "false"}), "never sent"]) as server:
        client = make_client(server)
        with pytest.raises(RemoteError) as err:
            client.complete(MSG)
    assert server.count == 1
    msg = str(err.value)
    assert "all 1 attempt " in msg and "x-should-retry: false" in msg


@pytest.mark.parametrize(
    "status,fix",
    [
        (400, "retrying cannot help"),
        (401, "DITKIT_OPENAI_API_KEY"),
        (404, "base URL ends with /v1"),
    ],
)
def test_client_errors_are_not_retried_and_say_how_to_fix(status, fix):
    with FakeOpenAI([status, "never sent"]) as server:
        client = make_client(server)
        with pytest.raises(RemoteError) as err:
            client.complete(MSG)
    assert server.count == 1
    msg = str(err.value)
    assert "rejected" in msg and f"HTTP {status}" in msg and fix in msg
    assert server.url in msg and "'fake-judge'" in msg


def test_timeout_is_retried_then_raises_naming_the_fix():
    with FakeOpenAI([("sleep", 1.5), ("sleep", 1.5)]) as server:
        client = make_client(server, timeout_s=0.3, max_retries=1)
        start = time.monotonic()
        with pytest.raises(RemoteError) as err:
            client.complete(MSG)
        assert time.monotonic() - start < 1.4
    assert client.requests == 2
    msg = str(err.value)
    assert server.url in msg and "'fake-judge'" in msg and "all 2 attempts" in msg
    assert "timeout_s=0.3" in msg and "DITKIT_OPENAI_TIMEOUT_S" in msg


def test_timeout_then_success_is_retried():
    with FakeOpenAI([("sleep", 1.5), "fine"]) as server:
        client = make_client(server, timeout_s=0.3)
        assert client.complete(MSG) == "fine"
    assert client.requests == 2


def test_connection_refused_raises_remote_error():
    with FakeOpenAI() as server:
        url = server.url
    client = ChatClient(EndpointConfig(base_url=url, model="m", max_retries=1, backoff_s=0.01))
    with pytest.raises(RemoteError, match=re.escape(url)) as err:
        client.complete(MSG)
    assert client.requests == 2
    assert "reachable at this URL" in str(err.value)


def test_dropped_and_truncated_connections_are_retried():
    with FakeOpenAI([("drop",), ("truncate",), ("drop",), "fine"]) as server:
        client = make_client(server, max_retries=3)
        assert client.complete(MSG) == "fine"
    assert server.count == client.requests == 4


MALFORMED = [
    "{not json",
    "<html><body>502 Bad Gateway</body></html>",
    json.dumps({"id": "x", "object": "chat.completion"}),  # no choices
    json.dumps({"choices": []}),
    json.dumps({"choices": [{"message": "hi"}]}),
    json.dumps({"choices": [{"message": {"content": ["not", "text"]}}]}),
    json.dumps([1, 2]),
]


def test_malformed_replies_are_retried():
    with FakeOpenAI([("body", b) for b in MALFORMED] + ["fine"]) as server:
        client = make_client(server, max_retries=len(MALFORMED), max_backoff_s=0.02)
        assert client.complete(MSG) == "fine"
    assert server.count == client.requests == len(MALFORMED) + 1


def test_malformed_replies_and_http_errors_share_one_budget():
    script = [503, ("body", "{not json"), 503, "fine"]
    with FakeOpenAI(script) as server:
        client = make_client(server, max_retries=3)
        assert client.complete(MSG) == "fine"
    assert server.count == client.requests == 4  # 503, bad 200, 503, the reply
    with FakeOpenAI(script) as server:
        client = make_client(server, max_retries=2)
        with pytest.raises(RemoteError) as err:
            client.complete(MSG)
    assert server.count == client.requests == 3  # not 3 more after ditkit's resend
    assert "all 3 attempts" in str(err.value) and "HTTP 503" in str(err.value)


@pytest.mark.parametrize("body", MALFORMED)
def test_malformed_replies_until_the_last_try_raise_remote_error(body, tmp_path):
    with FakeOpenAI([("body", body)] * 2 + ["not reached"]) as server:
        client = make_client(server, max_retries=1, cache_dir=str(tmp_path))
        with pytest.raises(RemoteError) as err:
            client.complete(MSG)
    assert server.count == 2
    msg = str(err.value)
    assert server.url in msg and "all 2 attempts" in msg and "malformed reply" in msg
    assert "OpenAI-compatible /v1 endpoint" in msg
    assert not list(tmp_path.glob("*.json"))  # nothing cached


def test_empty_content_is_an_empty_reply_not_an_error():
    body = {"choices": [{"message": {"content": None}, "finish_reason": "length"}]}
    with FakeOpenAI([("body", json.dumps(body))]) as server:
        assert make_client(server).complete(MSG) == ""
    assert server.count == 1


# --- how long it waits -----------------------------------------------------------------------


def test_retry_after_seconds_is_honoured_instead_of_the_backoff():
    with FakeOpenAI([("status", 429, {"Retry-After": "1"}), "fine"]) as server:
        client = make_client(server, backoff_s=0.01)
        start = time.monotonic()
        assert client.complete(MSG) == "fine"
        waited = time.monotonic() - start
    assert 0.95 <= waited < 5
    assert server.count == 2


def _http_date_in(seconds: float) -> str:
    return email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), usegmt=True)


@pytest.mark.parametrize("retry_after", ["3600", _http_date_in(3600)], ids=["seconds", "date"])
def test_huge_retry_after_is_capped_by_max_backoff_s(retry_after):
    # Without Retry-After the wait would be about backoff_s (0.01 s); a huge one waits the cap
    # (the openai client alone would not retry a Retry-After over two minutes at all).
    with FakeOpenAI([("status", 503, {"Retry-After": retry_after}), "fine"]) as server:
        client = make_client(server, backoff_s=0.01, max_backoff_s=0.3)
        start = time.monotonic()
        assert client.complete(MSG) == "fine"
        waited = time.monotonic() - start
    assert 0.29 <= waited < 3


def test_backoff_is_exponential_jittered_bounded_and_seedable():
    cfg = EndpointConfig(base_url="http://127.0.0.1:9/v1", model="m", backoff_s=1, max_backoff_s=10)
    client = ChatClient(cfg, rng=random.Random(7))
    delays = [client.retry_delay(k) for k in range(1, 9)]
    for k, delay in enumerate(delays, start=1):
        base = 2.0 ** (k - 1)
        assert min(0.5 * base, 10) <= delay <= min(1.5 * base, 10)
    assert delays[-1] == 10  # 128 s un-capped
    assert len({d / 2.0**k for k, d in enumerate(delays[:4])}) == 4  # jittered, not fixed
    again = ChatClient(cfg, rng=random.Random(7))
    assert [again.retry_delay(k) for k in range(1, 9)] == delays
    assert client.retry_delay(1, retry_after=3) == 3
    assert client.retry_delay(1, retry_after=1e6) == 10


class _TopOfRange(random.Random):
    def uniform(self, a, b):
        return b


def test_retries_sleep_the_jittered_delay(caplog):
    # backoff_s=0.2 with the jitter factor forced to its top (1.5): the retry waits 0.3 s.
    with caplog.at_level(logging.WARNING, logger=LOGGER), FakeOpenAI([503, "fine"]) as server:
        client = ChatClient(
            EndpointConfig(base_url=server.url, model="m", backoff_s=0.2), rng=_TopOfRange()
        )
        start = time.monotonic()
        assert client.complete(MSG) == "fine"
        assert time.monotonic() - start >= 0.29
    (warning,) = _warnings(caplog, "retry 1/5")
    assert "HTTP 503" in warning.getMessage() and "in 0.30 s" in warning.getMessage()
    assert _client_retries(server) == [0, 0]


# --- reasoning models ------------------------------------------------------------------------


def _warnings(caplog, word):
    return [r for r in caplog.records if r.levelno == logging.WARNING and word in r.getMessage()]


def test_model_rejecting_max_tokens_gets_max_completion_tokens(caplog):
    with (
        caplog.at_level(logging.WARNING, logger=LOGGER),
        FakeOpenAI(reject=["max_tokens"]) as server,
    ):
        client = make_client(server)
        assert client.complete(MSG, max_tokens=7, temperature=0.0) == "ok"
        assert server.count == 2
        rejected, accepted = server.requests
        assert rejected["max_tokens"] == 7
        assert "max_tokens" not in accepted and accepted["max_completion_tokens"] == 7
        assert accepted["temperature"] == 0.0
        # Remembered: the next request goes straight with the right parameter.
        assert client.complete(MSG, max_tokens=9) == "ok"
        assert server.count == 3
        assert server.requests[-1]["max_completion_tokens"] == 9
    assert len(_warnings(caplog, "max_completion_tokens")) == 1


def test_model_rejecting_temperature_gets_none(caplog):
    with (
        caplog.at_level(logging.WARNING, logger=LOGGER),
        FakeOpenAI(reject=["temperature"]) as server,
    ):
        client = make_client(server)
        assert client.complete(MSG, temperature=0.0, max_tokens=5) == "ok"
        assert server.count == 2
        rejected, accepted = server.requests
        assert rejected["temperature"] == 0.0
        assert "temperature" not in accepted and accepted["max_tokens"] == 5
        assert client.complete(MSG, temperature=0.7) == "ok"
        assert server.count == 3
        assert "temperature" not in server.requests[-1]
    assert len(_warnings(caplog, "temperature")) == 1


def test_parameter_fallbacks_keep_the_logical_cache_key(tmp_path):
    cache = str(tmp_path / "cache")
    with FakeOpenAI(reject=["max_tokens", "temperature"]) as server:
        client = make_client(server, cache_dir=cache)
        assert client.complete(MSG, temperature=0.0, max_tokens=5, seed=1) == "ok"
        assert server.count == 3  # max_tokens refused, then temperature refused, then accepted
        last = server.requests[-1]
        assert last["max_completion_tokens"] == 5 and "temperature" not in last
        (record,) = [json.loads(f.read_text()) for f in (tmp_path / "cache").glob("*.json")]
        assert record["request"]["max_tokens"] == 5 and record["request"]["temperature"] == 0.0
        # A fresh client (which has learnt nothing yet) finds the same entry: no request.
        rerun = make_client(server, cache_dir=cache)
        assert rerun.complete(MSG, temperature=0.0, max_tokens=5, seed=1) == "ok"
        assert (rerun.cache_hits, rerun.requests, server.count) == (1, 0, 3)


def test_other_400s_mentioning_max_tokens_are_not_mistaken_for_unsupported():
    too_long = "This model's maximum context length is 4096 tokens; lower max_tokens."
    with FakeOpenAI([("status", 400, {}, too_long), "never sent"]) as server:
        client = make_client(server)
        with pytest.raises(RemoteError, match="maximum context length"):
            client.complete(MSG)
    assert server.count == 1
    assert "max_completion_tokens" not in server.requests[0]


# --- the cache -------------------------------------------------------------------------------


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


def _echo(body):
    return "re: " + body["messages"][-1]["content"]


def test_restart_with_a_fresh_client_requests_nothing_already_cached(tmp_path):
    prompts = [[{"role": "user", "content": f"question {i}"}] for i in range(3)]
    with FakeOpenAI(reply=_echo) as server:
        first = make_client(server, cache_dir=str(tmp_path))
        replies = [first.complete(p, temperature=0.7, max_tokens=16) for p in prompts]
        assert server.count == 3
        restarted = make_client(server, cache_dir=str(tmp_path))  # a new process, same cache
        assert [restarted.complete(p, temperature=0.7, max_tokens=16) for p in prompts] == replies
        assert server.count == 3  # the live server was not asked again
        assert (restarted.calls, restarted.cache_hits, restarted.requests) == (3, 3, 0)
        new = [{"role": "user", "content": "question 3"}]
        assert restarted.complete(new, temperature=0.7, max_tokens=16) == "re: question 3"
        assert server.count == 4


def test_request_limits_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("DITKIT_OPENAI_TIMEOUT_S", "2.5")
    monkeypatch.setenv("DITKIT_OPENAI_MAX_RETRIES", "1")
    cfg = EndpointConfig(base_url="http://h/v1", model="m").resolve()
    assert (cfg.timeout_s, cfg.max_retries, cfg.max_backoff_s) == (2.5, 1, 60.0)
    monkeypatch.setenv("DITKIT_OPENAI_MAX_RETRIES", "many")
    with pytest.raises(ConfigError, match="DITKIT_OPENAI_MAX_RETRIES='many' is not an integer"):
        EndpointConfig(base_url="http://h/v1", model="m").resolve()
    monkeypatch.setenv("DITKIT_OPENAI_MAX_RETRIES", "-1")
    with pytest.raises(ConfigError, match="max_retries must be >= 0"):
        EndpointConfig(base_url="http://h/v1", model="m").resolve()
