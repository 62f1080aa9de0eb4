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
