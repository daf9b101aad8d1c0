"""A small client for any OpenAI-compatible chat server (vLLM, Ollama, llama.cpp, hosted APIs).

The `openai` package sends each request (its own retries off); `tenacity` retries them; this
module adds what evaluation needs on top (docs/design.md, "What we wrote ourselves, and why"):

- settings from flags or environment variables (`EndpointConfig`);
- what is retried: timeouts, refused or dropped connections, truncated replies, HTTP
  408/409/429/5xx (unless the server sends `x-should-retry: false`), and a 200 whose body is not
  a chat completion, all from one budget of `max_retries` per request;
- the waits: the server's `Retry-After` / `retry-after-ms` when it sends one, else
  `backoff_s * 2**(k-1)` times a random factor in [0.5, 1.5] before retry k, never more than
  `max_backoff_s`;
- `RemoteError`s that name the endpoint and the fix: at once for other HTTP errors (400, 401,
  404, ...), and after the last retry;
- reasoning models that refuse `max_tokens` or a non-default `temperature` (OpenAI's o-series and
  gpt-5 answer 400 "Unsupported parameter"): ditkit resends with `max_completion_tokens`, or
  without `temperature`, and keeps doing so for the rest of its life;
- an on-disk cache of replies, keyed on the logical request (never on the adjustments above), so
  that rerunning an evaluation never pays for a request twice.
"""

from __future__ import annotations

import dataclasses
import email.utils
import hashlib
import json
import logging
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ditkit.errors import ConfigError, RemoteError
from ditkit.files import write_json

log = logging.getLogger(__name__)

# Local servers ignore the key, but the openai client refuses to start without one.
DUMMY_API_KEY = "not-needed"


def _first_env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


@dataclass
class EndpointConfig:
    """Where and how to reach an OpenAI-compatible server.

    Blank fields are filled by `resolve()` from the environment: `DITKIT_OPENAI_BASE_URL`
    (else `OPENAI_BASE_URL`), `DITKIT_OPENAI_MODEL`, `DITKIT_OPENAI_API_KEY` (else
    `OPENAI_API_KEY`, else a dummy key, which local servers accept). `DITKIT_OPENAI_TIMEOUT_S`,
    `DITKIT_OPENAI_MAX_RETRIES` and `DITKIT_OPENAI_MAX_BACKOFF_S`, when set, override the limits.

    `timeout_s` bounds each HTTP request; a failed request is retried up to `max_retries` times
    (by the openai client, or by ditkit for a malformed reply), waiting about `backoff_s`, then
    twice that, and so on (jittered), or what the server's `Retry-After` asks, but never more
    than `max_backoff_s` seconds.
    """

    base_url: str | None = None
    model: str | None = None
    api_key: str | None = None
    timeout_s: float = 60
    max_retries: int = 5
    backoff_s: float = 1.0
    cache_dir: str | None = None
    max_backoff_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ConfigError(f"EndpointConfig.timeout_s must be > 0 seconds, got {self.timeout_s}")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise ConfigError(
                f"EndpointConfig.max_retries must be an integer >= 0, got {self.max_retries!r}"
            )
        if self.max_retries < 0:
            raise ConfigError(f"EndpointConfig.max_retries must be >= 0, got {self.max_retries}")
        if self.backoff_s < 0:
            raise ConfigError(
                f"EndpointConfig.backoff_s must be >= 0 seconds, got {self.backoff_s}"
            )
        if not self.max_backoff_s >= 0:
            raise ConfigError(
                f"EndpointConfig.max_backoff_s must be >= 0 seconds, got {self.max_backoff_s}"
            )

    def resolve(self) -> EndpointConfig:
        """A copy with blanks filled from the environment; ConfigError if still incomplete."""
        base_url = self.base_url or _first_env("DITKIT_OPENAI_BASE_URL", "OPENAI_BASE_URL")
        model = self.model or _first_env("DITKIT_OPENAI_MODEL")
        api_key = self.api_key or _first_env("DITKIT_OPENAI_API_KEY", "OPENAI_API_KEY")
        if not base_url:
            raise ConfigError(
                "No OpenAI-compatible server URL: pass a base URL (e.g. --judge-base-url "
                "http://127.0.0.1:8000/v1) or set DITKIT_OPENAI_BASE_URL (or OPENAI_BASE_URL)."
            )
        if not model:
            raise ConfigError(
                f"No model name for the server at {base_url}: pass one (e.g. --judge-model) "
                "or set DITKIT_OPENAI_MODEL."
            )
        limits = {}
        for field_name, env, kind in _ENV_LIMITS:
            raw = _first_env(env)
            if raw is not None:
                try:
                    limits[field_name] = kind(raw)
                except ValueError:
                    raise ConfigError(
                        f"{env}={raw!r} is not {'an integer' if kind is int else 'a number'}; "
                        f"e.g. {env}="
                        f"{getattr(EndpointConfig, field_name)}"
                    ) from None
        return dataclasses.replace(
            self,
            base_url=base_url.rstrip("/"),
            model=model,
            api_key=api_key or DUMMY_API_KEY,
            **limits,
        )

    def describe(self) -> dict[str, str | None]:
        """The fields worth recording next to results (never the API key)."""
        return {"base_url": self.base_url, "model": self.model}


# Environment variables that override the request limits (for every server ditkit talks to).
_ENV_LIMITS = (
    ("timeout_s", "DITKIT_OPENAI_TIMEOUT_S", float),
    ("max_retries", "DITKIT_OPENAI_MAX_RETRIES", int),
    ("max_backoff_s", "DITKIT_OPENAI_MAX_BACKOFF_S", float),
)

# Markers of a "this model does not take that parameter" 400 (OpenAI, vLLM, LiteLLM wordings).
_UNSUPPORTED = ("unsupported", "not supported", "does not support")

_STATUS_FIXES = {
    401: "set DITKIT_OPENAI_API_KEY (or OPENAI_API_KEY) to a key this server accepts",
    403: "the API key may not use this model: check DITKIT_OPENAI_API_KEY and the model name",
    404: "check that the base URL ends with /v1 (e.g. http://127.0.0.1:8000/v1) and that the "
    "model name is one the server serves (GET <base URL>/models lists them)",
}
_OTHER_4XX_FIX = (
    "retrying cannot help; check the model name and the generation settings (max_tokens, "
    "temperature) against what the server accepts"
)


def _retryable_status(status: int) -> bool:
    """Whether the openai client retries this status (so a final one means "gave up")."""
    return status in (408, 409, 429) or status >= 500


class _BadReply(Exception):
    """A 200 answer whose body is not a chat completion (retried like a dropped connection)."""


def _snippet(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _parse_reply(body: str) -> tuple[str, Any]:
    """(reply text, finish_reason) from a chat.completion body; `_BadReply` if it is not one."""
    try:
        data = json.loads(body)
    except ValueError:
        raise _BadReply(f"the body is not JSON: {_snippet(body)}") from None
    try:
        choice = data["choices"][0]
        content = choice["message"].get("content")
        finish = choice.get("finish_reason")
    except (TypeError, KeyError, IndexError, AttributeError):
        raise _BadReply(
            f"the JSON is not a chat completion (no choices[0].message): {_snippet(body)}"
        ) from None
    if content is not None and not isinstance(content, str):
        raise _BadReply(f"choices[0].message.content is not text: {_snippet(body)}")
    return content or "", finish


def _server_message(exc: Any) -> str:
    """The error text the server sent with an HTTP error."""
    body = exc.body
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return _snippet(exc.response.text) if exc.response.text else "(no message)"


def _retryable(exc: BaseException) -> bool:
    """Whether a failed attempt is worth another (see the module docstring)."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        return _retryable_status(exc.status_code) and (
            exc.response.headers.get("x-should-retry") != "false"
        )
    return isinstance(exc, openai.APIConnectionError | _BadReply)  # timeouts included


def _retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked to wait (`retry-after-ms`, `Retry-After` in seconds or as an
    HTTP date), or None."""
    response = getattr(exc, "response", None)
    if response is None:
        return None
    headers = response.headers
    try:
        if headers.get("retry-after-ms") is not None:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


class ChatClient:
    """Chat completions with retries and a reply cache.

    Counters: `calls` (complete() invocations), `cache_hits` (answered from disk) and
    `requests` (HTTP requests sent, retries included). `rng` draws the backoff jitter; pass a
    seeded `random.Random` for reproducible waits.
    """

    def __init__(self, config: EndpointConfig, rng: random.Random | None = None) -> None:
        import openai

        self.config = config.resolve()
        # One HTTP request per attempt: the retries are ditkit's (`_send`), not the client's.
        self._client = openai.OpenAI(
            base_url=self.config.base_url,
            api_key=self.config.api_key,
            timeout=self.config.timeout_s,
            max_retries=0,
        )
        self._cache_dir = Path(self.config.cache_dir) if self.config.cache_dir else None
        self._rng = rng if rng is not None else random.Random()
        # Learnt from the server's 400s (reasoning models); they change what is sent, not the key.
        self._max_completion_tokens = False
        self._send_temperature = True
        self.calls = 0
        self.cache_hits = 0
        self.requests = 0

    def _cache_key(self, request: dict[str, Any]) -> str:
        keyed = {"base_url": self.config.base_url, **request}
        blob = json.dumps(keyed, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _cache_read(self, key: str) -> str | None:
        if self._cache_dir is None:
            return None
        path = self._cache_dir / f"{key}.json"
        if not path.is_file():
            return None
        try:
            reply = json.loads(path.read_text(encoding="utf-8"))["reply"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable cache entry %s (%s)", path, exc)
            return None
        return reply if isinstance(reply, str) else None

    def _cache_write(self, key: str, request: dict[str, Any], reply: str) -> None:
        if self._cache_dir is None:
            return
        record = {"base_url": self.config.base_url, "request": request, "reply": reply}
        write_json(self._cache_dir / f"{key}.json", record, indent=1)

    def retry_delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `retry` (1 for the first retry).

        `retry_after` (the server's Retry-After) when given, else `backoff_s * 2**(retry-1)`
        times a factor drawn uniformly from [0.5, 1.5]; at most `max_backoff_s` either way.
        """
        if retry_after is not None:
            delay = retry_after
        else:
            delay = self.config.backoff_s * 2.0 ** min(retry - 1, 60) * self._rng.uniform(0.5, 1.5)
        return min(delay, self.config.max_backoff_s)

    def complete(
        self,
        messages: list[dict[str, str]],
        temperature: float = 0.0,
        max_tokens: int = 256,
        seed: int | None = None,
    ) -> str:
        """Send one chat request and return the reply text ("" if the server sent no content).

        Raises `RemoteError` when the server rejects the request or keeps failing.
        """
        self.calls += 1
        request: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "seed": seed,
        }
        key = self._cache_key(request)
        cached = self._cache_read(key)
        if cached is not None:
            self.cache_hits += 1
            return cached
        reply = self._send(request)
        self._cache_write(key, request, reply)
        return reply

    def _wire_params(self, request: dict[str, Any]) -> dict[str, Any]:
        """The logical request as this server wants it (see `_adapt_to`)."""
        params = {"model": request["model"], "messages": request["messages"]}
        tokens = "max_completion_tokens" if self._max_completion_tokens else "max_tokens"
        params[tokens] = request["max_tokens"]
        if self._send_temperature:
            params["temperature"] = request["temperature"]
        if request["seed"] is not None:
            params["seed"] = request["seed"]
        return params

    def _adapt_to(self, exc: Any, request: dict[str, Any]) -> bool:
        """Whether a 400 says the model does not take a parameter we can do without (now fixed)."""
        text = f"{_server_message(exc)} {exc.param or ''}".lower()
        if not any(marker in text for marker in _UNSUPPORTED):
            return False
        if not self._max_completion_tokens and re.search(r"\bmax_tokens\b", text):
            self._max_completion_tokens = True
            log.warning(
                "%s: model %r does not take max_tokens; sending max_completion_tokens instead",
                self.config.base_url,
                self.config.model,
            )
            return True
        if self._send_temperature and re.search(r"\btemperature\b", text):
            self._send_temperature = False
            log.warning(
                "%s: model %r does not take temperature=%s; sending no temperature (the "
                "model's default) from now on",
                self.config.base_url,
                self.config.model,
                request["temperature"],
            )
            return True
        return False

    def _send(self, request: dict[str, Any]) -> str:
        """One logical request: attempts until a reply, a rejection or the last of
        `max_retries` retries."""
        import openai
        import tenacity

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(_retryable),
            stop=tenacity.stop_after_attempt(self.config.max_retries + 1),
            wait=self._wait,
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            reply, finish = retrying(self._attempt, request)
        except openai.APIStatusError as exc:
            if not _retryable_status(exc.status_code):
                raise self._rejected(exc) from exc
            raise self._gave_up(exc, retrying.statistics["attempt_number"]) from exc
        except (openai.APIConnectionError, _BadReply) as exc:
            raise self._gave_up(exc, retrying.statistics["attempt_number"]) from exc
        except openai.OpenAIError as exc:
            raise RemoteError(
                f"{self.config.base_url} failed for model {self.config.model!r}: {exc}"
            ) from exc
        if not reply:
            log.warning("%s sent an empty reply (finish_reason=%s)", self.config.base_url, finish)
        return reply

    def _attempt(self, request: dict[str, Any]) -> tuple[str, Any]:
        """One attempt: an HTTP request, sent again at once when the model refuses a parameter
        it can do without (not a failure of the server)."""
        import openai

        while True:
            self.requests += 1
            try:
                raw = self._client.chat.completions.with_raw_response.create(
                    **self._wire_params(request)
                )
            except openai.BadRequestError as exc:
                if self._adapt_to(exc, request):
                    continue
                raise
            return _parse_reply(raw.text)

    def _wait(self, state: Any) -> float:
        """tenacity's wait before retry ``state.attempt_number``."""
        return self.retry_delay(state.attempt_number, _retry_after(state.outcome.exception()))

    def _log_retry(self, state: Any) -> None:
        import openai

        exc = state.outcome.exception()
        if isinstance(exc, openai.APIStatusError):
            cause = f"HTTP {exc.status_code}"
        else:
            cause = self._describe(exc)
        asked = _retry_after(exc)
        log.warning(
            "request to %s failed (%s); retry %d/%d in %.2f s%s",
            self.config.base_url,
            cause,
            state.attempt_number,
            self.config.max_retries,
            state.next_action.sleep,
            "" if asked is None else f" (Retry-After: {asked:g} s)",
        )

    def _describe(self, error: Exception) -> str:
        import openai

        if isinstance(error, openai.APITimeoutError):
            return f"no answer within timeout_s={self.config.timeout_s:g} s"
        if isinstance(error, openai.APIStatusError):
            retry_after = error.response.headers.get("retry-after")
            asked = "" if retry_after is None else f" (Retry-After: {retry_after})"
            return f"HTTP {error.status_code}: {_server_message(error)}{asked}"
        if isinstance(error, openai.APIConnectionError):
            return f"connection failed: {error.__cause__ or error}"
        return f"malformed reply: {error}"

    def _rejected(self, exc: Any) -> RemoteError:
        fix = _STATUS_FIXES.get(exc.status_code, _OTHER_4XX_FIX)
        return RemoteError(
            f"{self.config.base_url} rejected the request for model {self.config.model!r} with "
            f"HTTP {exc.status_code} ({_server_message(exc)}). Fix: {fix}."
        )

    def _gave_up(self, error: Exception, attempts: int) -> RemoteError:
        import openai

        if isinstance(error, openai.APITimeoutError):
            fix = (
                "check that the server is up and not overloaded, or raise "
                "timeout_s (DITKIT_OPENAI_TIMEOUT_S) if its answers are just slow"
            )
        elif (
            isinstance(error, openai.APIStatusError)
            and error.response.headers.get("x-should-retry") == "false"
        ):
            fix = "the server asked not to be retried (x-should-retry: false): wait and rerun"
        elif isinstance(error, openai.APIStatusError) and error.status_code == 429:
            fix = (
                "the server kept rate-limiting: wait and rerun, or raise "
                "DITKIT_OPENAI_MAX_RETRIES / DITKIT_OPENAI_MAX_BACKOFF_S"
            )
        elif isinstance(error, openai.APIStatusError):
            fix = "the server kept failing: check its logs, then rerun"
        elif isinstance(error, openai.APIConnectionError):
            fix = (
                "check that the server is running and reachable at this URL (and that no "
                "proxy is in the way; see NO_PROXY)"
            )
        else:
            fix = (
                "check that the base URL points at an OpenAI-compatible /v1 endpoint, not a "
                "web page or another API"
            )
        return RemoteError(
            f"{self.config.base_url} failed on all {attempts} attempt"
            f"{'' if attempts == 1 else 's'} for model {self.config.model!r}; last error: "
            f"{self._describe(error)}. Fix: {fix}."
        )
