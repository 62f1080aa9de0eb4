"""Issue 13: the same behaviour on every backend. Each test runs on the embedded store
(SQLite + tantivy/usearch in the folder) and on PostgreSQL + Milvus Lite, real servers
started once per session by `servers.py` (each test gets its own database and
collection). Corpora are small: the point is the storage, not the ranking."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from servers import MilvusLiteServer, PostgresServer, milvus_server, postgres_server
from sourcebook import KnowledgeBase, Settings
from sourcebook.store.embedded import Filters

GARDEN = """# 花园笔记 Garden

## 浇水

番茄早上六点浇水，暗号青松。Tomatoes are watered at 6 a.m., codename KESTREL.

## Tools

The gpt-4o helper sorts seeds; 工具放在棚子里。
"""
TRAINING = """# Training notes

## Optimizers

AdamW decouples weight decay from the gradient update; 学习率预热用 500 步。
"""
SALARY = """# 薪资制度（内部）

2024 年的年终奖系数是 2.7 倍月薪，暗号 BLUEHERON。
"""


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def milvus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusLiteServer]:
    with milvus_server(tmp_path_factory.mktemp("milvus")) as server:
        yield server


@pytest.fixture(params=["embedded", "postgres+milvus"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings of a new knowledge base on the backend under test."""
    if request.param == "embedded":
        return Settings(kb=tmp_path / "kb")
    postgres: PostgresServer = request.getfixturevalue("postgres")
    milvus: MilvusLiteServer = request.getfixturevalue("milvus")
    return Settings(
        kb=tmp_path / "kb", database_url=postgres.new_database(), search_uri=milvus.new_collection()
    )


def environment(settings: Settings) -> dict[str, str]:
    """What a CLI or server subprocess needs to open the same knowledge base."""
    env = {**os.environ, "SOURCEBOOK_KB": str(settings.kb)}
    for name, value in (
        ("SOURCEBOOK_DATABASE_URL", settings.database_url),
        ("SOURCEBOOK_SEARCH_URI", settings.search_uri),
    ):
        if value:
            env[name] = value
    return env


def write_notes(folder: Path) -> Path:
    (folder / "hr").mkdir(parents=True)
    (folder / "garden.md").write_text(GARDEN, encoding="utf-8")
    (folder / "training.md").write_text(TRAINING, encoding="utf-8")
    (folder / "hr" / "salary.md").write_text(SALARY, encoding="utf-8")
    return folder


def names(kb: KnowledgeBase, query: str, filters: Filters | None = None) -> list[str]:
    return [Path(hit.path).name for hit in kb.search(query, limit=3, filters=filters)]


def test_ingest_and_search_in_both_languages(settings: Settings, tmp_path: Path) -> None:
    notes = write_notes(tmp_path / "notes")
    with KnowledgeBase.create(settings.kb, settings) as kb:
        report = kb.add([notes])
        assert report.added == 3 and not report.failed
        for query, expected in (
            ("番茄什么时候浇水", "garden.md"),  # Chinese
            ("KESTREL", "garden.md"),  # an English code word
            ("gpt-4o", "garden.md"),  # a token with a hyphen
            ("AdamW weight decay", "training.md"),
            ("学习率预热多少步", "training.md"),  # Chinese question, mixed note
            ("when are tomatoes watered", "garden.md"),  # cross-language note
        ):
            assert names(kb, query)[0] == expected, query
        assert kb.store.consistency_problems() == []
        status = kb.status()
        assert (status.documents, status.index_consistent) == (3, True)


def test_sync_edit_and_delete_keep_ids_and_drop_old_text(
    settings: Settings, tmp_path: Path
) -> None:
    notes = write_notes(tmp_path / "notes")
    with KnowledgeBase.create(settings.kb, settings) as kb:
        kb.add([notes])
        garden = kb.store.document(str(notes / "garden.md"))
        assert garden is not None
        (notes / "garden.md").write_text(GARDEN.replace("KESTREL", "OSPREY"), encoding="utf-8")
        (notes / "training.md").unlink()
        report = kb.sync()
        assert (report.updated, report.removed) == (1, 1)
        edited = kb.store.document(str(notes / "garden.md"))
        assert edited is not None and edited.id == garden.id  # the id survives the edit
        assert "KESTREL" not in " ".join(h.text for h in kb.search("KESTREL", limit=5))
        assert names(kb, "OSPREY")[0] == "garden.md"
        assert all(h.path != str(notes / "training.md") for h in kb.search("AdamW", limit=5))
        kb.remove([notes / "garden.md"])
        assert [d.path for d in kb.documents()] == [str(notes / "hr" / "salary.md")]
        assert kb.store.consistency_problems() == []
        # a path indexed again after removal gets a new id: old links never point elsewhere
        kb.add([notes / "garden.md"])
        again = kb.store.document(str(notes / "garden.md"))
        assert again is not None and again.id > garden.id


def test_a_csv_stored_in_parts_is_whole_on_both_backends(
    settings: Settings, tmp_path: Path
) -> None:
    from sourcebook.ingest.converters import convert

    table = tmp_path / "data" / "plants.csv"
    table.parent.mkdir()

    def write(rows: range) -> None:
        lines = ["植物 plant,浇水 watering"] + [f"plant{i:04d} 番茄,每{i % 7 + 1}天" for i in rows]
        table.write_text("\n".join(lines) + "\n", encoding="utf-8")

    write(range(300))
    settings = settings.model_copy(update={"csv_part_rows": 40})
    with KnowledgeBase.create(settings.kb, settings) as kb:
        assert kb.add([table.parent]).added == 1
        assert kb.document_text(table) == convert(table, table.read_bytes()).text
        hit = kb.search("plant0299", limit=1)[0]  # in the last of eight parts
        assert hit.line_start <= 301 <= hit.line_end
        write(range(1000, 1100))  # fewer rows: the old parts go
        assert kb.sync(wait=False).updated == 1
        assert kb.document_text(table) == convert(table, table.read_bytes()).text
        assert all("plant0299" not in h.text for h in kb.search("plant0299", limit=3))
        assert kb.store.consistency_problems() == []


def test_filters_apply_inside_the_search(settings: Settings, tmp_path: Path) -> None:
    notes = write_notes(tmp_path / "notes")
    with KnowledgeBase.create(settings.kb, settings) as kb:
        kb.add([notes])
        only_training = Filters(path_glob="training.md")
        assert names(kb, "番茄浇水", only_training) == ["training.md"]
        assert "garden.md" not in names(kb, "番茄浇水", Filters(exclude_glob="garden.md"))
        assert names(kb, "番茄", Filters(path_glob="nothing-*.md")) == []


def test_access_rules_never_leak_and_apply_at_once(settings: Settings, tmp_path: Path) -> None:
    notes = write_notes(tmp_path / "notes")
    with KnowledgeBase.create(settings.kb, settings) as kb:
        kb.set_access_rule("hr/*", ["hr"])
        kb.add([notes])
        outsider, member = Filters(groups=frozenset()), Filters(groups=frozenset({"hr"}))
        for query in ("年终奖系数", "BLUEHERON", "salary bonus"):
            hits = kb.search(query, limit=10, filters=outsider)
            assert all("salary" not in h.path and "BLUEHERON" not in h.text for h in hits)
        assert names(kb, "BLUEHERON", member)[0] == "salary.md"
        assert kb.status(frozenset()).documents == 2
        kb.set_access_rule("hr/*", [])  # the rule dropped: readable by everyone at once
        assert names(kb, "BLUEHERON", outsider)[0] == "salary.md"
        kb.set_document_groups(notes / "garden.md", ["gardeners"])  # and a grant
        assert "garden.md" not in names(kb, "KESTREL", outsider)
        assert kb.store.is_consistent() and kb.store.consistency_problems() == []


def test_answer_cache_is_purged_when_its_document_changes(
    settings: Settings, tmp_path: Path
) -> None:
    notes = write_notes(tmp_path / "notes")
    with KnowledgeBase.create(settings.kb, settings) as kb:
        kb.add([notes])
        garden = kb.store.document(str(notes / "garden.md"))
        training = kb.store.document(str(notes / "training.md"))
        assert garden is not None and training is not None
        kb.store.put_cached_answer("about-garden", '{"text": "6 a.m."}', [garden.content_hash])
        kb.store.put_cached_answer("about-training", "{}", [training.content_hash])
        assert kb.sync().cached_answers_purged == 0
        (notes / "garden.md").write_text(GARDEN.replace("六点", "七点"), encoding="utf-8")
        assert kb.sync().cached_answers_purged == 1
        assert kb.store.cached_answer("about-garden") is None
        assert kb.store.cached_answer("about-training") == "{}"


def test_sigkill_between_records_and_index_is_repaired(settings: Settings, tmp_path: Path) -> None:
    """A writer killed after its records were committed but before the index caught up
    (and, second run, after the index applied the log but before the watermark) leaves
    the index behind, never ahead; the next open replays the change log."""
    notes = write_notes(tmp_path / "notes")
    KnowledgeBase.create(settings.kb, settings).close()
    env = environment(settings)
    for crash in ("flush.applied:1", "store.committed:3"):
        (notes / "garden.md").write_text(GARDEN + f"\n{crash}\n", encoding="utf-8")
        result = subprocess.run(
            [sys.executable, "-m", "sourcebook.surfaces.cli", "add", str(notes)],
            env={**env, "SOURCEBOOK_CRASH_AT": crash},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == -signal.SIGKILL, result.stderr
    with KnowledgeBase(settings.kb, settings) as kb:
        assert kb.store.consistency_problems() == []
        kb.sync()
        assert kb.status().documents == 3 and kb.store.is_consistent()
        assert names(kb, "KESTREL")[0] == "garden.md"


def term_counts_after_each_step(kb: KnowledgeBase, notes: Path) -> list[dict[str, int]]:
    """The stored document frequencies after an add, a sync with an edited, a moved and
    a deleted file, a removal and a removed source; each equal to a recount."""
    records = kb.store.records
    snapshots = []

    def check() -> None:
        stored = records.term_counts()
        assert stored == dict(records.recount_terms())
        assert kb.store.consistency_problems() == []
        total, frequencies = kb.store.keyword_statistics(["kestrel", "osprey", "adamw", "番茄"])
        assert total == kb.status().chunks == stored.get("", 0)
        assert frequencies == {t: stored.get(t, 0) for t in ("kestrel", "osprey", "adamw", "番茄")}
        snapshots.append(stored)

    kb.add([notes])
    check()
    assert kb.store.keyword_statistics(["kestrel"])[1]["kestrel"] > 0
    (notes / "garden.md").write_text(GARDEN.replace("KESTREL", "OSPREY"), encoding="utf-8")
    (notes / "training.md").unlink()
    (notes / "hr" / "salary.md").rename(notes / "hr" / "pay.md")
    kb.sync()
    assert sorted(Path(d.path).name for d in kb.documents()) == ["garden.md", "pay.md"]
    check()
    assert kb.store.keyword_statistics(["kestrel", "adamw"])[1] == {"kestrel": 0, "adamw": 0}
    assert kb.store.keyword_statistics(["osprey"])[1]["osprey"] > 0
    kb.remove([notes / "garden.md"])
    check()
    assert kb.store.keyword_statistics(["osprey", "番茄"])[1] == {"osprey": 0, "番茄": 0}
    kb.add([notes / "garden.md"])
    check()
    # a move onto an indexed path replaces the document there (records alone)
    with kb.store.writing():
        assert kb.store.rename_document(
            str(notes / "garden.md"), str(notes / "hr" / "pay.md"), time.time()
        )
    assert [Path(d.path).name for d in kb.documents()] == ["pay.md"]
    check()
    kb.remove([notes])  # the source and every document under it
    check()
    assert snapshots[-1] == {}
    return snapshots


def test_document_frequencies_follow_every_change(settings: Settings, tmp_path: Path) -> None:
    """The idf weights' document frequencies are kept by the records with the chunks:
    equal to a recount after every kind of change, and read without asking the search
    index (Milvus answered them with one count query per term)."""
    with KnowledgeBase.create(settings.kb, settings) as kb:
        term_counts_after_each_step(kb, write_notes(tmp_path / "notes"))
        kb.add([write_notes(tmp_path / "again")])
        index = kb.store.index
        asked: list[str] = []
        client = getattr(index, "_client", None)
        if client is not None:  # Milvus: no query (count) besides the searches themselves
            original = client.query
            client.query = lambda *a, **k: asked.append("query") or original(*a, **k)
        kb.settings = kb.settings.model_copy(update={"retrieval": "hybrid", "reranker": "learned"})
        assert names(kb, "when are tomatoes watered")[0] == "garden.md"
        assert asked == []
        assert not hasattr(index, "keyword_statistics")


def test_document_frequencies_are_equal_on_both_backends(
    postgres: PostgresServer, milvus: MilvusLiteServer, tmp_path: Path
) -> None:
    found = []
    for name, settings in (
        ("embedded", Settings(kb=tmp_path / "embedded")),
        (
            "postgres+milvus",
            Settings(
                kb=tmp_path / "remote",
                database_url=postgres.new_database(),
                search_uri=milvus.new_collection(),
            ),
        ),
    ):
        with KnowledgeBase.create(settings.kb, settings) as kb:
            found.append(term_counts_after_each_step(kb, write_notes(tmp_path / f"{name}-notes")))
    assert found[0] == found[1]
    assert len(found[0][0]) > 20


def test_an_older_store_gets_its_document_frequencies_counted(
    settings: Settings, tmp_path: Path
) -> None:
    """A knowledge base made before `term_counts` existed has them counted from its
    chunks' tokens when first opened; a process killed while counting leaves them
    uncounted, and the next opening counts them."""
    notes = write_notes(tmp_path / "notes")
    with KnowledgeBase.create(settings.kb, settings) as kb:
        kb.add([notes])
        expected = kb.store.records.term_counts()
        db = kb.store.records.db
        with db.transaction():  # what an older version left: no table, no meta row
            db.execute("DROP TABLE term_counts")
            db.execute("DELETE FROM meta WHERE key = 'term_counts'")
    env = {**environment(settings), "SOURCEBOOK_CRASH_AT": "store.terms_counted:1"}
    killed = subprocess.run(
        [sys.executable, "-m", "sourcebook.surfaces.cli", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    with KnowledgeBase(settings.kb, settings) as kb:
        records = kb.store.records
        assert records.term_counts() == expected and records.term_count_problems() == []
        assert records.meta_value("term_counts") == "1"
        # counted differently before (another version of the counts): counted again
        with records.db.transaction():
            records.db.execute("UPDATE term_counts SET chunks = chunks + 5")
            records.db.execute("UPDATE meta SET value = '0' WHERE key = 'term_counts'")
        assert records.term_count_problems() != []
    with KnowledgeBase(settings.kb, settings) as kb:
        assert kb.store.records.term_counts() == expected
        assert kb.store.consistency_problems() == []


def test_migrate_there_and_back_keeps_ids_and_answers(
    postgres: PostgresServer, milvus: MilvusLiteServer, tmp_path: Path
) -> None:
    notes = write_notes(tmp_path / "notes")
    settings = Settings(kb=tmp_path / "kb")
    with KnowledgeBase.create(settings.kb, settings) as kb:
        kb.set_access_rule("hr/*", ["hr"])
        kb.add([notes])
        kb.access.add_user("alice", groups=["hr"])
        before = {d.path: d.id for d in kb.documents()}
        answer = kb.ask("番茄什么时候浇水？").text
        terms = kb.store.records.term_counts()
    assert len(terms) > 20
    env = {**os.environ, "SOURCEBOOK_KB": str(settings.kb)}
    database, search = postgres.new_database(), milvus.new_collection()
    for target in ((database, search), ("embedded", "embedded")):
        command = ["migrate", "--to-database", target[0], "--to-search", target[1]]
        migrated = subprocess.run(
            [sys.executable, "-m", "sourcebook.surfaces.cli", *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        assert "differs" not in migrated.stdout and "term counts" in migrated.stdout
        with KnowledgeBase(settings.kb, Settings(kb=settings.kb)) as kb:
            assert kb.backends.database == (None if target[0] == "embedded" else database)
            assert {d.path: d.id for d in kb.documents()} == before
            assert kb.ask("番茄什么时候浇水？").text == answer
            assert [u.name for u in kb.access.users()] == ["alice"]
            assert kb.store.records.term_counts() == terms  # carried, not asked of the index
            assert kb.store.consistency_problems() == []
            outsider = Filters(groups=frozenset())
            assert all("salary" not in h.path for h in kb.search("BLUEHERON", filters=outsider))
        if target[0] != "embedded":  # the way back goes into the folder's SQLite: empty it
            for name in ("sourcebook.db", "sourcebook.db-wal", "sourcebook.db-shm"):
                (settings.kb / name).unlink(missing_ok=True)
            for index in ("bm25", "vectors.usearch", "vectors.usearch.state.json"):
                path = settings.kb / index
                if path.is_dir():
                    import shutil

                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)


def wait_for(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    import httpx

    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(url + "/api/health", timeout=2).status_code in (200, 401):
                return
        except httpx.HTTPError:
            pass
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.3)


def test_two_servers_share_one_knowledge_base(
    postgres: PostgresServer, milvus: MilvusLiteServer, tmp_path: Path
) -> None:
    """Two `sourcebook serve` processes on one PostgreSQL + Milvus Lite (its gRPC server:
    Milvus Lite serves one process per folder, so both connect to it as to a cluster):
    an upload through one is searchable through the other, a key revoked elsewhere is
    refused by both at once, and the audit log has the calls of both."""
    import httpx

    from servers import free_port

    settings = Settings(
        kb=tmp_path / "kb", database_url=postgres.new_database(), search_uri=milvus.new_collection()
    )
    with KnowledgeBase.create(settings.kb, settings) as kb:
        admin = kb.access.create_key(kb.access.add_user("admin", admin=True).name)[1]
        reader = kb.access.create_key(kb.access.add_user("reader").name)[1]
    servers, urls = [], []
    try:
        for n in range(2):
            port = free_port()
            log = tmp_path / f"serve-{n}.log"
            servers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "sourcebook.surfaces.cli", "serve", "--port", str(port)],
                    env=environment(settings),
                    stdout=log.open("w"),
                    stderr=subprocess.STDOUT,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
            wait_for(urls[-1], servers[-1], log)
        first, second = urls
        auth = {"Authorization": f"Bearer {admin}"}
        upload = httpx.post(
            first + "/api/documents",
            files={"files": ("garden.md", GARDEN.encode(), "text/markdown")},
            headers=auth,
            timeout=120,
        )
        assert upload.status_code == 200, upload.text
        found = httpx.get(second + "/api/search", params={"q": "KESTREL"}, headers=auth, timeout=60)
        assert found.status_code == 200 and "garden.md" in found.text, found.text
        as_reader = {"Authorization": f"Bearer {reader}"}
        assert httpx.get(second + "/api/documents", headers=as_reader).status_code == 200
        with KnowledgeBase(settings.kb, settings) as kb:  # a third process revokes it
            kb.access.revoke_key(reader[:11])
        for url in urls:  # both refuse it on the next request, no restart or cache delay
            assert httpx.get(url + "/api/documents", headers=as_reader).status_code == 401
    finally:
        for process in servers:
            process.terminate()
            process.wait(timeout=30)
    with KnowledgeBase(settings.kb, settings) as kb:
        actions = {(e.user, e.action) for e in kb.access.audit(limit=100)}
        # the upload went through the first server, the search through the second
        assert {("admin", "upload"), ("admin", "search"), ("reader", "documents")} <= actions


def test_milvus_query_parts_are_exact() -> None:
    """The pieces of a Milvus query that make it equal to the embedded backend's: each of
    our tokens stays one token under a word tokenizer, the reader's groups and allowed
    documents become one filter expression, URIs name a server or a Milvus Lite folder."""
    import re

    from sourcebook.index.analyzer import analyze
    from sourcebook.store.base import SearchScope
    from sourcebook.store.milvus import encode_tokens, filter_expression, parse_uri

    tokens = analyze("GPT-4o 模型的 top-k 采样, e-mail foo@bar.com 3.14")
    encoded = encode_tokens(" ".join(tokens))
    assert len(re.findall(r"\w+", encoded)) == len(tokens)
    assert len(set(encoded.split())) == len(set(tokens))  # distinct tokens stay distinct
    assert filter_expression(None) == ""
    assert filter_expression(SearchScope([3, 7], frozenset({"hr", "研发"}))) == (
        "doc_id in [3,7] and (array_length(groups) == 0"
        ' or array_contains_any(groups, ["hr", "研发"]))'
    )
    assert filter_expression(SearchScope(None, frozenset())) == (
        "(array_length(groups) == 0 or array_contains_any(groups, []))"
    )
    assert parse_uri("milvus://m:19530/notes") == ("http://m:19530", "notes")
    assert parse_uri("milvus+https://m:443") == ("https://m:443", "sourcebook_chunks")
    folder = Path("/tmp/sourcebook-uri-test")
    assert parse_uri("lite", folder) == (str(folder / "lite" / "milvus.db"), "sourcebook_chunks")
