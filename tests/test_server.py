"""The HTTP API and the OpenAI-compatible endpoint, over the sample notes with the real
model: FastAPI's TestClient for plain requests, a real uvicorn server on 127.0.0.1 for
streaming, the official `openai` client and concurrent requests."""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from sourcebook import KnowledgeBase, Settings
from sourcebook.answer.llm import Message
from sourcebook.models import Answer
from sourcebook.surfaces.cli import app as cli_app
from sourcebook.surfaces.server import ReadWriteLock, check_host, create_app
from sourcebook.text import count_tokens

# known-good pairs from test_knowledge_base.QUESTIONS: (question, answering file, phrase)
CHINESE = ("LoRA 的 rank r 一般取多少？", "llm/lora.md", "8 或 16")
ENGLISH = (
    "What is the default prefetch_factor of a PyTorch DataLoader?",
    "basics/dataloader-tips.rst",
    "default is 2",
)

NEW_NOTE = """# Sourdough notes

My sourdough levain uses a 1:5:5 ratio of starter, flour and water.

## 烘焙

面团在 250 度的铸铁锅里烤 20 分钟。
"""

# a loopback server answers only requests for a loopback host (DNS rebinding)
LOCAL = "http://127.0.0.1"


@pytest.fixture(scope="module")
def client(notes_kb: KnowledgeBase) -> Iterator[TestClient]:
    with TestClient(create_app(notes_kb), base_url=LOCAL) as test_client:
        yield test_client


@pytest.fixture
def writable(kb_copy: tuple[KnowledgeBase, Path]) -> Iterator[tuple[TestClient, KnowledgeBase]]:
    kb, _ = kb_copy
    with TestClient(create_app(kb), base_url=LOCAL) as test_client:
        yield test_client, kb


class LiveServer:
    """uvicorn serving an app on a free port of 127.0.0.1, in a thread."""

    def __init__(self, app: FastAPI) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def __enter__(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 120  # the lifespan loads the models
        while not self._server.started:
            assert self._thread.is_alive() and time.monotonic() < deadline, "did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._socket.close()


@pytest.fixture(scope="module")
def live(notes_kb: KnowledgeBase) -> Iterator[str]:
    with LiveServer(create_app(notes_kb)) as server:
        yield server.url


@pytest.fixture(scope="module")
def ai(live: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live}/v1", api_key="unused", max_retries=0)


def document_id(client: TestClient, suffix: str) -> int:
    documents = client.get("/api/documents").json()
    return int(next(d["id"] for d in documents if d["path"].endswith(suffix)))


def assert_cited(answer: dict[str, Any], relative: str) -> None:
    """Found, every sentence followed by a marker, every marker a listed source."""
    assert answer["found"], answer["text"]
    numbers = {c["n"] for c in answer["citations"]}
    markers = {int(n) for n in re.findall(r"\[(\d+)\]", answer["text"])}
    assert markers and markers <= numbers
    assert answer["citations"][0]["hit"]["path"].endswith(relative)


# --- reading ---------------------------------------------------------------------------


def test_health(client: TestClient, notes_kb: KnowledgeBase) -> None:
    response = client.get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["embedder"] == "multilingual-e5-small"
    assert body["knowledge_base"] == str(notes_kb.path.resolve())
    assert body["generate"] is False  # no language model in the test settings


@pytest.mark.parametrize(("question", "relative", "_phrase"), [CHINESE, ENGLISH])
def test_search_returns_the_right_note(
    client: TestClient, question: str, relative: str, _phrase: str
) -> None:
    response = client.get("/api/search", params={"q": question, "limit": 3})
    assert response.status_code == 200
    hits = response.json()
    assert len(hits) == 3
    assert hits[0]["path"].endswith(relative), [h["path"] for h in hits]
    assert {"line_start", "line_end", "heading_path", "ranks", "text"} <= set(hits[0])
    assert "index_tokens" not in hits[0]


def test_search_filters(client: TestClient) -> None:
    by_path = client.get("/api/search", params={"q": "显存", "path": "*.md", "limit": 20}).json()
    assert by_path and all(h["path"].endswith(".md") for h in by_path)
    by_tag = client.get("/api/search", params={"q": "fine-tuning rank", "tag": "lora"}).json()
    assert by_tag and all(h["path"].endswith("llm/lora.md") for h in by_tag)
    assert client.get("/api/search", params={"q": ""}).status_code == 422
    assert client.get("/api/search", params={"q": "x", "limit": 0}).status_code == 422


@pytest.mark.parametrize(("question", "relative", "phrase"), [CHINESE, ENGLISH])
def test_ask_returns_a_cited_answer(
    client: TestClient, question: str, relative: str, phrase: str
) -> None:
    response = client.post("/api/ask", json={"question": question})
    assert response.status_code == 200
    answer = response.json()
    assert_cited(answer, relative)
    assert phrase in answer["text"]
    assert answer["mode"] == "extractive"
    Answer.model_validate(answer)


@pytest.mark.parametrize(
    ("question", "refusal"),
    [
        ("红烧肉怎么做才好吃？", "知识库中没有找到相关内容。"),
        ("Who won the 1998 FIFA World Cup final?", "Not found in the knowledge base."),
    ],
)
def test_ask_refuses_an_off_topic_question(client: TestClient, question: str, refusal: str) -> None:
    answer = client.post("/api/ask", json={"question": question}).json()
    assert not answer["found"]
    assert answer["text"] == refusal


def test_ask_with_filters_and_bad_input(client: TestClient) -> None:
    only_rst = {"question": CHINESE[0], "filters": {"path": "*.rst"}}
    answer = client.post("/api/ask", json=only_rst).json()
    assert all(c["hit"]["path"].endswith(".rst") for c in answer["citations"])
    empty = client.post("/api/ask", json={"question": "   "})
    assert empty.status_code == 400 and "empty" in empty.json()["detail"]
    assert client.post("/api/ask", json={"question": "x", "mode": "poetry"}).status_code == 422
    unknown_filter = {"question": "x", "filters": {"folder": "llm"}}
    assert client.post("/api/ask", json=unknown_filter).status_code == 422
    assert client.post("/api/ask", content=b"not json").status_code == 422


def parse_sse(text: str) -> list[tuple[str, str]]:
    """(event, data) pairs of a server-sent event stream ("message" when unnamed)."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        events.append((fields.get("event", "message"), fields["data"]))
    return events


def test_ask_stream_sends_the_answer_event(live: str) -> None:
    with httpx.stream(
        "POST", f"{live}/api/ask/stream", json={"question": CHINESE[0]}, timeout=60
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    events = parse_sse(text)
    # extractive mode: no tokens, only the answer (generate mode sends tokens first)
    assert [name for name, _ in events] == ["answer"]
    answer = Answer.model_validate_json(events[-1][1])
    assert_cited(answer.model_dump(), CHINESE[1])


def test_ask_stream_bad_input_is_an_error_status(live: str) -> None:
    response = httpx.post(f"{live}/api/ask/stream", json={"question": " "}, timeout=60)
    assert response.status_code == 400
    assert "empty" in response.json()["detail"]


def test_document_text_and_line_range(client: TestClient, notes_kb: KnowledgeBase) -> None:
    doc_id = document_id(client, "llm/lora.md")
    whole = client.get(f"/api/documents/{doc_id}/text").json()
    lines = whole["text"].split("\n")
    assert whole["line_start"] == 1 and whole["line_end"] == len(lines)
    assert whole["truncated"] is False  # a note is far below the 20,000-line cut
    part = client.get(f"/api/documents/{doc_id}/text", params={"start": 6, "end": 8}).json()
    assert part["text"] == "\n".join(lines[5:8])
    assert (part["line_start"], part["line_end"]) == (6, 8)
    assert part["text"].startswith("# LoRA")
    backwards = client.get(f"/api/documents/{doc_id}/text", params={"start": 8, "end": 6})
    assert backwards.status_code == 400
    assert client.get("/api/documents/999999/text").status_code == 404


def test_pdf_page_image_and_regions_of_its_lines(
    client: TestClient, notes_kb: KnowledgeBase
) -> None:
    import io

    from PIL import Image

    pdf = document_id(client, "mixture-of-experts.pdf")
    text = client.get(f"/api/documents/{pdf}/text").json()["text"].split("\n")
    line = next(i + 1 for i, t in enumerate(text) if "alpha = 0.01" in t)
    regions = client.get(f"/api/documents/{pdf}/regions", params={"start": line, "end": line})
    assert regions.status_code == 200
    [region] = regions.json()
    x0, top, x1, bottom = region["box"]
    assert region["page"] == 1 and 0 < x0 < x1 <= 1 and 0 < top < bottom <= 1
    png = client.get(f"/api/documents/{pdf}/pages/1", params={"width": 500})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(png.content))
    assert image.width == 500 and image.height > image.width  # an A4 page, portrait
    # the region of the line is dark with its text, the margin above the page is blank
    crop = image.convert("L").crop(
        (int(x0 * 500), int(top * image.height), int(x1 * 500), int(bottom * image.height))
    )
    assert min(crop.getdata()) < 100
    assert client.get(f"/api/documents/{pdf}/pages/3").status_code == 404  # 2 pages
    markdown = document_id(client, "optimizers.md")
    assert client.get(f"/api/documents/{markdown}/pages/1").status_code == 404
    assert client.get(f"/api/documents/{markdown}/regions?start=1&end=3").json() == []
    assert client.get(f"/api/documents/{pdf}/regions?start=3&end=1").status_code == 400


def test_status_counts_everything_for_the_local_user(
    writable: tuple[TestClient, KnowledgeBase],
) -> None:
    """Without users the caller is the local user, who may read every document, those
    with groups included."""
    client, kb = writable
    kb.set_access_rule("llm/*", ["ml"])
    assert kb.document_groups()
    body = client.get("/api/status").json()
    documents = kb.documents()
    assert body["documents"] == len(documents) == 20
    assert body["chunks"] == sum(d.chunks for d in documents) == kb.status().chunks
    assert body["sources"] == kb.status().sources and body["index_consistent"]


def test_documents_and_collections(client: TestClient, notes_kb: KnowledgeBase) -> None:
    documents = client.get("/api/documents").json()
    assert len(documents) == notes_kb.status().documents
    assert all(d["state"] == "indexed" and not d["uploaded"] for d in documents)
    pdf = next(d for d in documents if d["kind"] == "pdf")
    assert pdf["chunks"] > 0 and pdf["title"]
    collections = client.get("/api/collections").json()
    assert collections == [
        {"path": notes_kb.status().sources[0], "documents": len(documents), "uploads": False}
    ]


# --- writing ---------------------------------------------------------------------------


def test_upload_then_search_then_delete(writable: tuple[TestClient, KnowledgeBase]) -> None:
    client, kb = writable
    response = client.post(
        "/api/documents", files=[("files", ("sourdough.md", NEW_NOTE.encode(), "text/markdown"))]
    )
    assert response.status_code == 200
    [result] = response.json()["files"]
    assert result["status"] == "indexed" and result["document"]["chunks"] >= 1
    uploaded = Path(result["document"]["path"])
    assert uploaded == (kb.path / "uploads" / "sourdough.md").resolve()
    for question in ("What ratio does my sourdough levain use?", "面团烤多久？"):
        hits = client.get("/api/search", params={"q": question, "limit": 3}).json()
        assert hits[0]["path"] == str(uploaded), question
    listed = {d["path"]: d for d in client.get("/api/documents").json()}
    assert listed[str(uploaded)]["uploaded"] and listed[str(uploaded)]["state"] == "indexed"
    assert any(c["uploads"] for c in client.get("/api/collections").json())

    again = client.post("/api/documents", files=[("files", ("sourdough.md", NEW_NOTE.encode()))])
    assert again.json()["files"][0]["status"] == "unchanged"

    deleted = client.delete(f"/api/documents/{result['document']['id']}")
    assert deleted.status_code == 200 and deleted.json()["file_deleted"]
    assert not uploaded.exists()
    hits = client.get("/api/search", params={"q": "sourdough levain ratio"}).json()
    assert all(h["path"] != str(uploaded) for h in hits)
    assert client.delete(f"/api/documents/{result['document']['id']}").status_code == 404


def test_upload_refuses_path_traversal(writable: tuple[TestClient, KnowledgeBase]) -> None:
    client, kb = writable
    before = set(kb.path.parent.rglob("*"))
    for name in ("../evil.md", "..", "sub/evil.md", ".hidden.md"):
        response = client.post("/api/documents", files=[("files", (name, b"# evil\n"))])
        assert response.status_code == 400, name
        assert "file name" in response.json()["detail"]
    assert set(kb.path.parent.rglob("*")) == before
    assert len(client.get("/api/documents").json()) == kb.status().documents


def test_upload_refuses_an_oversized_file(writable: tuple[TestClient, KnowledgeBase]) -> None:
    client, kb = writable
    kb.settings.max_file_mb = 0.001  # about 1 kB
    small = ("files", ("small.md", b"# small\n\nfine.\n"))
    big = ("files", ("big.md", b"# big\n\n" + b"word " * 1000))
    response = client.post("/api/documents", files=[small, big])
    assert response.status_code == 413
    assert "big.md" in response.json()["detail"] and "MB" in response.json()["detail"]
    assert not (kb.path / "uploads").exists()  # the batch is refused before anything is saved


def test_an_upload_over_the_limit_is_refused_before_it_is_read(
    kb_copy: tuple[KnowledgeBase, Path],
) -> None:
    """An upload larger than the limit gets 413 without being spooled: one declaring a
    larger Content-Length before any of its body is sent, a chunked one (no length) as
    soon as it passes the limit. Nothing is kept, and the server goes on answering."""
    kb, _ = kb_copy
    kb.settings.max_file_mb = 0.05  # a request may carry 51,200 bytes + UPLOAD_OVERHEAD
    documents = kb.status().documents
    boundary = "sourcebook-test-boundary"
    head = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=files; filename=huge.md\r\n"
        "Content-Type: text/markdown\r\n\r\n# 很大的文件 A huge file\n\n"
    ).encode()
    multipart = {"Content-Type": f"multipart/form-data; boundary={boundary}"}

    def assert_refused(status: int, body: bytes, connection: str | None) -> None:
        assert status == 413
        detail = json.loads(body)["detail"]
        assert "0.05 MB limit" in detail and "SOURCEBOOK_MAX_FILE_MB" in detail, detail
        assert connection == "close"  # the rest of the body is not read either

    with LiveServer(create_app(kb)) as server:
        # httpx (like most clients) sends the whole body before it reads the response;
        # http.client can stop after the headers, which shows that the answer does not
        # wait for the body: 10 GB are declared and none of it is ever sent
        host, port = server.url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.putrequest("POST", "/api/documents")
        for name, value in {**multipart, "Content-Length": str(10 * 1024**3)}.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        assert_refused(response.status, response.read(), response.getheader("connection"))
        connection.close()

        sent = 0
        total = 64 * 1024 * 1024

        def chunked_body() -> Iterator[bytes]:
            nonlocal sent
            yield head
            block = ("正文 body text " * 4096).encode()[: 64 * 1024]
            while sent < total:
                sent += len(block)
                yield block

        with httpx.Client(base_url=server.url, timeout=60) as client:
            response = client.post("/api/documents", content=chunked_body(), headers=multipart)
            assert response.request.headers["transfer-encoding"] == "chunked"
            assert_refused(response.status_code, response.content, response.headers["connection"])
            assert sent < total  # the server stopped reading: the client could not go on

            assert client.get("/api/health").status_code == 200
            assert client.get("/api/status").json()["documents"] == documents
            assert not (kb.path / "uploads").exists()  # nothing saved, nothing indexed
            small = [("files", ("small.md", "# 小文件\n\nA small file is fine.\n".encode()))]
            accepted = client.post("/api/documents", files=small)
            assert accepted.status_code == 200
            assert accepted.json()["files"][0]["status"] == "indexed"


def test_corrupt_pdf_is_reported_and_the_rest_indexed(
    writable: tuple[TestClient, KnowledgeBase],
) -> None:
    client, kb = writable
    response = client.post(
        "/api/documents",
        files=[
            ("files", ("broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog", "application/pdf")),
            ("files", ("面包笔记.md", NEW_NOTE.encode(), "text/markdown")),
            ("files", ("tool.exe", b"MZ\x90\x00", "application/octet-stream")),
        ],
    )
    assert response.status_code == 200
    results = {f["name"]: f for f in response.json()["files"]}
    assert results["broken.pdf"]["status"] == "failed" and results["broken.pdf"]["reason"]
    assert results["tool.exe"]["status"] == "unsupported"
    assert results["面包笔记.md"]["status"] == "indexed"
    assert sorted(p.name for p in (kb.path / "uploads").iterdir()) == ["面包笔记.md"]
    hits = client.get("/api/search", params={"q": "sourdough levain ratio", "limit": 1}).json()
    assert hits[0]["path"].endswith("uploads/面包笔记.md")


def test_resync_one_document(
    writable: tuple[TestClient, KnowledgeBase], kb_copy: tuple[KnowledgeBase, Path]
) -> None:
    client, _ = writable
    _, notes = kb_copy
    doc_id = document_id(client, "llm/lora.md")
    note = notes / "llm" / "lora.md"
    note.write_text(note.read_text() + "\nLoRA 的 dropout 我一般设成 0.05。\n")
    states = {d["id"]: d["state"] for d in client.get("/api/documents").json()}
    assert states[doc_id] == "changed"
    response = client.post(f"/api/documents/{doc_id}/sync")
    assert response.status_code == 200
    body = response.json()
    assert body["report"]["updated"] == 1 and body["document"]["path"] == str(note)
    assert body["document"]["id"] == doc_id
    assert {d["id"]: d["state"] for d in client.get("/api/documents").json()}[doc_id] == "indexed"
    note.unlink()
    gone = client.post(f"/api/documents/{doc_id}/sync").json()
    assert gone["report"]["removed"] == 1 and gone["document"] is None


GARDEN = """# Garden log 花园日志

## Watering 浇水

The greenhouse tomatoes get {litres} litres each at {hour}, codename {codename}.

温室番茄每天{time}浇水，暗号是{暗号}。
"""
GARDEN_VERSIONS = [
    {"litres": "1.5", "hour": "6 a.m.", "codename": "KESTREL", "time": "早上六点", "暗号": "青松"},
    {"litres": "2", "hour": "7 p.m.", "codename": "OSPREY", "time": "晚上七点", "暗号": "白桦"},
    {"litres": "3", "hour": "noon", "codename": "PELICAN", "time": "中午十二点", "暗号": "红枫"},
]


def test_an_edited_document_keeps_its_id(
    writable: tuple[TestClient, KnowledgeBase], kb_copy: tuple[KnowledgeBase, Path]
) -> None:
    """Links to /api/documents/{id} survive edits: re-indexing a changed file (one
    document's sync, a whole sync, a re-upload) keeps the id, serves the new text under
    it, and search finds only the new text; the document's groups stay with it."""
    client, kb = writable
    _, notes = kb_copy
    note = notes / "garden.md"
    note.write_text(GARDEN.format(**GARDEN_VERSIONS[0]), encoding="utf-8")
    assert kb.sync().added == 1
    kb.set_document_groups(note, ["garden"])
    doc_id = document_id(client, "notes/garden.md")

    def edit(version: dict[str, str]) -> None:
        time.sleep(0.01)  # a new modification time, as a real edit has
        note.write_text(GARDEN.format(**version), encoding="utf-8")

    def assert_serves(version: dict[str, str], before: dict[str, str]) -> None:
        text = client.get(f"/api/documents/{doc_id}/text").json()["text"]
        assert version["codename"] in text and version["暗号"] in text
        assert before["codename"] not in text and before["暗号"] not in text
        for query, new, old in (
            (f"codename {version['codename']}", version["codename"], before["codename"]),
            (f"温室番茄{version['time']}浇水", version["暗号"], before["暗号"]),
        ):
            hits = client.get("/api/search", params={"q": query, "limit": 10}).json()
            assert hits[0]["doc_id"] == doc_id and new in hits[0]["text"], query
            assert not any(old in hit["text"] for hit in hits), query
        assert kb.document_groups()[str(note)] == ["garden"]  # grants are kept by path
        keyword, vectors = kb.store.index_sizes()
        assert keyword == vectors == kb.status().chunks  # the old chunks left both indexes

    edit(GARDEN_VERSIONS[1])
    response = client.post(f"/api/documents/{doc_id}/sync")
    assert response.status_code == 200 and response.json()["report"]["updated"] == 1
    assert response.json()["document"]["id"] == doc_id
    assert_serves(GARDEN_VERSIONS[1], GARDEN_VERSIONS[0])

    edit(GARDEN_VERSIONS[2])
    assert kb.sync().updated == 1
    assert document_id(client, "notes/garden.md") == doc_id
    assert_serves(GARDEN_VERSIONS[2], GARDEN_VERSIONS[1])

    # an upload replaced by one of the same name keeps its id as well
    first = client.post("/api/documents", files=[("files", ("面包.md", NEW_NOTE.encode()))])
    upload_id = first.json()["files"][0]["document"]["id"]
    changed = NEW_NOTE.replace("250 度", "230 度")
    again = client.post("/api/documents", files=[("files", ("面包.md", changed.encode()))])
    assert again.json()["files"][0]["status"] == "indexed"
    assert again.json()["files"][0]["document"]["id"] == upload_id
    assert "230 度" in client.get(f"/api/documents/{upload_id}/text").json()["text"]

    # a path removed and indexed again is a new document: the old id is gone for good
    note.unlink()
    assert kb.sync().removed == 1
    note.write_text(GARDEN.format(**GARDEN_VERSIONS[0]), encoding="utf-8")
    kb.sync()
    assert document_id(client, "notes/garden.md") != doc_id
    assert client.get(f"/api/documents/{doc_id}/text").status_code == 404


def test_searches_during_uploads(kb_copy: tuple[KnowledgeBase, Path]) -> None:
    """Reads share the knowledge base while writes are exclusive: searches issued from
    several threads during uploads all succeed, and see each upload once it is done."""
    kb, _ = kb_copy
    stop = threading.Event()
    with LiveServer(create_app(kb)) as server, httpx.Client(base_url=server.url) as http:

        def search_until_stopped(question: str) -> list[int]:
            codes = []
            while not stop.is_set():
                codes.append(http.get("/api/search", params={"q": question}).status_code)
            return codes

        with ThreadPoolExecutor(3) as pool:
            searches = [pool.submit(search_until_stopped, q) for q in (CHINESE[0], ENGLISH[0])]
            for n in range(3):
                note = f"# Upload {n}\n\nThe secret word of upload {n} is zebra{n}quartz.\n"
                files = [("files", (f"upload-{n}.md", note.encode()))]
                assert http.post("/api/documents", files=files, timeout=120).status_code == 200
                hits = http.get("/api/search", params={"q": f"zebra{n}quartz"}).json()
                assert hits[0]["path"].endswith(f"upload-{n}.md")
            stop.set()
            codes = [code for future in searches for code in future.result()]
    assert codes and set(codes) == {200}


def test_concurrent_reads_match_sequential_ones(live: str) -> None:
    """The measurement behind letting reads share the knowledge base (see server.py)."""
    questions = [
        CHINESE[0],
        ENGLISH[0],
        "GPT-2 的词表有多大？",
        "Why use LayerNorm in Transformers?",
    ]
    with httpx.Client(base_url=live, timeout=120) as http:

        def ranking(question: str) -> list[int]:
            response = http.get("/api/search", params={"q": question, "limit": 5})
            assert response.status_code == 200
            return [hit["chunk_id"] for hit in response.json()]

        expected = [ranking(q) for q in questions]
        with ThreadPoolExecutor(4) as pool:
            concurrent = list(pool.map(ranking, questions * 3))
    assert concurrent == expected * 3


def test_read_write_lock_excludes_writers_from_readers() -> None:
    lock = ReadWriteLock()
    order: list[str] = []
    lock.acquire_read()
    lock.acquire_read()  # readers share

    def write() -> None:
        with lock.writing():
            order.append("write")

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(0.2)
    assert order == []  # the writer waits for both readers
    order.append("read done")
    lock.release_read()
    lock.release_read()
    writer.join(timeout=5)
    assert order == ["read done", "write"]


# --- the API description ---------------------------------------------------------------


def test_openapi_declares_responses_for_every_route(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    operations = [
        (path, method, operation)
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    ]
    assert len(operations) >= 13
    for path, method, operation in operations:
        ok = operation["responses"]["200"]
        content = ok.get("content", {})
        assert content, f"{method} {path} has no response model"
        for media in content.values():
            assert media["schema"] and media["schema"] != {}, f"{method} {path}"
        if operation.get("parameters") or operation.get("requestBody"):
            assert any(code.startswith("4") for code in operation["responses"]), path
    ask = schema["paths"]["/api/ask"]["post"]["responses"]
    assert ask["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Answer"
    }
    assert {"400", "422", "503"} <= set(ask)
    stream = schema["paths"]["/api/ask/stream"]["post"]["responses"]
    assert list(stream["200"]["content"]) == ["text/event-stream"]
    assert stream["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }
    assert "413" in schema["paths"]["/api/documents"]["post"]["responses"]


# --- OpenAI-compatible -----------------------------------------------------------------


def test_openai_models(ai: openai.OpenAI) -> None:
    assert [model.id for model in ai.models.list()] == ["sourcebook"]


def test_openai_chat(ai: openai.OpenAI) -> None:
    completion = ai.chat.completions.create(
        model="sourcebook", messages=[{"role": "user", "content": CHINESE[0]}]
    )
    message = completion.choices[0].message
    assert message.role == "assistant" and CHINESE[2] in (message.content or "")
    extra = message.model_extra or {}
    assert_cited({"text": message.content, **extra}, CHINESE[1])
    assert completion.choices[0].finish_reason == "stop"


def test_openai_chat_stream(ai: openai.OpenAI) -> None:
    stream = ai.chat.completions.create(
        model="sourcebook",
        stream=True,
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": ENGLISH[0]},
        ],
    )
    chunks = list(stream)
    content = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert ENGLISH[2] in content
    last = chunks[-1].choices[0]
    assert last.finish_reason == "stop"
    extra = last.delta.model_extra or {}
    assert_cited({"text": content, **extra}, ENGLISH[1])


def test_openai_chat_follow_up_uses_the_conversation(ai: openai.OpenAI) -> None:
    completion = ai.chat.completions.create(
        model="sourcebook",
        messages=[
            {"role": "user", "content": "LoRA 为什么能减少显存？"},
            {"role": "assistant", "content": "因为只训练低秩矩阵 A 和 B。[1]"},
            {"role": "user", "content": "那它的 rank r 一般取多少？"},
        ],
    )
    message = completion.choices[0].message
    assert "8 或 16" in (message.content or "")


def test_openai_errors(ai: openai.OpenAI, live: str) -> None:
    with pytest.raises(openai.NotFoundError, match="sourcebook"):
        ai.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="user"):
        ai.chat.completions.create(
            model="sourcebook", messages=[{"role": "assistant", "content": "hello"}]
        )
    raw = httpx.post(
        f"{live}/v1/chat/completions",
        json={"model": "sourcebook", "messages": [{"role": "user", "content": " "}]},
    )
    assert raw.status_code == 400
    assert json.loads(raw.text)["error"]["message"] == "the question is empty"


# --- generate mode (a scripted model; retrieval and verification are the real ones) --------

# the first sentence is supported by the top passage, the second by nothing
DRAFT = (
    "Each worker loads prefetch_factor batches in advance, two by default [1]. "
    "The Eiffel Tower is in Paris [1]."
)


class ScriptedLLM:
    """Replies with `DRAFT` word by word, `delay` seconds apart."""

    name = "scripted"

    def __init__(self) -> None:
        self.delay = 0.0

    def stream(
        self, messages: Sequence[Message], max_tokens: int, temperature: float
    ) -> Iterator[str]:
        for piece in re.findall(r"\S+\s*", DRAFT):
            time.sleep(self.delay)
            yield piece

    def complete(self, messages: Sequence[Message], max_tokens: int, temperature: float) -> str:
        return "".join(self.stream(messages, max_tokens, temperature))

    def count_tokens(self, text: str) -> int:
        return count_tokens(text)


@pytest.fixture
def generating(kb_copy: tuple[KnowledgeBase, Path]) -> Iterator[tuple[str, ScriptedLLM]]:
    """A live server whose knowledge base (a writable copy) has a language model."""
    path = kb_copy[0].path
    llm = ScriptedLLM()
    settings = Settings(kb=path, answer_cache=False)
    with KnowledgeBase(path, settings, llm=llm) as kb, LiveServer(create_app(kb)) as server:
        yield server.url, llm


def test_generate_stream_sends_the_draft_then_the_verified_answer(
    generating: tuple[str, ScriptedLLM],
) -> None:
    url, _ = generating
    body = {"question": ENGLISH[0], "mode": "generate"}
    with httpx.stream("POST", f"{url}/api/ask/stream", json=body, timeout=120) as response:
        assert response.status_code == 200
        events = parse_sse("".join(response.iter_text()))
    *tokens, (last, data) = events
    assert len(tokens) > 5 and {name for name, _ in tokens} == {"token"}
    assert "".join(json.loads(d)["text"] for _, d in tokens) == DRAFT
    answer = Answer.model_validate_json(data)
    assert last == "answer" and answer.mode == "generate" and answer.found
    assert "two by default" in answer.text and "Eiffel" not in answer.text
    assert [c.n for c in answer.citations] == [1] and "[1]" in answer.text
    assert answer.verification is not None
    assert [r for r in answer.verification.removed if "Eiffel" in r]


def test_openai_generate_model_sends_only_verified_text(
    generating: tuple[str, ScriptedLLM],
) -> None:
    url, _ = generating
    ai = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in ai.models.list()] == ["sourcebook", "sourcebook-generate"]
    messages: Any = [{"role": "user", "content": ENGLISH[0]}]
    stream = ai.chat.completions.create(model="sourcebook-generate", messages=messages, stream=True)
    content = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert "two by default" in content and "[1]" in content and "Eiffel" not in content
    reply = ai.chat.completions.create(model="sourcebook-generate", messages=messages)
    assert reply.choices[0].message.content == content


def test_a_client_leaving_mid_stream_does_not_block_writes(
    generating: tuple[str, ScriptedLLM],
) -> None:
    """The read lock a stream holds is released when the client goes away early."""
    url, llm = generating
    llm.delay = 1.0  # a slow model (18 s): the client leaves long before it finishes
    body = {"question": ENGLISH[0], "mode": "generate"}
    with httpx.stream("POST", f"{url}/api/ask/stream", json=body, timeout=120) as response:
        assert next(response.iter_lines()) == "event: token"
    started = time.monotonic()
    files = [("files", ("after.md", b"# After\n\nWritten after the stream.\n"))]
    upload = httpx.post(f"{url}/api/documents", files=files, timeout=60)
    assert upload.status_code == 200 and upload.json()["files"][0]["status"] == "indexed"
    assert time.monotonic() - started < 10


# --- serving -----------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"])
def test_loopback_hosts_are_allowed(host: str) -> None:
    check_host(host)


def test_other_hosts_are_refused(notes_kb: KnowledgeBase) -> None:
    for host in ("0.0.0.0", "::", "192.168.1.20", "example.com"):
        with pytest.raises(ValueError, match="no authentication yet"):
            check_host(host)
    result = CliRunner().invoke(cli_app, ["serve", "--kb", str(notes_kb.path), "--host", "0.0.0.0"])
    assert result.exit_code == 1
    assert "authentication" in result.stderr
