"""Issue 12, the server: sources shown only to readers of something in them (REST and
MCP), the Host header and the origin of writes checked on every route, lone surrogates
and non-finite numbers answered with 422 (and the connection kept), bounded questions on
every surface, a deadline per request, and a shutdown that finishes requests in flight."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient
from mcp import Client
from typer.testing import CliRunner

from sourcebook import KnowledgeBase
from sourcebook.index.embedders import MAX_EMBEDDED_CHARS, get_embedder
from sourcebook.models import InvalidInput
from sourcebook.settings import MAX_QUESTION_CHARS
from sourcebook.store.embedded import Filters
from sourcebook.surfaces.cli import app as cli_app
from sourcebook.surfaces.mcp_server import create_mcp_server
from sourcebook.surfaces.server import Caller, create_app
from teams import HR_NOTE, Team, build_team
from test_server import LiveServer

LOCAL = "http://127.0.0.1"
MEGABYTE_QUESTION = "显存" * (512 * 1024)  # 1 MB of characters


@pytest.fixture(scope="module")
def team(notes_kb: KnowledgeBase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    base = tmp_path_factory.mktemp("trust-team")
    built = build_team(base, notes_kb)
    # a restricted file added as a source of its own: its path alone says what it holds
    secret = base / "layoffs-2025-plan.md"
    secret.write_text(HR_NOTE, encoding="utf-8")
    built.kb.set_document_groups(secret, ["hr"])
    assert built.kb.add([secret]).added == 1
    yield built
    built.kb.close()


@pytest.fixture(scope="module")
def client(team: Team) -> Iterator[TestClient]:
    with TestClient(create_app(team.kb), base_url=LOCAL) as test_client:
        yield test_client


def key(team: Team, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {team.keys[name]}"}


# --- 1: sources ----------------------------------------------------------------------------


def test_status_and_collections_list_only_sources_the_caller_may_read(
    client: TestClient, team: Team
) -> None:
    for name, sees in (("bob", False), ("alice", True), ("root", True)):
        status = client.get("/api/status", headers=key(team, name))
        collections = client.get("/api/collections", headers=key(team, name))
        assert status.status_code == collections.status_code == 200
        for body in (status.text, collections.text):
            assert ("layoffs-2025-plan" in body) is sees, (name, body)
        assert str(team.notes) in status.text


def test_mcp_list_collections_lists_only_readable_sources(team: Team) -> None:
    async def collections(reader: Caller) -> str:
        async with Client(create_mcp_server(team.kb, lambda _: reader)) as mcp:
            result = await mcp.call_tool("list_collections", {})
            return json.dumps(result.structured_content)

    bob = Caller("bob", can_write=False, groups=frozenset())
    alice = Caller("alice", can_write=False, groups=frozenset({"hr"}))
    assert "layoffs-2025-plan" not in anyio.run(collections, bob)
    assert "layoffs-2025-plan" in anyio.run(collections, alice)


# --- 9: Host and Origin --------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/api/health", "/api/status", "/", "/search", "/mcp", "/docs"])
def test_a_foreign_host_header_is_refused_on_every_route(
    client: TestClient, team: Team, url: str
) -> None:
    refused = client.get(url, headers={"Host": "evil.example", **key(team, "root")})
    assert refused.status_code == 421, refused.text
    ok = client.get("/api/health", headers={"Host": "localhost:8321", **key(team, "root")})
    assert ok.status_code == 200


def test_cross_origin_writes_are_refused(kb_copy: tuple[KnowledgeBase, Path]) -> None:
    kb, _ = kb_copy
    upload = {"files": ("evil.md", b"# planted\n\nZEBRAPLANT was here.\n", "text/markdown")}
    with TestClient(create_app(kb), base_url=LOCAL) as http:
        for headers in (
            {"Origin": "http://evil.example"},
            {"Origin": "null"},
            {"Origin": "http://localhost:3000"},  # same site, another origin
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site"},
        ):
            refused = http.post("/api/documents", files=upload, headers=headers)
            assert refused.status_code == 403, (headers, refused.text)
            assert http.delete("/api/documents/1", headers=headers).status_code == 403
            ask = http.post("/api/ask", json={"question": "LoRA"}, headers=headers)
            assert ask.status_code == 403
        assert not [d for d in kb.documents() if "evil" in d.path]
        assert not kb.search("ZEBRAPLANT", 3) or "ZEBRAPLANT" not in kb.search("ZEBRAPLANT")[0].text
        # the server's own pages, and clients that are not browsers
        same = {"Origin": LOCAL, "Sec-Fetch-Site": "same-origin"}
        assert http.post("/api/documents", files=upload, headers=same).status_code == 200
        assert http.post("/api/ask", json={"question": "LoRA 是什么？"}).status_code == 200


# --- 10: JSON the route cannot encode ------------------------------------------------------


BAD_BODIES = [
    ("/api/ask", '{"question": "\\ud800"}'),
    ("/api/ask", '{"question": "LoRA \\udfff 显存"}'),
    ("/api/ask", '{"question": "LoRA", "filters": {"after": 1e400}}'),
    ("/api/ask", '{"question": "LoRA", "filters": {"after": NaN}}'),
    ("/api/ask/stream", '{"question": "LoRA", "filters": {"before": -Infinity}}'),
    (
        "/v1/chat/completions",
        '{"model": "sourcebook", "messages": [{"role": "user", "content": "\\ud800"}]}',
    ),
]


@pytest.mark.parametrize(("url", "body"), BAD_BODIES)
def test_lone_surrogates_and_non_finite_numbers_get_422_on_a_kept_connection(
    live_notes: str, url: str, body: str
) -> None:
    with httpx.Client(base_url=live_notes, timeout=60) as http:
        bad = http.post(url, content=body, headers={"Content-Type": "application/json"})
        assert bad.status_code == 422, bad.text
        message = bad.json()["error"]["message"] if url.startswith("/v1") else bad.json()["detail"]
        assert "surrogate" in message or "finite" in message
        # the same connection answers the next request
        good = http.get("/api/search", params={"q": "LoRA 显存", "limit": 1})
        assert good.status_code == 200 and good.json()


def test_a_surrogate_query_or_a_control_character_upload_name_is_refused(
    kb_copy: tuple[KnowledgeBase, Path],
) -> None:
    kb, _ = kb_copy
    with TestClient(create_app(kb), base_url=LOCAL) as http:
        assert http.get("/api/search?q=%ED%A0%80").status_code < 500
        for name in ("a\nfailed b.md", "x\x1b[2J.md", "\udc80.md"):
            # multipart written by hand: clients escape such names themselves
            body = (
                b'--b\r\nContent-Disposition: form-data; name="files"; filename="'
                + name.encode("utf-8", "surrogateescape" if "\udc80" in name else "strict")
                + b'"\r\nContent-Type: text/markdown\r\n\r\n# x\n\ny\n\r\n--b--\r\n'
            )
            response = http.post(
                "/api/documents",
                content=body,
                headers={"Content-Type": "multipart/form-data; boundary=b"},
            )
            assert response.status_code == 400, (name, response.text)
        assert not (kb.path / "uploads").exists() or not list((kb.path / "uploads").iterdir())


@pytest.fixture(scope="module")
def live_notes(notes_kb: KnowledgeBase) -> Iterator[str]:
    with LiveServer(create_app(notes_kb)) as server:
        yield server.url


# --- 8: bounded work -----------------------------------------------------------------------


def test_a_megabyte_question_is_refused_quickly_on_every_surface(
    client: TestClient, team: Team
) -> None:
    root = key(team, "root")
    cpu = time.process_time()
    for response in (
        client.post("/api/ask", json={"question": MEGABYTE_QUESTION}, headers=root),
        client.post("/api/ask/stream", json={"question": MEGABYTE_QUESTION}, headers=root),
        client.post(
            "/v1/chat/completions",
            json={
                "model": "sourcebook",
                "messages": [{"role": "user", "content": MEGABYTE_QUESTION}],
            },
            headers=root,
        ),
        client.get("/api/search", params={"q": "显" * (MAX_QUESTION_CHARS + 1)}, headers=root),
    ):
        assert response.status_code == 422, response.text[:300]
    # in-process: this is the server's CPU too (parsing and validating 3 MB of JSON)
    assert time.process_time() - cpu < 5
    with pytest.raises(InvalidInput, match="SOURCEBOOK_MAX_QUESTION_CHARS"):
        team.kb.ask(MEGABYTE_QUESTION)
    with pytest.raises(InvalidInput, match="surrogate"):
        team.kb.search("LoRA \ud800")

    async def mcp_search() -> bool:
        reader = Caller("bob", can_write=False, groups=frozenset())
        async with Client(create_mcp_server(team.kb, lambda _: reader)) as mcp:
            result = await mcp.call_tool("search", {"query": "x" * (MAX_QUESTION_CHARS + 1)})
            return result.is_error

    assert anyio.run(mcp_search)
    result = CliRunner().invoke(
        cli_app, ["search", "x" * (MAX_QUESTION_CHARS + 1), "--kb", str(team.kb.path)]
    )
    assert result.exit_code == 1 and "limit" in result.stderr


HUGE_GLOBS = ["a" * 1_000_000, "[!" * 2000]  # 17 s and 3 s to compile before the bound


def test_huge_filters_are_refused_before_any_matching(client: TestClient, team: Team) -> None:
    root = key(team, "root")
    cpu = time.process_time()
    for glob in HUGE_GLOBS:
        for filters in ({"path": glob}, {"exclude": glob}, {"tags": [glob]}):
            ask = client.post(
                "/api/ask", json={"question": "LoRA", "filters": filters}, headers=root
            )
            assert ask.status_code == 422, ask.text[:300]
    too_many = client.post(
        "/api/ask", json={"question": "LoRA", "filters": {"tags": ["t"] * 33}}, headers=root
    )
    assert too_many.status_code == 422
    for params in (
        {"path": "[!" * 2000},
        {"tag": ["x" * 600]},
        {"tag": [str(i) for i in range(40)]},
    ):
        search = client.get("/api/search", params={"q": "LoRA", **params}, headers=root)
        assert search.status_code == 422, (params, search.text[:300])
    assert time.process_time() - cpu < 5
    # the facade refuses them too (the CLI's --path, Python callers), and rules
    for filters in (Filters(path_glob="[!" * 2000), Filters(tags=("x",) * 33)):
        with pytest.raises(InvalidInput, match="limit"):
            team.kb.search("LoRA", 3, filters)
    with pytest.raises(InvalidInput, match="limit"):
        team.kb.set_access_rule("[!" * 2000, ["hr"])
    result = CliRunner().invoke(
        cli_app, ["search", "LoRA", "--path", "[!" * 2000, "--kb", str(team.kb.path)]
    )
    assert result.exit_code == 1 and "limit" in result.stderr

    async def mcp_search() -> bool:
        reader = Caller("bob", can_write=False, groups=frozenset())
        async with Client(create_mcp_server(team.kb, lambda _: reader)) as mcp:
            result = await mcp.call_tool("search", {"query": "LoRA", "path": "[!" * 2000})
            return result.is_error

    assert anyio.run(mcp_search)
    # an ordinary glob still works
    ok = client.post(
        "/api/ask", json={"question": "LoRA", "filters": {"path": "*.md"}}, headers=root
    )
    assert ok.status_code == 200


def test_a_message_of_many_content_parts_is_refused(client: TestClient, team: Team) -> None:
    parts = [{"type": "text", "text": "显存"}] * 20_000  # 0.8 MB; each part is valid
    body = {"model": "sourcebook", "messages": [{"role": "user", "content": parts}]}
    response = client.post("/v1/chat/completions", json=body, headers=key(team, "root"))
    assert response.status_code == 422, response.text[:300]
    few = [{"type": "text", "text": "LoRA 为什么"}, {"type": "text", "text": "能减少显存？"}]
    body = {"model": "sourcebook", "messages": [{"role": "user", "content": few}]}
    assert client.post("/v1/chat/completions", json=body, headers=key(team, "root")).is_success


def test_what_is_embedded_is_truncated_to_the_model_budget() -> None:
    e5 = get_embedder("multilingual-e5-small")
    started = time.perf_counter()
    vector = e5.embed_query(MEGABYTE_QUESTION)  # was minutes
    assert vector.shape == (e5.dim,) and time.perf_counter() - started < 30
    # only a prefix within the model's budget is read: the rest changes nothing
    assert float(vector @ e5.embed_query(MEGABYTE_QUESTION[:MAX_EMBEDDED_CHARS])) > 0.9999


def test_a_request_past_its_deadline_gets_503(kb_copy: tuple[KnowledgeBase, Path]) -> None:
    kb, _ = kb_copy
    kb.settings.request_timeout = 1e-9  # passed before the first stage is reached
    with TestClient(create_app(kb), base_url=LOCAL) as http:
        response = http.post("/api/ask", json={"question": "LoRA 为什么能减少显存？"})
        assert response.status_code == 503 and "SOURCEBOOK_REQUEST_TIMEOUT" in response.text
        response = http.get("/api/search", params={"q": "LoRA"})
        assert response.status_code == 503
    kb.settings.request_timeout = 30
    assert kb.ask("LoRA 为什么能减少显存？").found  # outside a request: no deadline


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_sigterm_finishes_requests_in_flight_within_seconds(
    kb_copy: tuple[KnowledgeBase, Path],
) -> None:
    kb, _ = kb_copy
    kb.close()  # the server process opens it
    port = free_port()
    env = {**os.environ, "SOURCEBOOK_KB": str(kb.path)}
    server = subprocess.Popen(
        [sys.executable, "-m", "sourcebook.surfaces.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None and time.monotonic() < deadline, "did not start"
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        questions = ["LoRA 为什么能减少显存？", "What is a KV cache?", "Adam 的默认 β2 是多少？"]
        with ThreadPoolExecutor(len(questions)) as pool:
            answers = [
                pool.submit(httpx.post, f"{url}/api/ask", json={"question": q}, timeout=60)
                for q in questions
            ]
            time.sleep(0.3)  # in flight
            server.send_signal(signal.SIGTERM)
            stopped = time.monotonic()
            server.wait(timeout=30)
            assert time.monotonic() - stopped < 10
            for answer in answers:
                assert answer.result().status_code == 200
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
