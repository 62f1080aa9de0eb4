"""Users, API keys, groups, document access rules and the audit log: through the
`KnowledgeBase` facade and the command line, on the sample notes with the real model."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sourcebook import KnowledgeBase
from sourcebook.store.access import AccessControl
from sourcebook.store.embedded import Filters, restricted
from sourcebook.surfaces.cli import app
from teams import (
    FINANCE_QUESTION,
    FINANCE_SECRETS,
    HR_QUESTION,
    HR_SECRETS,
    Team,
    build_team,
)

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def team(notes_kb: KnowledgeBase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    built = build_team(tmp_path_factory.mktemp("team"), notes_kb)
    yield built
    built.kb.close()


BOB = frozenset[str]()  # bob belongs to no group
ALICE = frozenset({"hr"})


# --- API keys --------------------------------------------------------------------------


def test_keys_are_stored_hashed_and_can_be_revoked(team: Team) -> None:
    access = team.kb.access
    info, key = access.create_key("alice")
    assert key.startswith("sb_") and len(key) > 30 and info.prefix == key[:11]
    # the key itself is nowhere in the database (nor in its write-ahead log)
    database = team.kb.path / "sourcebook.db"
    for file in (database, database.with_name("sourcebook.db-wal")):
        if file.exists():
            assert key.encode() not in file.read_bytes()
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT * FROM api_keys").fetchall()
    assert not any(key in str(value) for row in rows for value in row)

    user = access.authenticate(key)
    assert user is not None and user.name == "alice" and user.groups == ["hr"]
    assert access.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert access.authenticate("not-a-key") is None

    revoked = access.revoke_key(info.prefix)
    assert revoked.revoked is not None
    assert access.authenticate(key) is None
    assert access.authenticate(team.keys["alice"]) is not None  # her other key still works


# --- documents each reader may read ------------------------------------------------------


def test_rules_apply_at_ingest(team: Team) -> None:
    groups = team.kb.document_groups()
    assert groups == {team.hr_path: ["hr"], team.finance_path: ["finance"]}
    assert team.kb.access_rules() == {"finance/*": ["finance"], "hr/*": ["hr"]}


@pytest.mark.parametrize(
    ("question", "path_of", "secrets", "member"),
    [
        (HR_QUESTION, "hr_path", HR_SECRETS, ALICE),
        (FINANCE_QUESTION, "finance_path", FINANCE_SECRETS, frozenset({"finance"})),
    ],
)
def test_search_and_ask_only_see_readable_documents(
    team: Team, question: str, path_of: str, secrets: tuple[str, ...], member: frozenset[str]
) -> None:
    kb, path = team.kb, getattr(team, path_of)
    # admin (no restriction) and a member find the note first, and the answer cites it
    for groups in (None, member):
        hits = kb.search(question, 5, restricted(None, groups))
        assert hits[0].path == path, [h.path for h in hits]
        answer = kb.ask(question, restricted(None, groups))
        assert answer.found and answer.citations[0].hit.path == path
    # bob gets a full result list from the other notes, without a trace of it
    hits = kb.search(question, 5, restricted(None, BOB))
    assert len(hits) == 5 and all(h.path != path for h in hits)
    assert not any(s in h.text or s in h.title for h in hits for s in secrets)
    answer = kb.ask(question, restricted(None, BOB))
    assert all(c.hit.path != path for c in answer.citations)
    dumped = answer.model_dump_json()
    assert not any(s in dumped for s in secrets)
    # the groups combine with the other filters: a path filter on the note gives nothing
    assert kb.search(question, 5, Filters(path_glob="hr/*", groups=BOB)) == []


def test_documents_text_and_ids_respect_the_reader(team: Team) -> None:
    kb = team.kb
    everything = kb.documents()
    hr = next(d for d in everything if d.path == team.hr_path)
    assert len(everything) == 22
    bob_sees = {d.path for d in kb.documents(BOB)}
    assert len(bob_sees) == 20 and team.hr_path not in bob_sees
    assert team.hr_path in {d.path for d in kb.documents(ALICE)}
    assert team.finance_path not in {d.path for d in kb.documents(ALICE)}
    assert kb.document_by_id(hr.id, BOB) is None
    assert kb.document_by_id(hr.id, ALICE) == hr
    with pytest.raises(KeyError, match="not in the knowledge base"):
        kb.document_text(team.hr_path, groups=BOB)
    assert "2.7 倍" in kb.document_text(team.hr_path, groups=ALICE)
    assert "2.7 倍" in kb.document_text(team.hr_path)  # the local user / an admin


def test_rule_changes_apply_to_indexed_and_later_documents(
    kb_copy: tuple[KnowledgeBase, Path],
) -> None:
    kb, notes = kb_copy
    lora = str(notes / "llm" / "lora.md")
    question = "LoRA 的 rank r 一般取多少？"
    assert kb.search(question, 3, restricted(None, BOB))[0].path == lora
    kb.set_access_rule("llm/*", ["ml", "research"])  # already indexed: re-derived now
    assert kb.document_groups()[lora] == ["ml", "research"]
    assert all(h.path != lora for h in kb.search(question, 10, restricted(None, BOB)))
    assert kb.search(question, 3, restricted(None, frozenset({"research"})))[0].path == lora
    # a note written later under the pattern is restricted from the moment it is indexed
    (notes / "llm" / "qlora.md").write_text(
        "# QLoRA\n\nQLoRA 把基座模型量化成 4-bit NF4，再在上面训练 LoRA。\n", encoding="utf-8"
    )
    kb.sync()
    assert kb.document_groups()[str(notes / "llm" / "qlora.md")] == ["ml", "research"]
    # a document's own groups replace the rules for it
    kb.set_document_groups(lora, ["everyone-in-ml"])
    assert kb.document_groups()[lora] == ["everyone-in-ml"]
    kb.set_document_groups(lora, [])
    kb.set_access_rule("llm/*", [])  # rule removed: readable by everyone again
    assert lora not in kb.document_groups()
    assert kb.search(question, 3, restricted(None, BOB))[0].path == lora
    with pytest.raises(KeyError, match="no access rule"):
        kb.set_access_rule("llm/*", [])
    with pytest.raises(ValueError, match="invalid group name"):
        kb.set_access_rule("llm/*", ["two words"])


def test_a_rule_changed_by_another_process_applies_at_once(
    kb_copy: tuple[KnowledgeBase, Path],
) -> None:
    """The server caches who may not read what; `sourcebook access set` run beside it
    (another connection to the same database) must take effect on its next search."""
    server, notes = kb_copy
    lora = str(notes / "llm" / "lora.md")
    question = "LoRA 的 rank r 一般取多少？"
    assert server.search(question, 3, restricted(None, BOB))[0].path == lora  # now cached
    with KnowledgeBase(server.path, server.settings) as command_line:
        command_line.set_access_rule("llm/*", ["ml"])
    assert all(h.path != lora for h in server.search(question, 10, restricted(None, BOB)))
    assert server.search(question, 3, restricted(None, frozenset({"ml"})))[0].path == lora
    with KnowledgeBase(server.path, server.settings) as command_line:
        command_line.set_access_rule("llm/*", [])
    assert server.search(question, 3, restricted(None, BOB))[0].path == lora


# --- audit log ---------------------------------------------------------------------------


def test_cli_calls_are_audited_and_the_log_filters_by_user_and_time(team: Team) -> None:
    kb = str(team.kb.path)
    before = datetime.now().astimezone()
    code, out, _ = run("search", "KV cache 显存", "--kb", kb, "--json", "-k", "3")
    assert code == 0
    returned = [hit["path"] for hit in json.loads(out)]
    code, out, _ = run("ask", HR_QUESTION, "--kb", kb, "--json")
    assert code == 0
    cited = [c["hit"]["path"] for c in json.loads(out)["citations"]]
    team.kb.access.record("bob", "http", "search", "budget", [], None)

    code, out, _ = run("audit", "--kb", kb, "--user", "local", "--json", "--limit", "2")
    assert code == 0
    ask, search = json.loads(out)  # newest first
    assert search["action"] == "search" and search["query"] == "KV cache 显存"
    assert search["surface"] == "cli" and search["documents"] == list(dict.fromkeys(returned))
    assert ask["action"] == "ask" and ask["query"] == HR_QUESTION
    assert ask["documents"] == list(dict.fromkeys(cited)) and team.hr_path in ask["documents"]
    assert datetime.fromisoformat(search["at"]) >= before - timedelta(seconds=1)

    code, out, _ = run("audit", "--kb", kb, "--user", "bob", "--json")
    assert code == 0 and [e["query"] for e in json.loads(out)] == ["budget"]
    later = (datetime.now() + timedelta(hours=1)).isoformat(timespec="seconds")
    code, out, _ = run("audit", "--kb", kb, "--since", later, "--json")
    assert code == 0 and json.loads(out) == []
    code, out, _ = run("audit", "--kb", kb, "--until", "2000-01-01", "--json")
    assert code == 0 and json.loads(out) == []
    code, out, _ = run("audit", "--kb", kb, "--user", "local", "--action", "ask")
    assert code == 0 and HR_QUESTION in out and "salary.md" in out
    code, _, err = run("audit", "--kb", kb, "--since", "yesterday")
    assert code == 1 and "not an ISO date" in err


def test_an_audit_failure_is_logged_and_does_not_raise(
    team: Team, caplog: pytest.LogCaptureFixture
) -> None:
    access = AccessControl.sqlite(team.kb.path / "sourcebook.db")
    access.close()  # a connection that can no longer write
    with caplog.at_level(logging.ERROR, logger="sourcebook.store.access"):
        assert access.record("alice", "http", "search", "年终奖") is False
    assert "could not write the audit log (search by alice via http)" in caplog.text


# --- command line ------------------------------------------------------------------------


def test_admin_commands_end_to_end(kb_copy: tuple[KnowledgeBase, Path]) -> None:
    base, _ = kb_copy
    kb = str(base.path)
    code, out, _ = run("user", "list", "--kb", kb)
    assert code == 0 and "no users" in out
    code, out, _ = run("user", "add", "张伟", "--group", "研发", "--kb", kb, "--json")
    assert code == 0 and json.loads(out)["groups"] == ["研发"]
    code, out, _ = run("user", "add", "admin", "--admin", "--kb", kb)
    assert code == 0 and "admin admin" in out

    code, out, err = run("key", "create", "张伟", "--kb", kb)
    key = out.strip()
    assert code == 0 and key.startswith("sb_") and "shown only now" in err
    assert base.access.authenticate(key) is not None
    code, out, _ = run("key", "list", "--user", "张伟", "--kb", kb, "--json")
    (listed,) = json.loads(out)
    assert code == 0 and listed["prefix"] == key[:11] and "key" not in listed

    code, out, _ = run("group", "add", "张伟", "hr", "ml", "--kb", kb, "--json")
    assert code == 0 and json.loads(out)["groups"] == ["hr", "ml", "研发"]
    code, out, _ = run("group", "remove", "张伟", "hr", "--kb", kb, "--json")
    assert code == 0 and json.loads(out)["groups"] == ["ml", "研发"]

    code, out, _ = run("access", "set", "training/*", "ml", "--kb", kb, "--json")
    assert code == 0 and json.loads(out)["rules"] == {"training/*": ["ml"]}
    code, out, _ = run("access", "list", "--documents", "--kb", kb, "--json")
    restricted_docs = json.loads(out)["documents"]
    assert code == 0 and len(restricted_docs) == 3
    assert all("/training/" in p and g == ["ml"] for p, g in restricted_docs.items())
    code, out, _ = run("access", "remove", "training/*", "--kb", kb)
    assert code == 0 and "no access rules" in out and base.document_groups() == {}

    code, out, _ = run("key", "revoke", key[:11], "--kb", kb)
    assert code == 0 and "revoked" in out and base.access.authenticate(key) is None
    code, out, _ = run("user", "remove", "张伟", "--kb", kb)
    assert code == 0 and "removed" in out

    actions = [e.action for e in base.access.audit(limit=20)]
    assert actions[:4] == ["user.remove", "key.revoke", "access.remove", "access.set"]
    assert {"user.add", "key.create", "group.add", "group.remove"} <= set(actions)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("user", "add", "admin"), "already exists"),
        (("user", "add", "two words"), "invalid user name"),
        (("user", "remove", "nobody"), "no user named 'nobody'"),
        (("key", "create", "nobody"), "no user named 'nobody'"),
        (("key", "revoke", "sb_00000000"), "no API key"),
        (("group", "remove", "admin", "hr"), "is not in group(s) hr"),
        (("group", "add", "admin", "a/b"), "invalid group name"),
        (("access", "remove", "nothing/*"), "no access rule"),
        (("access", "set", "  ", "hr"), "the path pattern is empty"),
    ],
)
def test_admin_commands_refuse_bad_input(team: Team, args: tuple[str, ...], message: str) -> None:
    if not any(u.name == "admin" for u in team.kb.access.users()):
        team.kb.access.add_user("admin", admin=True)
    code, out, err = run(*args, "--kb", str(team.kb.path))
    assert code == 1
    assert message in out + err
