"""Language models behind one small protocol: llama.cpp in-process, or any OpenAI-compatible
HTTP endpoint (llama-server, Ollama, vLLM, a hosted API).

The generative answer mode (`generation.py`) only sees `LLM`; which backend serves it is a
setting. Both backends stream text as it is produced, so a surface can show tokens before
the answer is verified.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, TypedDict

import httpx

from sourcebook.settings import Settings
from sourcebook.text import count_tokens as approximate_tokens

INSTALL_HINT = (
    "install it with `bash scripts/install-llama.sh` or `pip install 'sourcebook[llama]'`"
)


class Message(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


class LLMError(Exception):
    """A language model cannot be used as configured; the message says what to do."""


class LLM(Protocol):
    """What the generative answerer needs from a model."""

    # identifies the model in the answer cache: a different model must not reuse answers
    name: str

    def stream(
        self, messages: Sequence[Message], max_tokens: int, temperature: float
    ) -> Iterator[str]:
        """The reply, piece by piece as the model produces it."""
        ...

    def complete(self, messages: Sequence[Message], max_tokens: int, temperature: float) -> str:
        """The whole reply."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` by the model's tokenizer when it is available."""
        ...


class LlamaCppLLM:
    """A GGUF model run in this process by llama.cpp (`xllamacpp`, optional).

    xllamacpp embeds llama.cpp's own server: requests go to it as OpenAI-style JSON and
    its single slot makes concurrent generations take turns on the one context (the HTTP
    server answers in several threads). Its HTTP listener on loopback is only used to
    count tokens, behind a random key so that no other local process can use the model.
    The model is loaded on first use, so naming it (for the answer cache) costs nothing.
    """

    def __init__(self, model_path: Path, n_threads: int = 1, n_ctx: int = 4096) -> None:
        try:
            import xllamacpp  # noqa: F401  (fail here, with the install hint, not later)
        except ImportError as exc:
            raise LLMError(f"the llama.cpp runtime is not installed; {INSTALL_HINT}") from exc
        self.path = model_path.expanduser()
        if not self.path.is_file():
            raise LLMError(
                f"no GGUF model file at {self.path}; set SOURCEBOOK_LLM_GGUF to a .gguf file "
                "(or use an OpenAI-compatible endpoint with SOURCEBOOK_LLM_BACKEND=openai)"
            )
        self.name = f"llama-cpp:{self.path.name}"
        self.n_threads = n_threads
        self.n_ctx = n_ctx
        self._key = secrets.token_urlsafe(24)
        self._loaded: Any = None
        self._loading = threading.Lock()

    @property
    def _server(self) -> Any:
        with self._loading:  # two first requests at once must not load the model twice
            if self._loaded is None:
                import xllamacpp

                params = xllamacpp.CommonParams()
                params.model.path = str(self.path)
                params.n_ctx = self.n_ctx
                params.n_parallel = 1  # one context: generations take turns
                # Prompt processing and decoding get the same threads: with another
                # process busy, one thread is often faster than two on a small machine.
                params.cpuparams.n_threads = self.n_threads
                params.cpuparams_batch.n_threads = self.n_threads
                params.verbosity = -1  # llama.cpp's own log would flood the terminal
                params.api_keys = [self._key]
                try:
                    self._loaded = xllamacpp.Server(params)
                except RuntimeError as exc:  # "Failed to init server"
                    raise LLMError(
                        f"llama.cpp cannot load {self.path}: is it a GGUF model file? ({exc})"
                    ) from exc
            return self._loaded

    def stream(
        self, messages: Sequence[Message], max_tokens: int, temperature: float
    ) -> Iterator[str]:
        server = self._server
        request = json.dumps(
            {
                "messages": list(messages),
                "max_tokens": max_tokens,
                "temperature": temperature,
                "stream": True,
            }
        )
        # xllamacpp calls back on the thread that made the request until the reply is
        # done; a worker thread turns that into an iterator, and returning True from the
        # callback stops the generation when the reader stops reading.
        chunks: queue.Queue[str | BaseException | None] = queue.Queue()
        abandoned = threading.Event()

        def on_chunk(chunk: str) -> bool:
            chunks.put(chunk)
            return abandoned.is_set()

        def generate() -> None:
            try:
                server.handle_chat_completions(request, on_chunk)
            except Exception as exc:  # handed to the reader, raised there
                chunks.put(exc)
            finally:
                chunks.put(None)

        worker = threading.Thread(target=generate, name="llama.cpp", daemon=True)
        worker.start()
        try:
            while (chunk := chunks.get()) is not None:
                if isinstance(chunk, BaseException):
                    raise LLMError(f"llama.cpp failed: {chunk}") from chunk
                yield from _chunk_content(chunk)
        finally:
            abandoned.set()

    def complete(self, messages: Sequence[Message], max_tokens: int, temperature: float) -> str:
        return "".join(self.stream(messages, max_tokens, temperature))

    def count_tokens(self, text: str) -> int:
        response = httpx.post(
            f"{self._server.listening_address}/tokenize",
            json={"content": text, "add_special": False},
            headers={"Authorization": f"Bearer {self._key}"},
            timeout=30,
        )
        response.raise_for_status()
        return len(response.json()["tokens"])


def _chunk_content(chunk: str) -> Iterator[str]:
    """The text in one streamed chat-completion chunk (JSON), or its error."""
    event: dict[str, Any] = json.loads(chunk)
    if "error" in event:
        raise LLMError(f"llama.cpp reported an error: {_message_of(event['error'])}")
    for choice in event.get("choices") or ():
        piece = (choice.get("delta") or {}).get("content")
        if piece:
            yield str(piece)


# Worth another try: the server is starting, overloaded or rate-limiting.
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class OpenAICompatibleLLM:
    """A model behind an OpenAI-compatible `/v1` endpoint, streamed over server-sent events.

    Connection errors and 408/429/5xx are retried up to `retries` times with exponential
    backoff (never after the first token: a retried stream would repeat text). The model
    name is checked against `GET /models` on first use so that a typo is reported with
    the names the server does offer, instead of being silently replaced by some servers.
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.name = f"openai:{self.base_url}:{model or 'default'}"
        self._model = model
        self._model_checked = False
        self._retries = retries
        self._backoff = backoff
        self._timeout = timeout
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            headers=headers, timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0))
        )

    def stream(
        self, messages: Sequence[Message], max_tokens: int, temperature: float
    ) -> Iterator[str]:
        body = {
            "model": self.model,
            "messages": list(messages),
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": True,
        }
        url = f"{self.base_url}/chat/completions"
        for attempt in range(self._retries + 1):
            try:
                with self._client.stream("POST", url, json=body) as response:
                    if response.status_code in _RETRY_STATUS and attempt < self._retries:
                        response.read()
                        self._wait(attempt, response)
                        continue
                    if response.status_code >= 400:
                        response.read()
                        raise self._http_error(response, url)
                    yield from _sse_content(response, url)
                    return
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt == self._retries:
                    raise self._unreachable(exc) from exc
                self._wait(attempt, None)
            except httpx.TimeoutException as exc:
                raise LLMError(
                    f"{url} did not answer within {self._timeout:g} s; raise "
                    "SOURCEBOOK_LLM_TIMEOUT or check the server's load"
                ) from exc
            except httpx.TransportError as exc:
                raise LLMError(f"the connection to {url} failed: {exc}") from exc

    def complete(self, messages: Sequence[Message], max_tokens: int, temperature: float) -> str:
        return "".join(self.stream(messages, max_tokens, temperature))

    def count_tokens(self, text: str) -> int:
        # The OpenAI API has no tokenizer endpoint; the approximation errs on the side
        # of counting more tokens for Chinese, which keeps the prompt inside the budget.
        return approximate_tokens(text)

    @property
    def model(self) -> str:
        """The configured model, checked against the server's list on first use."""
        if not self._model_checked:
            self._model = self._resolve_model()
            self._model_checked = True
        assert self._model is not None
        return self._model

    def available_models(self) -> list[str] | None:
        """Model ids from `GET /models`, or None when the endpoint does not list them."""
        url = f"{self.base_url}/models"
        for attempt in range(self._retries + 1):
            try:
                response = self._client.get(url)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt == self._retries:
                    raise self._unreachable(exc) from exc
                self._wait(attempt, None)
                continue
            except httpx.HTTPError:
                return None
            if response.status_code in _RETRY_STATUS and attempt < self._retries:
                self._wait(attempt, response)
                continue
            if response.status_code in (401, 403):
                raise self._http_error(response, url)
            if response.status_code != 200:
                return None
            try:
                return [str(item["id"]) for item in response.json()["data"]]
            except (ValueError, KeyError, TypeError):
                return None
        return None

    def _resolve_model(self) -> str:
        available = self.available_models()
        if self._model is None:
            if available is not None and len(available) == 1:
                return available[0]  # a llama-server or single-model endpoint
            offered = f"; it offers: {', '.join(available)}" if available else ""
            raise LLMError(
                f"set SOURCEBOOK_LLM_MODEL to the model to use at {self.base_url}{offered}"
            )
        if available is not None and self._model not in available:
            raise LLMError(self._unknown_model(available))
        return self._model

    def _unknown_model(self, available: Sequence[str] | None) -> str:
        offered = ", ".join(available) if available else "none listed"
        return (
            f"model {self._model!r} is not available at {self.base_url}; "
            f"available models: {offered} (set SOURCEBOOK_LLM_MODEL)"
        )

    def _http_error(self, response: httpx.Response, url: str) -> LLMError:
        detail = _error_detail(response)
        if response.status_code in (401, 403):
            return LLMError(
                f"{url} refused the request (HTTP {response.status_code}: {detail}); check the "
                "API key in the environment variable named by SOURCEBOOK_LLM_API_KEY_ENV"
            )
        if response.status_code == 404 and "model" in detail.lower():
            try:
                available = self.available_models()
            except LLMError:
                available = None
            return LLMError(self._unknown_model(available))
        return LLMError(f"{url} answered HTTP {response.status_code}: {detail}")

    def _unreachable(self, exc: Exception) -> LLMError:
        return LLMError(
            f"cannot reach {self.base_url} — is the server running? ({type(exc).__name__}: "
            f"{exc}; set SOURCEBOOK_LLM_BASE_URL to its address)"
        )

    def _wait(self, attempt: int, response: httpx.Response | None) -> None:
        delay = self._backoff * 2**attempt
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after is not None and retry_after.isdigit():
            delay = max(delay, float(retry_after))
        time.sleep(min(delay, 30.0))  # bounded: a hung rate limit must not stall for hours


def _sse_content(response: httpx.Response, url: str) -> Iterator[str]:
    """Text pieces from an OpenAI chat-completion event stream (`data: {...}` lines)."""
    for line in response.iter_lines():
        if not line.startswith("data:"):
            continue  # blank separators, comments (": ping"), event names
        payload = line[len("data:") :].strip()
        if payload == "[DONE]":
            return
        try:
            event: dict[str, Any] = json.loads(payload)
        except ValueError as exc:
            raise LLMError(f"{url} sent an event that is not JSON: {payload[:200]}") from exc
        if "error" in event:
            raise LLMError(f"{url} reported an error: {_message_of(event['error'])}")
        for choice in event.get("choices") or ():
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                yield str(piece)


def _error_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    if isinstance(body, dict):
        return _message_of(body.get("error", body.get("detail", body)))
    return str(body)[:300]


def _message_of(error: object) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)[:300]
    return str(error)[:300]


def create_llm(settings: Settings) -> LLM:
    """The backend the settings configure (`SOURCEBOOK_LLM_*`)."""
    if settings.llm_backend == "llama-cpp":
        if settings.llm_gguf is None:
            raise LLMError(
                "the generative answer mode needs a model: set SOURCEBOOK_LLM_GGUF to a .gguf "
                "file for llama.cpp, or SOURCEBOOK_LLM_BACKEND=openai and "
                "SOURCEBOOK_LLM_BASE_URL for an OpenAI-compatible endpoint"
            )
        # the context holds the instructions, the evidence and the reply
        n_ctx = settings.llm_context_tokens + settings.llm_max_tokens + 512
        return LlamaCppLLM(settings.llm_gguf, settings.llm_threads, n_ctx)
    return OpenAICompatibleLLM(
        settings.llm_base_url,
        settings.llm_model,
        os.environ.get(settings.llm_api_key_env) or None,
        settings.llm_timeout,
        settings.llm_retries,
    )
