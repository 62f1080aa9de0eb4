"""Vectors in the record store (see `sql_records.py`): the embedding cache (vectors by the
hash of the text embedded), chunks stored without a vector and filled in later by the
background embedder, and a re-embedding with another model, resumable."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sourcebook.store.base import Reembedding, StoreError
from sourcebook.store.sql_base import SET_META, SQLBase

if TYPE_CHECKING:
    from sourcebook.index.embedders import Vectors


class SQLVectors(SQLBase):
    """The embedding cache, vectors filled in later, and re-embedding."""

    embedder_name: str
    dim: int
    _progress: tuple[int, int, int] | None  # (generation, embedded, chunks)

    # --- the embedding cache ------------------------------------------------------------

    def cached_vectors(self, text_hashes: Sequence[str]) -> dict[str, Vectors]:
        import numpy as np

        found: dict[str, Vectors] = {}
        unique = list(dict.fromkeys(text_hashes))
        for start in range(0, len(unique), 500):
            batch = unique[start : start + 500]
            marks = ",".join("?" * len(batch))
            for digest, blob in self._db.execute(
                f"SELECT text_hash, vector FROM vectors WHERE text_hash IN ({marks})", batch
            ):
                found[digest] = np.frombuffer(blob, dtype=np.float32)
        return found

    def collect_garbage(self) -> int:
        """Drop cached vectors no chunk uses any more."""
        with self._transaction():
            cursor = self._db.execute(
                "DELETE FROM vectors WHERE text_hash NOT IN (SELECT text_hash FROM chunks)"
            )
        return cursor.rowcount

    # --- vectors filled in later ----------------------------------------------------------
    # A document is stored (and keyword-searchable after the next flush) before its chunks
    # are embedded: a chunk whose text has no row in `vectors` is found by BM25 alone until
    # `put_vectors` gives it one, which logs a 'vec' entry so the flush adds it to the
    # vector index. A process killed in between leaves chunks without vectors, which the
    # next writer embeds (`KnowledgeBase.embed_pending`).

    def texts_to_embed(
        self, limit: int, after: int = 0
    ) -> list[tuple[int, str, str, list[str], str]]:
        """Up to `limit` chunks after chunk id `after` whose text has no vector, in id
        order (a caller that stores what it gets continues after the last id; chunk ids
        only grow): (chunk id, text hash, document title, heading path, chunk text)."""
        rows = self._db.execute(
            "SELECT c.id, c.text_hash, d.title, c.heading_path, c.text FROM chunks c"
            " JOIN documents d ON d.id = c.doc_id WHERE c.id > ?"
            " AND NOT EXISTS (SELECT 1 FROM vectors v WHERE v.text_hash = c.text_hash)"
            " ORDER BY c.id LIMIT ?",
            (after, limit),
        )
        return [(int(i), h, t, json.loads(p), x) for i, h, t, p, x in rows]

    def put_vectors(self, vectors: dict[str, Vectors]) -> None:
        """Store the vectors of chunk texts (by text hash) and log every chunk using them
        for the vector index, in one transaction. A text no chunk uses any more (edited
        meanwhile) stays in the cache until `collect_garbage`."""
        import numpy as np

        with self._transaction():
            self._db.executemany(
                "INSERT INTO vectors VALUES (?, ?) ON CONFLICT (text_hash) DO NOTHING",
                ((h, np.asarray(v, dtype=np.float32).tobytes()) for h, v in vectors.items()),
            )
            hashes = list(vectors)
            for start in range(0, len(hashes), 500):
                batch = hashes[start : start + 500]
                self._db.execute(
                    "INSERT INTO change_log (chunk_id, op) SELECT id, 'vec' FROM chunks"
                    f" WHERE text_hash IN ({','.join('?' * len(batch))})",
                    batch,
                )

    def embedding_progress(self) -> tuple[int, int]:
        """(chunks with a vector, all chunks); counted again only after a write."""
        generation = self.generation()
        if self._progress is None or self._progress[0] != generation:
            total, waiting = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(CASE WHEN EXISTS (SELECT 1 FROM vectors v"
                " WHERE v.text_hash = c.text_hash) THEN 0 ELSE 1 END), 0) FROM chunks c"
            ).fetchone()
            self._progress = (generation, int(total) - int(waiting), int(total))
        return self._progress[1], self._progress[2]

    def embedded_chunk_ids(self) -> set[int]:
        """Chunks whose text has its vector (the vector index holds exactly these)."""
        rows = self._db.execute(
            "SELECT c.id FROM chunks c JOIN vectors v ON v.text_hash = c.text_hash"
        )
        return {int(row[0]) for row in rows}

    # --- re-embedding (reindex), resumable -------------------------------------------------

    def reembedding(self) -> Reembedding | None:
        """The re-embedding in progress, if any: its model and how far it has got."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'reembedding'").fetchone()
        if row is None:
            return None
        target = json.loads(row[0])
        done, total = self._db.execute(
            "SELECT COUNT(p.text_hash), COUNT(*) FROM (SELECT DISTINCT text_hash FROM chunks) c"
            " LEFT JOIN pending_vectors p ON p.text_hash = c.text_hash"
        ).fetchone()
        return Reembedding(str(target["model"]), int(target["dim"]), int(done), int(total))

    def begin_reembedding(self, name: str, dim: int) -> None:
        """Start (or resume) re-embedding every chunk text with model `name`. Searches keep
        the current model's vectors until `finish_reembedding`."""
        current = self.reembedding()
        with self._transaction():
            if current is None or current.model != name:
                self._db.execute("DELETE FROM pending_vectors")
            self._db.execute(SET_META, ("reembedding", json.dumps({"model": name, "dim": dim})))

    def pending_contexts(self, limit: int) -> list[tuple[str, str, list[str], str]]:
        """Up to `limit` (text hash, title, heading path, text) still to re-embed."""
        rows = self._db.execute(
            "SELECT c.text_hash, MIN(d.title), MIN(c.heading_path), MIN(c.text) FROM chunks c"
            " JOIN documents d ON d.id = c.doc_id"
            " WHERE c.text_hash NOT IN (SELECT text_hash FROM pending_vectors)"
            " GROUP BY c.text_hash ORDER BY c.text_hash LIMIT ?",
            (limit,),
        )
        return [(h, t, json.loads(p), x) for h, t, p, x in rows]

    def put_pending_vectors(self, vectors: dict[str, Vectors]) -> None:
        import numpy as np

        with self._transaction():
            self._db.executemany(
                "INSERT INTO pending_vectors VALUES (?, ?)"
                " ON CONFLICT (text_hash) DO UPDATE SET vector = excluded.vector",
                ((h, np.asarray(v, dtype=np.float32).tobytes()) for h, v in vectors.items()),
            )

    def finish_reembedding(self) -> Reembedding:
        """Swap the new vectors in and record the new model, in one transaction that
        also logs every chunk for the search index (so a process killed before it is
        rebuilt has it rebuilt by the next writer). Returns the finished re-embedding."""
        state = self.reembedding()
        if state is None or state.done < state.total:
            raise StoreError("the re-embedding is not complete: run `sourcebook reindex`")
        with self._transaction():
            self._db.execute("DELETE FROM vectors")
            self._db.execute("INSERT INTO vectors SELECT text_hash, vector FROM pending_vectors")
            self._db.execute("DELETE FROM pending_vectors")
            self._db.execute("DELETE FROM meta WHERE key = 'reembedding'")
            self._db.execute(SET_META, ("embedder", state.model))
            self._db.execute(SET_META, ("dim", str(state.dim)))
            self._db.execute("INSERT INTO change_log (chunk_id, op) SELECT id, 'add' FROM chunks")
        self.embedder_name, self.dim = state.model, state.dim
        return state
