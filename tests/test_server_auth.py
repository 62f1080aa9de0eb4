"""The server with users: API keys on every /api and /v1 request, each caller reading only
the documents of their groups (search, answers, streamed answers, document list and text,
the OpenAI-compatible endpoint through the official client), admin-only writes, uploads
with groups, the audit log, and the rule for listening on a public address."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from sourcebook import KnowledgeBase
from sourcebook.surfaces.cli import app as cli_app
from sourcebook.surfaces.server import check_host, create_app
from teams import FINANCE_QUESTION, FINANCE_SECRETS, HR_QUESTION, HR_SECRETS, Team, build_team

SECRETS = HR_SECRETS + FINANCE_SECRETS

# a loopback server answers only requests for a loopback host (DNS rebinding)
LOCAL = "http://127.0.0.1"


@pytest.fixture(scope="module")
def team(notes_kb: KnowledgeBase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    built = build_team(tmp_path_factory.mktemp("team"), notes_kb)
    yield built
    built.kb.close()


@pytest.fixture(scope="module")
def client(team: Team) -> Iterator[TestClient]:
    with TestClient(create_app(team.kb), base_url=LOCAL) as test_client:
        yield test_client


def as_user(team: Team, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {team.keys[name]}"}


def leaked(body: str) -> list[str]:
    return [secret for secret in SECRETS if secret in body]


# --- authentication ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/api/health"),
        ("GET", "/api/status"),
        ("GET", "/api/search?q=LoRA"),
        ("GET", "/api/documents"),
        ("POST", "/api/ask"),
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
    ],
)
def test_every_request_needs_a_valid_key(client: TestClient, method: str, url: str) -> None:
    for headers in ({}, {"Authorization": "Bearer sb_wrongwrongwrong"}, {"Authorization": "x"}):
        response = client.request(method, url, headers=headers, json={})
        assert response.status_code == 401, response.text
        if url.startswith("/v1"):  # OpenAI's error format, which its clients show
            assert response.json()["error"]["code"] == "invalid_api_key"
        else:
            assert response.headers["www-authenticate"] == "Bearer"
            assert "API key" in response.json()["detail"]


def test_a_revoked_key_is_refused_at_once(client: TestClient, team: Team) -> None:
    info, key = team.kb.access.create_key("bob")
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/health", headers=headers).status_code == 200
    team.kb.access.revoke_key(str(info.id))
    response = client.get("/api/health", headers=headers)
    assert response.status_code == 401 and "revoked" in response.json()["detail"]


# --- reading: each caller sees only what they may read -----------------------------------


def test_search_hides_other_groups_documents(client: TestClient, team: Team) -> None:
    for question, path in ((HR_QUESTION, team.hr_path), (FINANCE_QUESTION, team.finance_path)):
        root = client.get("/api/search", params={"q": question}, headers=as_user(team, "root"))
        assert root.status_code == 200 and root.json()[0]["path"] == path
        bob = client.get(
            "/api/search", params={"q": question, "limit": 5}, headers=as_user(team, "bob")
        )
        assert bob.status_code == 200 and len(bob.json()) == 5
        assert not leaked(bob.text) and path not in bob.text
    alice = client.get("/api/search", params={"q": HR_QUESTION}, headers=as_user(team, "alice"))
    assert alice.json()[0]["path"] == team.hr_path
    alice = client.get(
        "/api/search", params={"q": FINANCE_QUESTION}, headers=as_user(team, "alice")
    )
    assert team.finance_path not in alice.text and not any(s in alice.text for s in FINANCE_SECRETS)


def test_answers_cite_only_readable_documents(client: TestClient, team: Team) -> None:
    body = {"question": HR_QUESTION}
    alice = client.post("/api/ask", json=body, headers=as_user(team, "alice")).json()
    assert alice["found"] and alice["citations"][0]["hit"]["path"] == team.hr_path
    assert "2.7" in alice["text"]
    bob = client.post("/api/ask", json=body, headers=as_user(team, "bob"))
    assert bob.status_code == 200 and not leaked(bob.text) and team.hr_path not in bob.text
    stream = client.post("/api/ask/stream", json=body, headers=as_user(team, "bob"))
    assert stream.status_code == 200 and "event: answer" in stream.text
    assert not leaked(stream.text) and team.hr_path not in stream.text
    stream = client.post("/api/ask/stream", json=body, headers=as_user(team, "alice"))
    assert "2.7" in stream.text and team.hr_path in stream.text


def test_document_list_and_text_hide_other_groups_documents(client: TestClient, team: Team) -> None:
    listed = client.get("/api/documents", headers=as_user(team, "root")).json()
    ids = {d["path"]: d["id"] for d in listed}
    groups = {d["path"]: d["groups"] for d in listed}
    assert groups[team.hr_path] == ["hr"] and groups[team.finance_path] == ["finance"]
    hr_id = ids[team.hr_path]

    bob = client.get("/api/documents", headers=as_user(team, "bob"))
    assert len(bob.json()) == 20 and not leaked(bob.text) and "salary.md" not in bob.text
    alice = client.get("/api/documents", headers=as_user(team, "alice")).json()
    assert {d["path"] for d in alice} == {p for p in ids if p != team.finance_path}

    text = client.get(f"/api/documents/{hr_id}/text", headers=as_user(team, "bob"))
    assert text.status_code == 404 and not leaked(text.text)
    text = client.get(f"/api/documents/{hr_id}/text", headers=as_user(team, "alice"))
    assert text.status_code == 200 and "2.7 倍" in text.json()["text"]
    collections = client.get("/api/collections", headers=as_user(team, "bob")).json()
    assert sum(c["documents"] for c in collections) == 20


def test_status_counts_only_readable_documents(client: TestClient, team: Team) -> None:
    """/api/status must not reveal how many documents other groups have: each caller's
    counts are those of the documents (and their chunks) they may read."""
    total = team.kb.status()
    chunks = {d.path: d.chunks for d in team.kb.documents()}
    hr, finance = chunks[team.hr_path], chunks[team.finance_path]
    expected = {
        "root": (total.documents, total.chunks),  # an admin reads everything
        "alice": (total.documents - 1, total.chunks - finance),
        "bob": (total.documents - 2, total.chunks - hr - finance),
    }
    for name, (documents, chunk_count) in expected.items():
        headers = as_user(team, name)
        status = client.get("/api/status", headers=headers)
        assert status.status_code == 200
        body = status.json()
        assert (body["documents"], body["chunks"]) == (documents, chunk_count), name
        readable = client.get("/api/documents", headers=headers).json()
        assert (len(readable), sum(d["chunks"] for d in readable)) == (documents, chunk_count)
    assert len(set(expected.values())) == 3  # the three callers really see different counts


def test_openai_endpoint_answers_only_from_readable_documents(
    client: TestClient, team: Team
) -> None:
    def ask(name: str, question: str, stream: bool = False) -> str:
        ai = openai.OpenAI(base_url=f"{LOCAL}/v1", api_key=team.keys[name], http_client=client)
        messages: list[openai.types.chat.ChatCompletionMessageParam] = [
            {"role": "user", "content": question}
        ]
        if stream:
            chunks = ai.chat.completions.create(model="sourcebook", messages=messages, stream=True)
            return json.dumps([c.model_dump() for c in chunks], ensure_ascii=False)
        completion = ai.chat.completions.create(model="sourcebook", messages=messages)
        return completion.model_dump_json()

    assert "48,000" in ask("root", FINANCE_QUESTION)
    for stream in (False, True):
        bob = ask("bob", FINANCE_QUESTION, stream)
        assert not leaked(bob) and team.finance_path not in bob
        alice = ask("alice", FINANCE_QUESTION, stream)
        assert not any(s in alice for s in FINANCE_SECRETS) and team.finance_path not in alice
    with pytest.raises(openai.AuthenticationError, match="not valid"):
        openai.OpenAI(
            base_url=f"{LOCAL}/v1", api_key="sb_nope_nope_nope", http_client=client
        ).models.list()


# --- writing, uploads with groups ----------------------------------------------------------


def test_only_admins_write_and_uploads_carry_groups(client: TestClient, team: Team) -> None:
    note = "# 采购流程\n\n采购超过 5 万元需要财务总监 FINCHLEY 审批。\n".encode()
    files = [("files", ("purchasing.md", note))]
    refused = client.post("/api/documents", files=files, headers=as_user(team, "alice"))
    assert refused.status_code == 403

    uploaded = client.post(
        "/api/documents",
        files=files,
        data={"groups": "finance, procurement"},
        headers=as_user(team, "root"),
    )
    assert uploaded.status_code == 200, uploaded.text
    document = uploaded.json()["files"][0]["document"]
    assert team.kb.document_groups()[document["path"]] == ["finance", "procurement"]

    question = {"question": "采购超过多少需要财务总监审批？"}
    alice = client.post("/api/ask", json=question, headers=as_user(team, "alice"))
    assert "FINCHLEY" not in alice.text and "purchasing.md" not in alice.text
    root = client.post("/api/ask", json=question, headers=as_user(team, "root")).json()
    assert root["citations"][0]["hit"]["path"] == document["path"]

    # bad group names are refused before anything is saved
    bad = client.post(
        "/api/documents", files=files, data={"groups": "a b"}, headers=as_user(team, "root")
    )
    assert bad.status_code == 400 and "invalid group name" in bad.json()["detail"]
    # a re-upload without groups falls back to the rules (none match uploads/): everyone
    again = client.post("/api/documents", files=files, headers=as_user(team, "root"))
    assert again.json()["files"][0]["status"] == "unchanged"
    assert document["path"] not in team.kb.document_groups()
    removed = client.delete(f"/api/documents/{document['id']}", headers=as_user(team, "alice"))
    assert removed.status_code == 403
    removed = client.delete(f"/api/documents/{document['id']}", headers=as_user(team, "root"))
    assert removed.status_code == 200

    (last,) = team.kb.access.audit(limit=1)
    assert (last.user, last.action, last.documents) == ("root", "remove", [document["path"]])
    uploads = team.kb.access.audit(user="root", action="upload", limit=5)
    assert [e.detail for e in uploads] == [None, "groups: finance, procurement"]
    assert all(e.documents == [document["path"]] for e in uploads)


# --- the audit log -------------------------------------------------------------------------


def test_requests_are_audited_with_who_what_and_which_documents(
    client: TestClient, team: Team
) -> None:
    client.get("/api/search", params={"q": "量化 int8", "limit": 3}, headers=as_user(team, "bob"))
    client.post("/api/ask", json={"question": HR_QUESTION}, headers=as_user(team, "alice"))
    ask, search = team.kb.access.audit(limit=2)
    assert (search.user, search.surface, search.action) == ("bob", "http", "search")
    assert search.query == "量化 int8" and len(search.documents) >= 1
    assert (ask.user, ask.action, ask.query) == ("alice", "ask", HR_QUESTION)
    assert ask.documents[0] == team.hr_path and ask.detail == "extractive, found"

    result = CliRunner().invoke(
        cli_app, ["audit", "--kb", str(team.kb.path), "--user", "bob", "--json"]
    )
    assert result.exit_code == 0
    entries = json.loads(result.stdout)
    assert entries[0]["query"] == "量化 int8" and {e["user"] for e in entries} == {"bob"}


# --- listening on a public address -------------------------------------------------------


def test_public_addresses_need_users(team: Team, kb_copy: tuple[KnowledgeBase, Path]) -> None:
    for host in ("0.0.0.0", "::", "192.168.1.20"):
        with pytest.raises(ValueError, match="no users"):
            check_host(host, authenticated=False)
        check_host(host, authenticated=True)
    check_host("127.0.0.1", authenticated=False)
    assert team.kb.access.has_users()
    single, _ = kb_copy
    assert not single.access.has_users()
    result = CliRunner().invoke(cli_app, ["serve", "--kb", str(single.path), "--host", "0.0.0.0"])
    assert result.exit_code == 1 and "sourcebook user add" in result.stderr


def test_without_users_a_public_server_refuses_requests(
    kb_copy: tuple[KnowledgeBase, Path],
) -> None:
    kb, _ = kb_copy
    with TestClient(create_app(kb), base_url=LOCAL) as local:
        assert local.get("/api/documents").status_code == 200  # single user, loopback
    with TestClient(create_app(kb, require_auth=True), base_url=LOCAL) as public:
        response = public.get("/api/documents")
        assert response.status_code == 401 and "no users" in response.json()["detail"]
