"""Search hits made by hand, for testing the answer stages without a knowledge base."""

from __future__ import annotations

from sourcebook.models import SearchHit


def hit(text: str, heading: str = "") -> SearchHit:
    """A hit on `text` (from line 1 of notes.md), under `heading` when given."""
    return SearchHit(
        chunk_id=1,
        doc_id=1,
        path="notes.md",
        title="notes",
        kind="markdown",
        heading_path=[heading] if heading else [],
        line_start=1,
        line_end=text.count("\n") + 1,
        text=text,
        score=1.0,
    )
