"""Who may read which document, in the record store (see `sql_records.py`): path-glob
access rules, a document's own grants, and `document_groups` derived from both in the same
transaction as any change to them."""

from __future__ import annotations

from collections.abc import Sequence

from sourcebook.store.base import glob_match
from sourcebook.store.sql_base import SQLBase

# A document `d` a reader may not read: it has groups, none of which is one of the
# reader's (the one parameter: the reader's groups as a JSON list, `_group_list`).
_UNREADABLE = (
    "EXISTS (SELECT 1 FROM document_groups g WHERE g.path = d.path)"
    " AND NOT EXISTS (SELECT 1 FROM document_groups g WHERE g.path = d.path"
    "  AND {group_in})"
)


class SQLAccessRules(SQLBase):
    """Access rules, grants and the derived readers of each document."""

    def _start_access_rules(self) -> None:
        # who may not read what, per groups set, kept until the tables change
        self._unreadable: dict[frozenset[str], tuple[int, set[int]]] = {}
        self._unreadable_sql = _UNREADABLE.format(
            group_in=self._db.dialect.group_in.format(column="g.group_name")
        )

    def unreadable_documents(self, groups: frozenset[str]) -> set[int]:
        """Ids of the documents a reader in `groups` may not read: those that have groups,
        none of which is one of the reader's."""
        generation = self.generation()
        cached = self._unreadable.get(groups)
        if cached is not None and cached[0] == generation:
            return cached[1]
        rows = self._db.execute(
            f"SELECT d.id FROM documents d WHERE {self._unreadable_sql}",
            (self._db.dialect.group_parameter(groups),),
        )
        unreadable = {int(row[0]) for row in rows}
        if len(self._unreadable) >= 64:  # a few groups sets are in use at a time
            self._unreadable.clear()
        self._unreadable[groups] = (generation, unreadable)
        return unreadable

    def document_groups(self) -> dict[str, list[str]]:
        """The groups that may read each restricted document (path -> groups); a document
        not listed is readable by everyone."""
        found: dict[str, list[str]] = {}
        for path, group in self._db.execute(
            "SELECT g.path, g.group_name FROM document_groups g"
            " JOIN documents d ON d.path = g.path ORDER BY g.path, g.group_name"
        ):
            found.setdefault(path, []).append(group)
        return found

    def access_rules(self) -> dict[str, list[str]]:
        """Path glob -> the groups that may read the documents it matches."""
        found: dict[str, list[str]] = {}
        for pattern, group in self._db.execute(
            "SELECT pattern, group_name FROM access_rules ORDER BY pattern, group_name"
        ):
            found.setdefault(pattern, []).append(group)
        return found

    def set_access_rule(self, pattern: str, groups: Sequence[str]) -> None:
        """Let only `groups` read documents matching `pattern` (no groups: drop the rule),
        and re-derive every document's groups in the same transaction."""
        with self._transaction():
            self._db.execute("DELETE FROM access_rules WHERE pattern = ?", (pattern,))
            self._db.executemany(
                "INSERT INTO access_rules VALUES (?, ?)", ((pattern, g) for g in set(groups))
            )
            self._derive_groups(None)

    def document_grants(self, path: str) -> list[str]:
        rows = self._db.execute(
            "SELECT group_name FROM document_grants WHERE path = ? ORDER BY group_name", (path,)
        )
        return [row[0] for row in rows]

    def set_document_grants(self, path: str, groups: Sequence[str]) -> None:
        """Give the document at `path` (indexed or about to be) its own groups, which
        replace the rules for it; no groups: the rules apply again."""
        with self._transaction():
            self._db.execute("DELETE FROM document_grants WHERE path = ?", (path,))
            self._db.executemany(
                "INSERT INTO document_grants VALUES (?, ?)", ((path, g) for g in set(groups))
            )
            self._derive_groups([path])

    def _derive_groups(self, paths: Sequence[str] | None) -> None:
        """Recompute `document_groups` for `paths` (None: every document), inside the
        caller's transaction: a document's own grants if it has any, else the union of
        the groups of every rule whose glob matches its path."""
        if paths is None:
            paths = [row[0] for row in self._db.execute("SELECT path FROM documents")]
            before = self._groups_of(set(paths)) if self.log_group_changes else {}
            self._db.execute("DELETE FROM document_groups")
        else:
            before = self._groups_of(set(paths)) if self.log_group_changes else {}
            self._db.executemany(
                "DELETE FROM document_groups WHERE path = ?", ((p,) for p in paths)
            )
        rules = self.access_rules()
        rows: list[tuple[str, str]] = []
        for path in paths:
            groups = set(self.document_grants(path))
            if not groups:
                for pattern, allowed in rules.items():
                    if glob_match(path, pattern):
                        groups.update(allowed)
            rows.extend((path, group) for group in sorted(groups))
        self._db.executemany("INSERT INTO document_groups VALUES (?, ?)", rows)
        if self.log_group_changes:  # the index keeps each chunk's readers: re-write them
            after = self._groups_of(set(paths))
            self._db.executemany(
                "INSERT INTO change_log (chunk_id, op) SELECT c.id, 'grp' FROM chunks c"
                " JOIN documents d ON d.id = c.doc_id WHERE d.path = ?",
                ((p,) for p in paths if before.get(p, []) != after.get(p, [])),
            )

    def _groups_of(self, paths: set[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        listed = sorted(paths)
        for start in range(0, len(listed), 900):
            batch = listed[start : start + 900]
            marks = ",".join("?" * len(batch))
            for path, group in self._db.execute(
                "SELECT path, group_name FROM document_groups"
                f" WHERE path IN ({marks}) ORDER BY group_name",
                batch,
            ):
                found.setdefault(str(path), []).append(str(group))
        return found
