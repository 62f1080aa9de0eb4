"""The MCP server through the SDK's own client: `sourcebook mcp` over stdio (a real
subprocess) and /mcp on a real uvicorn server (streamable HTTP), on a knowledge base with
users and restricted documents (`teams.py`): the right notes in Chinese and English, cited
answers with structured citations, line ranges, each caller reading only their groups'
documents, API keys on HTTP, and the audit log."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import CallToolResult, TextContent
from typer.testing import CliRunner

from sourcebook import KnowledgeBase
from sourcebook.surfaces.cli import app as cli_app
from sourcebook.surfaces.server import create_app
from teams import FINANCE_QUESTION, FINANCE_SECRETS, HR_QUESTION, HR_SECRETS, Team, build_team
from test_server import LiveServer

SECRETS = HR_SECRETS + FINANCE_SECRETS
CHINESE = ("LoRA 为什么能减少显存？", "llm/lora.md")
ENGLISH = ("What does ONNX Runtime's execution provider do?", "deploy/onnx-runtime.md")
TOOLS = {"search", "ask", "get_document", "get_links", "list_collections"}


@pytest.fixture(scope="module")
def team(notes_kb: KnowledgeBase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    built = build_team(tmp_path_factory.mktemp("mcp-team"), notes_kb)
    yield built
    built.kb.close()


@pytest.fixture(scope="module")
def live(team: Team) -> Iterator[str]:
    with LiveServer(create_app(team.kb)) as server:
        yield server.url


Session = Callable[[Client], Awaitable[None]]


def over_stdio(team: Team, session: Session, key: str | None = None) -> None:
    # the test's environment (model caches), with the key only where one is given
    env = {name: value for name, value in os.environ.items() if name != "SOURCEBOOK_API_KEY"}
    if key:
        env["SOURCEBOOK_API_KEY"] = key
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "sourcebook.surfaces.cli", "mcp", "--kb", str(team.kb.path)],
        env=env,
    )

    async def main() -> None:
        async with Client(params) as client:
            await session(client)

    anyio.run(main)


def over_http(url: str, key: str, session: Session) -> None:
    async def main() -> None:
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
        async with http, Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client:
            await session(client)

    anyio.run(main)


def text_of(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


def everything(result: CallToolResult) -> str:
    """All a client receives: its text and its structured content."""
    return text_of(result) + json.dumps(result.structured_content, ensure_ascii=False)


def leaked(body: str) -> list[str]:
    return [secret for secret in SECRETS if secret in body]


async def check_tools(client: Client, team: Team) -> None:
    """The five tools on the sample notes, as a reader of everything."""
    tools = await client.list_tools()
    descriptions = {t.name: t.description or "" for t in tools.tools}
    assert set(descriptions) == TOOLS
    assert "Chinese" in descriptions["search"] and "[n]" in descriptions["ask"]

    for question, relative in (CHINESE, ENGLISH):
        result = await client.call_tool("search", {"query": question, "limit": 3})
        assert not result.is_error, text_of(result)
        passages = result.structured_content["results"]
        assert passages[0]["path"].endswith(relative), [p["path"] for p in passages]
        assert len(passages) <= 3

    result = await client.call_tool("ask", {"question": CHINESE[0]})
    assert not result.is_error, text_of(result)
    answer: dict[str, Any] = result.structured_content
    assert answer["found"] and answer["language"] == "zh"
    assert "[1]" in answer["text"] and answer["citations"]
    first = answer["citations"][0]
    assert first["n"] == 1 and first["path"].endswith(CHINESE[1]) and first["quotes"]
    assert first["line_start"] <= first["quote_lines"][0][0] <= first["line_end"]
    # the text a client's model reads: the answer, then its numbered sources with lines
    assert text_of(result).startswith(answer["text"])
    assert f"[1] {first['path']}:{first['line_start']}-{first['line_end']}" in text_of(result)

    path = first["path"]
    result = await client.call_tool("get_document", {"path": path, "start": 2, "end": 4})
    assert not result.is_error, text_of(result)
    lines = result.structured_content
    whole = team.kb.document_text(path)
    assert (
        lines
        == {
            "path": path,
            "absolute_path": path,  # the team's notes were added by their absolute path
            "title": lines["title"],
            "line_start": 2,
            "line_end": 4,
            "text": "\n".join(whole.split("\n")[1:4]),
            "truncated": False,
        }
    )
    result = await client.call_tool("get_document", {"path": path, "start": 5, "end": 2})
    assert result.is_error and "before" in text_of(result)

    # the HR note links to the finance note, which this reader may read
    result = await client.call_tool("get_links", {"path": team.hr_path})
    assert not result.is_error, text_of(result)
    [link] = result.structured_content["links"]
    assert (link["written"], link["line"]) == ("[[budget]]", 6)
    assert link["absolute_path"] == team.finance_path

    result = await client.call_tool("list_collections", {})
    collections = result.structured_content
    assert collections["documents"] == 22
    assert [c["path"] for c in collections["collections"]] == [str(team.notes)]


async def check_restricted(client: Client, team: Team) -> None:
    """As bob (no group): the HR and finance notes are never seen, nor their existence."""
    for question in (HR_QUESTION, FINANCE_QUESTION):
        result = await client.call_tool("search", {"query": question, "limit": 10})
        assert not result.is_error and not leaked(everything(result))
        assert team.hr_path not in everything(result)
        assert team.finance_path not in everything(result)
        result = await client.call_tool("ask", {"question": question})
        assert not result.is_error and not leaked(everything(result))
        assert team.hr_path not in everything(result)
    for path in (team.hr_path, team.finance_path):
        for tool in ("get_document", "get_links"):
            result = await client.call_tool(tool, {"path": path})
            assert result.is_error and "not in the knowledge base" in text_of(result)
            assert not leaked(everything(result))
    result = await client.call_tool("list_collections", {})
    assert result.structured_content["documents"] == 20


# --- stdio -------------------------------------------------------------------------------


def test_stdio_tools_as_the_local_user(team: Team) -> None:
    async def session(client: Client) -> None:
        await check_tools(client, team)
        # the local user reads everything, the restricted notes included
        result = await client.call_tool("ask", {"question": HR_QUESTION})
        assert "2.7" in text_of(result) and team.hr_path in everything(result)

    over_stdio(team, session)
    entries = team.kb.access.audit(user="local")
    assert {e.action for e in entries if e.surface == "mcp"} >= set(
        ["search", "ask", "document", "collections"]
    )


def test_stdio_with_a_key_reads_as_its_user(team: Team) -> None:
    async def session(client: Client) -> None:
        await check_restricted(client, team)

    over_stdio(team, session, key=team.keys["bob"])
    assert any(e.surface == "mcp" and e.action == "ask" for e in team.kb.access.audit(user="bob"))


def test_stdio_refuses_a_bad_key(team: Team) -> None:
    result = CliRunner().invoke(
        cli_app, ["mcp", "--kb", str(team.kb.path), "--key", "sb_wrongwrongwrong"]
    )
    assert result.exit_code == 1 and "API key is not valid" in result.output


# --- streamable HTTP ---------------------------------------------------------------------


def test_http_tools_and_groups(live: str, team: Team) -> None:
    async def as_root(client: Client) -> None:
        await check_tools(client, team)
        result = await client.call_tool("search", {"query": FINANCE_QUESTION})
        assert result.structured_content["results"][0]["path"] == team.finance_path

    async def as_alice(client: Client) -> None:
        result = await client.call_tool("ask", {"question": HR_QUESTION})
        assert "2.7" in text_of(result)
        assert result.structured_content["citations"][0]["path"] == team.hr_path
        result = await client.call_tool("get_document", {"path": team.finance_path})
        assert result.is_error and not any(s in everything(result) for s in FINANCE_SECRETS)
        # her note names the finance note, but she may not read it: not resolved
        result = await client.call_tool("get_links", {"path": team.hr_path})
        [link] = result.structured_content["links"]
        assert link["target"] == "budget" and link["path"] is None
        assert team.finance_path not in everything(result)

    async def as_bob(client: Client) -> None:
        await check_restricted(client, team)

    over_http(live, team.keys["root"], as_root)
    over_http(live, team.keys["alice"], as_alice)
    over_http(live, team.keys["bob"], as_bob)
    audit = team.kb.access.audit(limit=1000)
    mcp = {(e.user, e.action) for e in audit if e.surface == "mcp"}
    assert {("root", "document"), ("root", "links"), ("alice", "ask"), ("bob", "search")} <= mcp
    bob_read = [d for e in audit if e.user == "bob" and e.surface == "mcp" for d in e.documents]
    assert bob_read and team.hr_path not in bob_read and team.finance_path not in bob_read


def test_http_needs_a_valid_key(live: str) -> None:
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    headers = {"Accept": "application/json, text/event-stream"}
    for authorization in ({}, {"Authorization": "Bearer sb_wrongwrongwrong"}):
        response = httpx.post(f"{live}/mcp", json=initialize, headers=headers | authorization)
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == "Bearer"
        assert "API key" in response.json()["detail"]
