"""Wiki-links between notes (`[[note]]`, `[[folder/note|shown text]]`, `[[note#heading]]`),
resolved the way Obsidian resolves them: by file name without extension, case-insensitive;
a name several notes share goes to the one in the linking note's folder, else to the one
with the shortest path; a target with a folder matches the end of a path."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from pathlib import PurePosixPath

from sourcebook.models import DocumentInfo, DocumentLink

_WIKI_LINK = re.compile(r"!?\[\[([^\]|#\n]+)(?:#[^\]|\n]*)?(?:\|([^\]\n]+))?\]\]")
_FENCE = re.compile(r"^[ \t]*(```|~~~)")
_NOTE_SUFFIXES = (".md", ".markdown")


def wiki_links(text: str) -> list[tuple[int, str, str, str]]:
    """(line, target, shown text, the link as written) for each wiki-link outside code
    fences, in text order; an embedded image (`![[figure.png]]`) is not a link."""
    found = []
    in_fence = False
    for number, line in enumerate(text.split("\n"), start=1):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        for match in _WIKI_LINK.finditer(line):
            if match.group(0).startswith("!"):
                continue
            target = match.group(1).strip()
            found.append((number, target, (match.group(2) or target).strip(), match.group(0)))
    return found


def resolve_links(text: str, source: str, documents: Sequence[DocumentInfo]) -> list[DocumentLink]:
    """The wiki-links of `text` (the document at absolute path `source`), each with the
    document it names among `documents`, or none."""
    by_name: dict[str, list[DocumentInfo]] = {}
    for document in documents:
        by_name.setdefault(_key(PurePosixPath(document.absolute_path).stem), []).append(document)
    folder = PurePosixPath(source).parent
    links = []
    for line, target, shown, written in wiki_links(text):
        named = _resolve(target, folder, by_name)
        links.append(
            DocumentLink(
                line=line,
                target=target,
                text=shown,
                written=written,
                doc_id=named.id if named else None,
                path=named.path if named else None,
                absolute_path=named.absolute_path if named else None,
            )
        )
    return links


def _resolve(
    target: str, folder: PurePosixPath, by_name: dict[str, list[DocumentInfo]]
) -> DocumentInfo | None:
    wanted = PurePosixPath(target.replace("\\", "/"))
    if wanted.suffix.lower() in _NOTE_SUFFIXES:
        wanted = wanted.with_suffix("")
    candidates = by_name.get(_key(wanted.name), [])
    if len(wanted.parts) > 1:  # "folder/note": the end of the path must match
        tail = [_key(p) for p in wanted.parts]
        candidates = [
            d
            for d in candidates
            if [_key(p) for p in PurePosixPath(d.absolute_path).with_suffix("").parts[-len(tail) :]]
            == tail
        ]
    if not candidates:
        return None
    return min(
        candidates,
        key=lambda d: (
            PurePosixPath(d.absolute_path).parent != folder,
            len(PurePosixPath(d.absolute_path).parts),
            d.absolute_path,
        ),
    )


def _key(name: str) -> str:
    return unicodedata.normalize("NFKC", name).casefold()
