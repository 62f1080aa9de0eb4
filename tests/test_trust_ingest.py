"""Issue 12, ingest and facade: the path the user added is a document's identity (symlinks
do not escape access rules, and are pruned, removed and shown under their own path), what
can no longer be read leaves the indexes, loops and dangling links are reported without
stopping the batch, headings-only notes are findable, file names cannot forge report
lines, and sources are listed only to readers of something in them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sourcebook import KnowledgeBase, Settings
from sourcebook.surfaces.cli import app as cli_app

SECRET = "# 薪资\n\n2024 年的年终奖系数是 2.7 倍月薪，代号 QUOKKAZEBRA。\n"
PUBLIC = "# Public note\n\nThe cafeteria opens at eight with fresh croissants.\n"
NOBODY: frozenset[str] = frozenset()  # a reader in no group


@pytest.fixture
def kb(tmp_path: Path) -> Iterator[KnowledgeBase]:
    with KnowledgeBase.create(tmp_path / "kb", Settings(kb=tmp_path / "kb")) as base:
        yield base


def paths_found(kb: KnowledgeBase, query: str, groups: frozenset[str] | None = None) -> set[str]:
    from sourcebook.store.embedded import restricted

    return {h.path for h in kb.search(query, 10, restricted(None, groups))}


def make_notes(tmp_path: Path) -> tuple[Path, Path]:
    notes, outside = tmp_path / "notes", tmp_path / "outside"
    (notes / "hr").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.md").write_text(SECRET, encoding="utf-8")
    (notes / "public.md").write_text(PUBLIC, encoding="utf-8")
    (notes / "hr" / "salary.md").symlink_to(Path("../../outside/secret.md"))
    return notes, outside


def test_a_symlink_is_ruled_removed_and_shown_under_its_own_path(
    kb: KnowledgeBase, tmp_path: Path
) -> None:
    notes, _ = make_notes(tmp_path)
    kb.set_access_rule("hr/*", ["hr"])
    report = kb.add([notes])
    assert not report.failed and report.added == 2
    link = str(notes / "hr" / "salary.md")
    assert {d.path for d in kb.documents()} == {link, str(notes / "public.md")}
    # the rule for hr/* covers the link, whatever it points at
    assert kb.document_groups() == {link: ["hr"]}
    assert paths_found(kb, "QUOKKAZEBRA 年终奖", NOBODY) <= {str(notes / "public.md")}
    assert link in paths_found(kb, "QUOKKAZEBRA 年终奖", frozenset({"hr"}))
    with pytest.raises(KeyError):
        kb.document_text(link, groups=NOBODY)
    # removal by the path that was added
    assert kb.remove([link]) == [link]
    assert link not in paths_found(kb, "QUOKKAZEBRA 年终奖")


def test_a_removed_symlink_is_pruned_by_sync(kb: KnowledgeBase, tmp_path: Path) -> None:
    notes, _ = make_notes(tmp_path)
    kb.add([notes])
    (notes / "hr" / "salary.md").unlink()
    report = kb.sync()
    assert report.removed == 1
    assert not any("QUOKKAZEBRA" in h.text for h in kb.search("QUOKKAZEBRA 年终奖", 10))
    assert [d.path for d in kb.documents()] == [str(notes / "public.md")]


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty"), (b"\x00\x01\x02\xff\xfe" * 200, "binary")],
    ids=["emptied", "binary"],
)
def test_a_file_that_can_no_longer_be_read_leaves_the_indexes(
    kb: KnowledgeBase, tmp_path: Path, content: bytes, reason: str
) -> None:
    notes, _ = make_notes(tmp_path)
    kb.add([notes])
    assert str(notes / "public.md") in paths_found(kb, "croissants cafeteria")
    (notes / "public.md").write_bytes(content)
    report = kb.sync()
    issue = next(i for i in report.failed if i.path == str(notes / "public.md"))
    assert reason in issue.reason and "removed from the index" in issue.reason
    assert report.removed == 1
    assert str(notes / "public.md") not in paths_found(kb, "croissants cafeteria")
    assert str(notes / "public.md") not in {d.path for d in kb.documents()}
    assert "croissants" not in kb.ask("When does the cafeteria open?").text
    assert kb.store.index_sizes() == (kb.status().chunks,) * 2


def test_a_symlink_loop_is_reported_and_the_rest_indexed(kb: KnowledgeBase, tmp_path: Path) -> None:
    notes, _ = make_notes(tmp_path)
    (notes / "a.md").symlink_to("b.md")
    (notes / "b.md").symlink_to("a.md")
    (notes / "self.md").symlink_to("self.md")
    report = kb.add([notes])
    failed = {i.path: i.reason for i in report.failed}
    assert set(failed) == {str(notes / n) for n in ("a.md", "b.md", "self.md")}
    assert all("symbolic links" in r for r in failed.values()), failed
    assert report.added == 2
    again = kb.sync()  # and every later sync works too
    assert again.unchanged == 2 and len(again.failed) == 3
    # a loop given as the source itself
    assert kb.add([notes / "self.md"]).failed[0].path == str(notes / "self.md")


def test_a_dangling_symlink_is_reported_under_its_own_path(
    kb: KnowledgeBase, tmp_path: Path
) -> None:
    notes, _ = make_notes(tmp_path)
    (notes / "gone.md").symlink_to(tmp_path / "nowhere" / "gone.md")
    report = kb.add([notes])
    assert [i.path for i in report.failed] == [str(notes / "gone.md")]


def test_a_note_of_headings_only_is_findable(kb: KnowledgeBase, tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "outline.md").write_text("# 大纲 Outline\n\n## Zanzibar 计划\n\n### 第三阶段\n")
    report = kb.add([notes])
    assert report.added == 1 and report.chunks_added >= 1
    assert paths_found(kb, "Zanzibar 计划") == {str(notes / "outline.md")}


def test_control_characters_in_file_names_cannot_forge_report_lines(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    forged = "x.md\nfailed passwd: forged\x1b[2J.md"
    (notes / forged).write_bytes(b"")  # an empty file: reported as failed
    (notes / "ok.md").write_text(PUBLIC)
    result = CliRunner().invoke(cli_app, ["add", str(notes), "--kb", str(tmp_path / "kb")])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert [line for line in lines if line.startswith("failed")] == [
        line for line in lines if "forged" in line
    ]
    assert len([line for line in lines if "forged" in line]) == 1
    assert "\x1b" not in result.stderr and "\\n" in result.stderr
    from sourcebook.text import printable

    assert printable("a\nb\x1b\u2028c 中文") == "a\\nb\\x1b\\u2028c 中文"


def test_sources_are_listed_only_to_readers_of_something_in_them(
    kb: KnowledgeBase, tmp_path: Path
) -> None:
    notes, outside = make_notes(tmp_path)
    (notes / "hr" / "salary.md").unlink()
    kb.add([notes])
    secret = outside / "secret.md"
    kb.set_document_groups(secret, ["hr"])
    kb.add([secret])  # a single restricted file, added as a source of its own
    assert kb.status().sources == sorted([str(notes), str(secret)])
    assert kb.status(NOBODY).sources == [str(notes)]
    assert kb.status(frozenset({"hr"})).sources == sorted([str(notes), str(secret)])
    assert kb.sources(NOBODY) == [str(notes)]


def test_the_path_given_is_kept_not_its_resolution(
    kb: KnowledgeBase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notes, _ = make_notes(tmp_path)
    alias = tmp_path / "alias"
    alias.symlink_to(notes)
    kb.add([alias])
    assert kb.status().sources == [str(alias)]
    assert str(alias / "public.md") in {d.path for d in kb.documents()}
    monkeypatch.chdir(tmp_path)
    assert kb.remove([Path("alias")]) and kb.documents() == []
