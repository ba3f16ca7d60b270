"""A minimal client for OpenAI-compatible chat-completions servers, with retries and a disk cache.

One wire format covers Ollama (``http://localhost:11434/v1``), vLLM, OpenAI and Groq:
``POST {base_url}/chat/completions`` with a Bearer key. The feature proposer and the jailbreak judge
both call :meth:`ChatClient.complete`.

The system prompt is sent whole, as the first message (the reference implementation zipped a string
with a list and sent only its first character).

Caching: with ``cache_dir`` set, every answer is stored as ``<sha256>.json`` keyed by the base URL,
model, system prompt, user prompt and sampling parameters; a cached answer is returned without any
network call. The cache is plain JSON, written atomically, and safe to delete.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import json
import logging
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from mecharule.errors import ConfigError, MecharuleError

logger = logging.getLogger(__name__)

CACHE_SCHEMA_VERSION = 1
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
AUTH_STATUSES = frozenset({401, 403})
MAX_RETRY_WAIT = 120.0  # seconds; a server asking for longer gets this much
_ERROR_BODY_CHARS = 500


class LLMError(MecharuleError, RuntimeError):
    """A chat-completions request failed (after retries) or returned an unusable answer."""


class LLMAuthError(LLMError):
    """The server rejected the API key (HTTP 401/403)."""


class ChatCompleter(Protocol):
    """Anything that answers one chat turn; :class:`ChatClient` is the real one, tests pass fakes."""

    def complete(
        self,
        system: str | None,
        user: str,
        *,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        seed: int | None = None,
    ) -> str: ...


class ChatClient:
    """Client for ``POST {base_url}/chat/completions`` (OpenAI wire format).

    ``api_key`` may be None for servers that need none (a local Ollama or vLLM). Requests that fail
    with HTTP 408/409/425/429/5xx, a timeout or a refused connection are retried up to
    ``max_retries`` times, waiting ``backoff * 2**attempt`` seconds or the server's ``Retry-After``.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        cache_dir: Path | None = None,
        max_retries: int = 5,
        timeout: float = 60.0,
        backoff: float = 1.0,
        api_key_env: str = "MECHARULE_LLM_API_KEY",
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"base_url must start with http:// or https://, got {base_url!r} "
                "(e.g. http://localhost:11434/v1 for Ollama, https://api.openai.com/v1 for OpenAI)"
            )
        if not model:
            raise ConfigError("model must be a non-empty model name, got ''")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        if timeout <= 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {timeout}")
        if backoff < 0:
            raise ConfigError(f"backoff must be >= 0 seconds, got {backoff}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.max_retries = max_retries
        self.timeout = timeout
        self.backoff = backoff
        self.api_key_env = api_key_env
        self._api_key = api_key or None
        self._sleep: Callable[[float], None] = time.sleep
        self.n_requests = 0  # HTTP requests actually sent (retries included)

    def __repr__(self) -> str:  # never shows the key
        key = "set" if self._api_key else "none"
        return f"ChatClient(base_url={self.base_url!r}, model={self.model!r}, api_key={key})"

    @classmethod
    def from_env(cls, prefix: str = "MECHARULE_LLM", **kwargs: Any) -> ChatClient:
        """Build from ``{prefix}_BASE_URL``, ``{prefix}_MODEL`` and ``{prefix}_API_KEY``.

        The key falls back to ``OPENAI_API_KEY`` and may be absent (local servers). An optional
        ``{prefix}_CACHE_DIR`` sets the cache unless ``cache_dir`` is passed. Other keyword
        arguments go to the constructor.
        """
        base_url = os.environ.get(f"{prefix}_BASE_URL", "").strip()
        model = os.environ.get(f"{prefix}_MODEL", "").strip()
        missing = [
            name
            for name, value in ((f"{prefix}_BASE_URL", base_url), (f"{prefix}_MODEL", model))
            if not value
        ]
        if missing:
            raise ConfigError(
                f"missing environment variable(s) {', '.join(missing)}; set e.g. "
                f"{prefix}_BASE_URL=http://localhost:11434/v1 and {prefix}_MODEL=gemma3:27b "
                f"(and {prefix}_API_KEY or OPENAI_API_KEY if the server needs a key)"
            )
        api_key = os.environ.get(f"{prefix}_API_KEY") or os.environ.get("OPENAI_API_KEY") or None
        if "cache_dir" not in kwargs and os.environ.get(f"{prefix}_CACHE_DIR"):
            kwargs["cache_dir"] = Path(os.environ[f"{prefix}_CACHE_DIR"])
        kwargs.setdefault("api_key_env", f"{prefix}_API_KEY")
        return cls(base_url, model, api_key, **kwargs)

    # -- public ---------------------------------------------------------------------------------

    def complete(
        self,
        system: str | None,
        user: str,
        *,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        seed: int | None = None,
    ) -> str:
        """Answer one chat turn: the whole ``system`` prompt (if any) then ``user``; returns the text."""
        payload = self._payload(system, user, temperature=temperature, max_tokens=max_tokens, seed=seed)
        key = self.cache_key(payload)
        cached = self._read_cache(key)
        if cached is not None:
            return cached
        answer = self._post_with_retries(payload)
        self._write_cache(key, payload, answer)
        return answer

    def cache_key(self, payload: dict[str, Any]) -> str:
        """sha256 of the canonical JSON of (base_url, payload); the payload holds model and prompts."""
        canonical = json.dumps(
            {"base_url": self.base_url, "payload": payload},
            sort_keys=True,
            ensure_ascii=False,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    # -- request building and sending ----------------------------------------------------------

    def _payload(
        self, system: str | None, user: str, *, temperature: float, max_tokens: int | None, seed: int | None
    ) -> dict[str, Any]:
        if not isinstance(user, str):
            raise ConfigError(f"user prompt must be a str, got {type(user).__name__}")
        if system is not None and not isinstance(system, str):
            raise ConfigError(f"system prompt must be a str or None, got {type(system).__name__}")
        messages: list[dict[str, str]] = []
        if system:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": user})
        payload: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": temperature}
        if max_tokens is not None:
            payload["max_tokens"] = int(max_tokens)
        if seed is not None:
            payload["seed"] = int(seed)
        return payload

    def _post_with_retries(self, payload: dict[str, Any]) -> str:
        url = f"{self.base_url}/chat/completions"
        for attempt in range(self.max_retries + 1):
            try:
                return self._post_once(url, payload)
            except _Retryable as exc:
                if attempt == self.max_retries:
                    raise LLMError(
                        f"{url} failed after {attempt + 1} attempt(s): {exc.reason}; "
                        "check that the server is up, or raise max_retries/timeout"
                    ) from None
                wait = exc.retry_after if exc.retry_after is not None else self.backoff * 2**attempt
                wait = min(max(wait, 0.0), MAX_RETRY_WAIT)
                logger.warning(
                    "chat request to %s: %s; retry %d/%d in %.1f s",
                    url,
                    exc.reason,
                    attempt + 1,
                    self.max_retries,
                    wait,
                )
                self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _post_once(self, url: str, payload: dict[str, Any]) -> str:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        self.n_requests += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise self._http_error(url, exc) from None
        except TimeoutError as exc:
            raise _Retryable(f"timed out after {self.timeout} s ({exc})") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError | ConnectionError):
                raise _Retryable(f"connection failed: {exc.reason}") from None
            raise LLMError(f"cannot reach {url}: {exc.reason}; check the base URL") from None
        except (ConnectionError, http.client.HTTPException) as exc:
            raise _Retryable(f"connection failed: {exc!r}") from None
        return _answer_text(url, raw)

    def _http_error(self, url: str, exc: urllib.error.HTTPError) -> Exception:
        detail = _read_error_body(exc)
        if exc.code in AUTH_STATUSES:
            state = "was rejected" if self._api_key else "is missing"
            return LLMAuthError(
                f"{url} answered HTTP {exc.code}: the API key {state}. Set {self.api_key_env} "
                f"(or OPENAI_API_KEY) to a valid key for this server. Server said: {detail}"
            )
        if exc.code in RETRY_STATUSES or exc.code >= 500:
            retry_after = _retry_after_seconds(exc.headers.get("Retry-After"))
            return _Retryable(f"HTTP {exc.code} {detail}", retry_after)
        return LLMError(
            f"{url} answered HTTP {exc.code} (not retried): {detail}; check the model name "
            f"{self.model!r} and the request parameters"
        )

    # -- cache ------------------------------------------------------------------------------------

    def _cache_path(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"{key}.json"

    def _read_cache(self, key: str) -> str | None:
        path = self._cache_path(key)
        if path is None or not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            answer = record["response"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring unreadable LLM cache entry %s (%s); it will be rewritten", path, exc)
            return None
        return answer if isinstance(answer, str) else None

    def _write_cache(self, key: str, payload: dict[str, Any], answer: str) -> None:
        path = self._cache_path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "schema_version": CACHE_SCHEMA_VERSION,
            "base_url": self.base_url,
            "request": payload,
            "response": answer,
            "created": datetime.now(UTC).isoformat(),
        }
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:12]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(record, handle, ensure_ascii=False, indent=1)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def _answer_text(url: str, raw: bytes) -> str:
    try:
        data = json.loads(raw.decode("utf-8"))
        content = data["choices"][0]["message"]["content"]
    except (UnicodeDecodeError, ValueError, KeyError, IndexError, TypeError):
        snippet = raw[:_ERROR_BODY_CHARS].decode("utf-8", "replace")
        raise LLMError(f"{url} returned a body that is not an OpenAI chat completion: {snippet!r}") from None
    if not isinstance(content, str):
        raise LLMError(f"{url} returned a completion without text content (content={content!r})")
    return content


def _read_error_body(exc: urllib.error.HTTPError) -> str:
    try:
        text = exc.read(_ERROR_BODY_CHARS).decode("utf-8", "replace")
    except OSError:
        text = ""
    return text.strip() or exc.reason or ""


def _retry_after_seconds(value: str | None) -> float | None:
    """Parse ``Retry-After`` (seconds or an HTTP date) into seconds from now; None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)
