"""Wiki-links between notes: resolved like Obsidian, through the facade and the API, and
never to a note the reader may not read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from sourcebook import KnowledgeBase, Settings
from sourcebook.retrieve.links import wiki_links
from sourcebook.surfaces.cli import app
from sourcebook.surfaces.server.app import create_app

VAULT = {
    "index.md": (
        "# 目录\n"
        "- [[LoRA 笔记|LoRA]] 和 [[kv cache#Prefill]]\n"
        "- [[papers/attention]] 与 [[Attention]]\n"
        "- [[还没写的笔记]] ![[figure.png]]\n"
        "```\n[[not a link]]\n```\n"
    ),
    "LoRA 笔记.md": "# LoRA\n低秩适配。\n",
    "KV Cache.md": "# KV cache\n缓存 K 和 V。\n",
    "attention.md": "# Attention（目录旁的）\n",
    "papers/attention.md": "# Attention Is All You Need\n",
    "private/secret.md": "# 机密\n见 [[KV Cache]]。\n",
}


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KnowledgeBase, Path]]:
    base = tmp_path_factory.mktemp("vault")
    notes = base / "notes"
    for name, text in VAULT.items():
        (notes / name).parent.mkdir(parents=True, exist_ok=True)
        (notes / name).write_text(text, encoding="utf-8")
    kb = KnowledgeBase.create(base / "kb", Settings(kb=base / "kb"))
    kb.add([notes])
    yield kb, notes
    kb.close()


def test_links_outside_code_and_not_embedded_images() -> None:
    found = wiki_links(VAULT["index.md"])
    assert [(line, target) for line, target, _, _ in found] == [
        (2, "LoRA 笔记"),
        (2, "kv cache"),
        (3, "papers/attention"),
        (3, "Attention"),
        (4, "还没写的笔记"),
    ]
    assert found[0][2:] == ("LoRA", "[[LoRA 笔记|LoRA]]")


def test_links_resolve_by_name_folder_and_case(vault: tuple[KnowledgeBase, Path]) -> None:
    kb, notes = vault
    links = {link.written: link for link in kb.links(notes / "index.md")}
    assert links["[[LoRA 笔记|LoRA]]"].absolute_path == str(notes / "LoRA 笔记.md")
    assert links["[[kv cache#Prefill]]"].absolute_path == str(notes / "KV Cache.md")
    # a folder in the target picks that note; a bare shared name, the one beside the link
    assert links["[[papers/attention]]"].absolute_path == str(notes / "papers/attention.md")
    assert links["[[Attention]]"].absolute_path == str(notes / "attention.md")
    missing = links["[[还没写的笔记]]"]
    assert missing.doc_id is None and missing.path is None
    by_id = {d.id: d.absolute_path for d in kb.documents()}
    assert all(by_id[link.doc_id] == link.absolute_path for link in links.values() if link.doc_id)


def test_the_links_command(vault: tuple[KnowledgeBase, Path]) -> None:
    kb, notes = vault
    index = str(notes / "index.md")
    result = CliRunner().invoke(app, ["links", index, "--kb", str(kb.path), "--json"])
    assert result.exit_code == 0, result.output
    listed = {link["target"]: link["absolute_path"] for link in json.loads(result.stdout)}
    assert listed["LoRA 笔记"] == str(notes / "LoRA 笔记.md") and listed["还没写的笔记"] is None
    plain = CliRunner().invoke(app, ["links", index, "--kb", str(kb.path)])
    assert "[[LoRA 笔记|LoRA]]" in plain.stdout and "no such note" in plain.stdout
    missing = CliRunner().invoke(app, ["links", str(notes / "nope.md"), "--kb", str(kb.path)])
    assert missing.exit_code != 0 and "not in the knowledge base" in missing.output


def test_the_api_lists_links_and_hides_unreadable_notes(
    vault: tuple[KnowledgeBase, Path],
) -> None:
    kb, notes = vault
    kb.set_access_rule(f"{notes}/private/**", ["staff"])
    kb.set_access_rule(f"{notes}/KV Cache.md", ["staff"])
    kb.access.add_user("guest", groups=["everyone"])
    key = kb.access.create_key("guest")[1]
    client = TestClient(create_app(kb), base_url="http://127.0.0.1")
    index = next(d for d in kb.documents() if d.absolute_path.endswith("index.md"))
    secret = next(d for d in kb.documents() if d.absolute_path.endswith("secret.md"))
    headers = {"Authorization": f"Bearer {key}"}
    response = client.get(f"/api/documents/{index.id}/links", headers=headers)
    assert response.status_code == 200
    links = {link["target"]: link for link in response.json()}
    assert links["LoRA 笔记"]["path"] == str(notes / "LoRA 笔记.md")
    assert links["kv cache"]["doc_id"] is None  # it exists, but not for this reader
    assert client.get(f"/api/documents/{secret.id}/links", headers=headers).status_code == 404
    assert client.get("/api/documents/999999/links", headers=headers).status_code == 404
