"""A small client for any OpenAI-compatible chat server (vLLM, Ollama, llama.cpp, hosted APIs).

It adds what evaluation needs on top of the `openai` package: settings from flags or environment
variables, retries with exponential backoff that we control (the library's own retries are off),
and an on-disk cache of replies so that rerunning an evaluation never pays for a request twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ditkit.errors import ConfigError, RemoteError

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
    `OPENAI_API_KEY`, else a dummy key, which local servers accept).
    """

    base_url: str | None = None
    model: str | None = None
    api_key: str | None = None
    timeout_s: float = 60
    max_retries: int = 5
    backoff_s: float = 1.0
    cache_dir: str | None = None

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
        return dataclasses.replace(
            self, base_url=base_url.rstrip("/"), model=model, api_key=api_key or DUMMY_API_KEY
        )

    def describe(self) -> dict[str, str | None]:
        """The fields worth recording next to results (never the API key)."""
        return {"base_url": self.base_url, "model": self.model}


def _is_retryable(exc: Exception) -> bool:
    import openai

    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == 429 or exc.status_code >= 500
    return False


class ChatClient:
    """Chat completions with retries and a reply cache.

    Counters: `calls` (complete() invocations), `cache_hits` (answered from disk) and
    `requests` (HTTP requests sent, retries included).
    """

    def __init__(self, config: EndpointConfig) -> None:
        import openai

        self.config = config.resolve()
        self._client = openai.OpenAI(
            base_url=self.config.base_url,
            api_key=self.config.api_key,
            timeout=self.config.timeout_s,
            max_retries=0,
        )
        self._cache_dir = Path(self.config.cache_dir) if self.config.cache_dir else None
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
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        record = {"base_url": self.config.base_url, "request": request, "reply": reply}
        fd, tmp = tempfile.mkstemp(dir=self._cache_dir, prefix=f".{key[:16]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(record, f, ensure_ascii=False, indent=1)
            os.replace(tmp, self._cache_dir / f"{key}.json")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def complete(
        self,
        messages: list[dict[str, str]],
        temperature: float = 0.0,
        max_tokens: int = 256,
        seed: int | None = None,
    ) -> str:
        """Send one chat request and return the reply text ("" if the server sent no content)."""
        import openai

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

        extra = {} if seed is None else {"seed": seed}
        attempts = self.config.max_retries + 1
        last_error: Exception | None = None
        for attempt in range(attempts):
            if attempt:
                delay = self.config.backoff_s * 2 ** (attempt - 1)
                log.warning(
                    "request to %s failed (%s); retry %d/%d in %.1f s",
                    self.config.base_url,
                    last_error,
                    attempt,
                    self.config.max_retries,
                    delay,
                )
                time.sleep(delay)
            self.requests += 1
            try:
                response = self._client.chat.completions.create(
                    model=self.config.model,
                    messages=messages,
                    temperature=temperature,
                    max_tokens=max_tokens,
                    **extra,
                )
            except openai.OpenAIError as exc:
                if not _is_retryable(exc):
                    raise RemoteError(
                        f"{self.config.base_url} rejected the request for model "
                        f"{self.config.model!r}: {exc}"
                    ) from exc
                last_error = exc
                continue
            if not response.choices:
                raise RemoteError(f"{self.config.base_url} returned no choices: {response!r}")
            reply = response.choices[0].message.content or ""
            if not reply:
                log.warning(
                    "%s sent an empty reply (finish_reason=%s)",
                    self.config.base_url,
                    response.choices[0].finish_reason,
                )
            self._cache_write(key, request, reply)
            return reply
        raise RemoteError(
            f"{self.config.base_url} failed {attempts} time(s) for model {self.config.model!r}; "
            f"last error: {type(last_error).__name__}: {last_error}"
        ) from last_error
