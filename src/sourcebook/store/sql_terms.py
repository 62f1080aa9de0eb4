"""Document frequencies in the record store (see `sql_records.py`): `term_counts` holds,
for each term of the chunks' analysed tokens, how many chunks contain it, and under the term
'' how many chunks there are. Every write of chunks updates it in the same transaction."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

from sourcebook.faults import crash_point
from sourcebook.store.base import batched
from sourcebook.store.sql_base import SET_META, SQLBase

# the `term_counts` row holding the number of chunks (no analysed token is empty)
ALL_CHUNKS = ""
# meta 'term_counts': how the counts in `term_counts` were made; a knowledge base without
# it (made before the table) or with another value has them counted again on open
TERM_COUNTS_VERSION = "1"
# terms per statement when counts are written in bulk (`_count_terms`)
_TERM_BATCH = 20_000


def chunk_terms(tokens: str) -> set[str]:
    """The distinct terms of a chunk's stored tokens (space-separated): what its
    document frequencies count."""
    return {token for token in tokens.split(" ") if token}


class SQLTermCounts(SQLBase):
    """Reads and writes of `term_counts`."""

    def _add_term_counts(self, terms: Counter[str]) -> None:
        """Add the changes in `terms` to `term_counts`, inside the caller's transaction;
        a term no chunk contains any more loses its row."""
        changes = [(term, n) for term, n in terms.items() if n]
        for start in range(0, len(changes), _TERM_BATCH):
            batch = changes[start : start + _TERM_BATCH]
            given = json.dumps(dict(batch), ensure_ascii=False)
            self._db.execute(self._db.dialect.add_term_counts, (given,))
            if any(n < 0 for _, n in batch):
                self._db.execute(self._db.dialect.drop_empty_term_counts, (given,))

    def term_statistics(self, tokens: Sequence[str]) -> tuple[int, dict[str, int]]:
        """(number of chunks, chunks whose tokens contain each of `tokens`), for idf
        weights: one indexed read of `term_counts`."""
        terms = sorted(set(tokens) - {ALL_CHUNKS})
        wanted = [ALL_CHUNKS, *terms]
        found: dict[str, int] = {}
        for batch in batched(wanted):
            marks = ",".join("?" * len(batch))
            for term, chunks in self._db.execute(
                f"SELECT term, chunks FROM term_counts WHERE term IN ({marks})", list(batch)
            ):
                found[str(term)] = int(chunks)
        return found.get(ALL_CHUNKS, 0), {term: found.get(term, 0) for term in terms}

    def recount_terms(self) -> Counter[str]:
        """`term_counts` as counted again from every chunk's stored tokens (for the
        first opening of an older knowledge base, and for checks)."""
        counts: Counter[str] = Counter()
        last = 0
        while True:
            rows = self._db.execute(
                "SELECT id, tokens FROM chunks WHERE id > ? ORDER BY id LIMIT ?", (last, 5_000)
            ).fetchall()
            if not rows:
                return counts
            for _, tokens in rows:
                counts.update(chunk_terms(str(tokens)))
            counts[ALL_CHUNKS] += len(rows)
            last = int(rows[-1][0])

    def term_counts(self) -> dict[str, int]:
        """Every row of `term_counts` (for checks, not per request)."""
        rows = self._db.execute("SELECT term, chunks FROM term_counts")
        return {str(term): int(chunks) for term, chunks in rows}

    def term_count_problems(self) -> list[str]:
        """How `term_counts` differs from a recount of the chunks (empty: not at all)."""
        stored, counted = self.term_counts(), dict(self.recount_terms())
        if stored == counted:
            return []
        wrong = {t for t in stored.keys() | counted.keys() if stored.get(t) != counted.get(t)}
        sample = ", ".join(
            f"{t!r}: {stored.get(t, 0)} stored, {counted.get(t, 0)} counted"
            for t in sorted(wrong)[:3]
        )
        return [f"term counts: {len(wrong)} terms differ from a recount ({sample})"]

    def _count_terms(self) -> None:
        """Count the terms of every chunk into `term_counts` if they were never counted
        (a knowledge base made before the table) or counted differently: one transaction,
        so a process killed meanwhile leaves the old state and the next opening counts
        again; a process that finds them counted by another meanwhile does nothing."""
        if self.meta_value("term_counts") == TERM_COUNTS_VERSION:
            return
        with self._transaction():
            if self.meta_value("term_counts") == TERM_COUNTS_VERSION:
                return
            self._db.execute("DELETE FROM term_counts")
            self._add_term_counts(self.recount_terms())
            crash_point("store.terms_counted")
            self._db.execute(SET_META, ("term_counts", TERM_COUNTS_VERSION))
