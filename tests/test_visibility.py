"""Multi-process visibility (issue 12): what one process writes, another that is already
running sees on its next request, for every index (BM25, vectors), access rules, keys
and the document list. Writers are real CLI processes; readers a running server's
knowledge base object (and the server writing, a fresh CLI reading)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sourcebook import KnowledgeBase, Settings
from sourcebook.store.embedded import Filters
from sourcebook.surfaces.server import create_app

LOCAL = "http://127.0.0.1"
NOTE = "# 新笔记 Platypus\n\n鸭嘴兽 PLATYPUSMARK 是一种产卵的哺乳动物。The platypus lays eggs.\n"


def cli(kb: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SOURCEBOOK_KB": str(kb)}
    return subprocess.run(
        [sys.executable, "-m", "sourcebook.surfaces.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_running_reader_sees_a_cli_writers_vectors_rules_keys_and_documents(
    kb_copy: tuple[KnowledgeBase, Path], tmp_path: Path
) -> None:
    kb, _ = kb_copy
    dense = KnowledgeBase(kb.path, Settings(kb=kb.path, retrieval="dense"))
    with TestClient(create_app(kb), base_url=LOCAL) as server:
        assert server.get("/api/search", params={"q": "PLATYPUSMARK"}).status_code == 200
        dense.search("鸭嘴兽 产卵", 3)  # both readers have their indexes open now
        extra = tmp_path / "extra"
        extra.mkdir()
        (extra / "platypus.md").write_text(NOTE, encoding="utf-8")
        assert cli(kb.path, "add", str(extra)).returncode == 0

        # dense only: the vectors the other process wrote (the keyword index alone
        # was already followed before; the vector file was not)
        hits = dense.search("鸭嘴兽是什么动物？产卵的哺乳动物", 3)
        assert hits and hits[0].path == str(extra / "platypus.md"), [h.path for h in hits]
        keyword = server.get("/api/search", params={"q": "PLATYPUSMARK", "limit": 3}).json()
        assert keyword and keyword[0]["path"] == str(extra / "platypus.md")
        listed = [d["path"] for d in server.get("/api/documents").json()]
        assert str(extra / "platypus.md") in listed

        # an access rule set from the command line applies to the server's next search
        assert cli(kb.path, "access", "set", "extra/*", "zoo").returncode == 0
        hidden = kb.search("PLATYPUSMARK", 3, Filters(groups=frozenset()))
        assert all("platypus" not in h.path for h in hidden)

        # users and keys made from the command line authenticate at once
        assert cli(kb.path, "user", "add", "root", "--admin").returncode == 0
        assert server.get("/api/status").status_code == 401
        made = cli(kb.path, "key", "create", "root", "--json")
        key = json.loads(made.stdout)["key"]
        headers = {"Authorization": f"Bearer {key}"}
        assert server.get("/api/status", headers=headers).status_code == 200

        # the server writes (an upload), a fresh CLI process reads
        upload = {
            "files": ("echidna.md", "# 针鼹\n\nECHIDNAMARK 也产卵。\n".encode(), "text/markdown")
        }
        assert server.post("/api/documents", files=upload, headers=headers).status_code == 200
    dense.close()
    found = cli(kb.path, "search", "ECHIDNAMARK", "--json")
    assert found.returncode == 0 and "echidna.md" in json.loads(found.stdout)[0]["path"]


# --- the matrix: every writer/reader pair, every kind of write ----------------------------
#
# Writers: a CLI process, or a server (its own KnowledgeBase object, as `serve` has).
# Readers: a server already running over the same folder (its indexes open before the
# write), or a fresh CLI process. "server->server" is two servers on one embedded
# knowledge base. Each reader searches with one index only (BM25 or vectors), so a stale
# keyword or vector index cannot hide behind the other.

DENSE_QUERY = "鸭嘴兽是什么动物？产卵的哺乳动物"
NOBODY: frozenset[str] = frozenset()


class CliWriter:
    def __init__(self, kb: Path, folder: Path) -> None:
        self.kb, self.folder = kb, folder

    def add(self) -> str:
        (self.folder / "platypus.md").write_text(NOTE, encoding="utf-8")
        assert cli(self.kb, "add", str(self.folder)).returncode == 0
        return str(self.folder / "platypus.md")

    def restrict(self, path: str) -> None:
        assert cli(self.kb, "access", "set", "zoo/*", "zoo").returncode == 0

    def remove(self, path: str) -> None:
        assert cli(self.kb, "remove", path).returncode == 0

    def key(self) -> str:
        assert cli(self.kb, "user", "add", "root", "--admin").returncode == 0
        return str(json.loads(cli(self.kb, "key", "create", "root", "--json").stdout)["key"])

    def revoke(self, key: str) -> None:
        assert cli(self.kb, "key", "revoke", key).returncode == 0


class ServerWriter:
    def __init__(self, kb: Path) -> None:
        self.base = KnowledgeBase(kb, Settings(kb=kb))
        self.http = TestClient(create_app(self.base), base_url=LOCAL)
        self.http.__enter__()

    def _upload(self, groups: list[str]) -> str:
        files = {"files": ("platypus.md", NOTE.encode(), "text/markdown")}
        data = {"groups": groups} if groups else None
        response = self.http.post("/api/documents", files=files, data=data)
        assert response.status_code == 200, response.text
        return str(response.json()["files"][0]["document"]["path"])

    def add(self) -> str:
        return self._upload([])

    def restrict(self, path: str) -> None:
        assert self._upload(["zoo"]) == path  # the same upload again, for one group

    def remove(self, path: str) -> None:
        doc = next(d for d in self.http.get("/api/documents").json() if d["path"] == path)
        assert self.http.delete(f"/api/documents/{doc['id']}").status_code == 200

    def close(self) -> None:
        self.http.__exit__(None, None, None)
        self.base.close()


class ServerReader:
    def __init__(self, kb: Path, index: str) -> None:
        self.base = KnowledgeBase(kb, Settings(kb=kb, retrieval=index))
        self.http = TestClient(create_app(self.base), base_url=LOCAL)
        self.http.__enter__()
        self.headers: dict[str, str] = {}
        self.found(DENSE_QUERY)  # indexes open before the other process writes

    def found(self, query: str) -> list[str]:
        response = self.http.get(
            "/api/search", params={"q": query, "limit": 3}, headers=self.headers
        )
        assert response.status_code == 200, response.text
        return [hit["path"] for hit in response.json()]

    def found_by_nobody(self, query: str) -> list[str]:
        return [h.path for h in self.base.search(query, 3, Filters(groups=NOBODY))]

    def listed(self) -> list[str]:
        return [d["path"] for d in self.http.get("/api/documents", headers=self.headers).json()]

    def count(self) -> int:
        return len(self.listed())

    def status_code(self, key: str) -> int:
        headers = {"Authorization": f"Bearer {key}"}
        return self.http.get("/api/status", headers=headers).status_code

    def close(self) -> None:
        self.http.__exit__(None, None, None)
        self.base.close()


class CliReader:
    def __init__(self, kb: Path, index: str) -> None:
        self.kb, self.index = kb, index

    def found(self, query: str) -> list[str]:
        result = subprocess.run(
            [sys.executable, "-m", "sourcebook.surfaces.cli", "search", query, "-k", "3", "--json"],
            env={**os.environ, "SOURCEBOOK_KB": str(self.kb), "SOURCEBOOK_RETRIEVAL": self.index},
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        return [hit["path"] for hit in json.loads(result.stdout)]

    def restricted(self) -> dict[str, list[str]]:
        listed = cli(self.kb, "access", "list", "--documents", "--json")
        return dict(json.loads(listed.stdout)["documents"])

    def count(self) -> int:
        return int(json.loads(cli(self.kb, "status", "--json").stdout)["documents"])

    def close(self) -> None:
        pass


@pytest.mark.parametrize("index", ["bm25", "dense"])
@pytest.mark.parametrize("pair", ["cli->server", "server->cli", "server->server"])
def test_what_one_process_writes_the_other_reads_on_its_next_request(
    kb_copy: tuple[KnowledgeBase, Path], tmp_path: Path, pair: str, index: str
) -> None:
    kb, _ = kb_copy
    kb.close()  # only the writer and the reader below hold the knowledge base
    query = "PLATYPUSMARK" if index == "bm25" else DENSE_QUERY
    folder = tmp_path / "zoo"
    folder.mkdir()
    reader: ServerReader | CliReader = (
        CliReader(kb.path, index) if pair == "server->cli" else ServerReader(kb.path, index)
    )
    writer = CliWriter(kb.path, folder) if pair == "cli->server" else ServerWriter(kb.path)
    try:
        before = reader.count()
        path = writer.add()  # a document: the reader's next search finds it, its list has it
        assert reader.found(query)[0] == path
        assert reader.count() == before + 1
        if isinstance(reader, ServerReader):
            assert path in reader.listed()

        writer.restrict(path)  # an access rule (CLI) or the upload's own groups (server)
        if isinstance(reader, ServerReader):
            assert path not in reader.found_by_nobody(query)
        else:
            assert reader.restricted() == {path: ["zoo"]}

        if isinstance(writer, CliWriter) and isinstance(reader, ServerReader):
            key = writer.key()  # users and keys: the server asks for a key at once
            assert reader.status_code("") == 401 and reader.status_code(key) == 200
            reader.headers = {"Authorization": f"Bearer {key}"}
            writer.revoke(key)
            assert reader.status_code(key) == 401
            reader.headers = {}
            assert cli(kb.path, "user", "remove", "root").returncode == 0

        writer.remove(path)  # removal: gone from the reader's search and list
        assert path not in reader.found(query)
        assert reader.count() == before
    finally:
        reader.close()
        if isinstance(writer, ServerWriter):
            writer.close()
