"""Teams: users, groups, API keys, and the audit log, kept in the record store's database
(SQLite, or PostgreSQL shared by several servers: a key revoked through one is refused by
the others at once, because every request reads the key table).

Which groups may read which document is part of the store (`EmbeddedStore.set_access_rule`,
`Filters.groups`), because retrieval applies it; this module answers who a request comes
from and records what each surface did for whom.

- A user has a name, an admin flag and groups. A group is only a name: it exists while a
  user belongs to it or an access rule names it.
- An API key (`sb_…`) is shown once, when it is created. The database keeps its first
  characters (to recognise and revoke it) and its SHA-256: the key is 32 random
  characters, so a fast hash cannot be brute-forced and a slow one (scrypt) would only cost
  time on every request. A presented key is found by its prefix and its hash compared in
  constant time.
- The audit log gets one row per call (who, when, surface, action, query, documents
  returned); a failure to write it is logged and never costs the caller the result.

Everything here uses its own connection to the database (SQLite: with a lock; PostgreSQL:
a pool): the server calls it from several threads, outside the read/write lock that
guards the store's connection. The SQL runs on both engines (`sql.py`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sourcebook.faults import crash_point
from sourcebook.models import Answer, AnswerEvent, ApiKeyInfo, AuditEntry, Surface, User
from sourcebook.store.sql import Database, SQLiteDatabase

logger = logging.getLogger(__name__)

KEY_PREFIX = "sb_"
SHOWN_PREFIX = len(KEY_PREFIX) + 8  # characters of a key kept in clear to identify it
# names of users and groups: letters (any script), digits and . _ @ -, no spaces, so they
# can be typed on a command line and listed unambiguously
_NAME = re.compile(r"[\w.@-]{1,64}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,
    admin INTEGER NOT NULL, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS memberships (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    group_name TEXT NOT NULL, PRIMARY KEY (user_id, group_name)
);
CREATE TABLE IF NOT EXISTS api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    prefix TEXT NOT NULL, hash TEXT NOT NULL, created REAL NOT NULL, revoked REAL
);
CREATE INDEX IF NOT EXISTS api_keys_prefix ON api_keys(prefix);
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, "user" TEXT NOT NULL,
    surface TEXT NOT NULL, action TEXT NOT NULL, query TEXT, documents TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS audit_at ON audit_log(at);
CREATE INDEX IF NOT EXISTS audit_user ON audit_log("user", at);
"""


class AccessError(ValueError):
    """A bad request to the user directory (unknown user, duplicate name, …); the message
    says what to do."""


def check_name(kind: str, name: str) -> str:
    if not _NAME.fullmatch(name):
        raise AccessError(
            f"invalid {kind} name {name!r}: use 1-64 letters, digits or . _ @ - (no spaces)"
        )
    return name


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class AccessControl:
    """Users, groups, API keys and the audit log of one knowledge base database."""

    def __init__(self, db: Database, schema: str = _SCHEMA) -> None:
        """Use (creating the tables if missing) the directory in `db`."""
        self._db = db
        self._db.executescript(schema)

    @classmethod
    def sqlite(cls, db_path: Path) -> AccessControl:
        """The directory in a knowledge base's SQLite file (its own connection)."""
        return cls(SQLiteDatabase(db_path, lock_threads=True))

    @contextmanager
    def _transaction(self) -> Iterator[Database]:
        with self._db.transaction():
            yield self._db
            crash_point("access.commit")

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        return list(self._db.execute(sql, params))

    # --- users and groups ----------------------------------------------------------------

    def has_users(self) -> bool:
        """Whether any user exists: then every API request needs a key."""
        return bool(self._read("SELECT 1 FROM users LIMIT 1"))

    def add_user(self, name: str, admin: bool = False, groups: Sequence[str] = ()) -> User:
        check_name("user", name)
        for group in groups:
            check_name("group", group)
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise AccessError(f"a user named {name!r} already exists")
            user_id = db.execute(
                "INSERT INTO users (name, admin, created) VALUES (?, ?, ?) RETURNING id",
                (name, int(admin), time.time()),
            ).fetchone()[0]
            db.executemany(
                "INSERT INTO memberships VALUES (?, ?)", ((user_id, g) for g in set(groups))
            )
        return self.user(name)

    def remove_user(self, name: str) -> User:
        """Delete a user with their keys and memberships; returns what was deleted."""
        user = self.user(name)
        with self._transaction() as db:
            db.execute("DELETE FROM users WHERE name = ?", (name,))
        return user

    def user(self, name: str) -> User:
        found = self._users("WHERE u.name = ?", (name,))
        if not found:
            raise AccessError(f"no user named {name!r}; see `sourcebook user list`")
        return found[0]

    def users(self) -> list[User]:
        return self._users("", ())

    def _users(self, where: str, params: Sequence[object]) -> list[User]:
        rows = self._read(
            "SELECT u.id, u.name, u.admin, u.created,"
            " (SELECT COUNT(*) FROM api_keys k WHERE k.user_id = u.id AND k.revoked IS NULL)"
            f" FROM users u {where} ORDER BY u.name",
            params,
        )
        groups: dict[object, list[str]] = {}
        for user_id, group in self._read(
            "SELECT m.user_id, m.group_name FROM memberships m JOIN users u ON u.id = m.user_id"
            f" {where} ORDER BY m.group_name",
            params,
        ):
            groups.setdefault(user_id, []).append(str(group))
        return [
            User(
                name=str(name),
                admin=bool(admin),
                groups=groups.get(user_id, []),
                created=_time(created),
                active_keys=int(str(keys)),
            )
            for user_id, name, admin, created, keys in rows
        ]

    def add_to_groups(self, name: str, groups: Sequence[str]) -> User:
        for group in groups:
            check_name("group", group)
        user_id = self._user_id(name)
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO memberships VALUES (?, ?) ON CONFLICT DO NOTHING",
                ((user_id, g) for g in groups),
            )
        return self.user(name)

    def remove_from_groups(self, name: str, groups: Sequence[str]) -> User:
        user = self.user(name)
        missing = sorted(set(groups) - set(user.groups))
        if missing:
            raise AccessError(f"{name} is not in group(s) {', '.join(missing)}")
        user_id = self._user_id(name)
        with self._transaction() as db:
            db.executemany(
                "DELETE FROM memberships WHERE user_id = ? AND group_name = ?",
                ((user_id, g) for g in groups),
            )
        return self.user(name)

    def _user_id(self, name: str) -> int:
        rows = self._read("SELECT id FROM users WHERE name = ?", (name,))
        if not rows:
            raise AccessError(f"no user named {name!r}; see `sourcebook user list`")
        return int(str(rows[0][0]))

    # --- API keys ------------------------------------------------------------------------

    def create_key(self, name: str) -> tuple[ApiKeyInfo, str]:
        """A new key for the user: its record, and the key itself (not stored anywhere)."""
        user_id = self._user_id(name)
        key = KEY_PREFIX + secrets.token_urlsafe(24)
        with self._transaction() as db:
            key_id = int(
                db.execute(
                    "INSERT INTO api_keys (user_id, prefix, hash, created) VALUES (?, ?, ?, ?)"
                    " RETURNING id",
                    (user_id, key[:SHOWN_PREFIX], hash_key(key), time.time()),
                ).fetchone()[0]
            )
        return next(k for k in self.keys(name) if k.id == key_id), key

    def keys(self, name: str | None = None) -> list[ApiKeyInfo]:
        where, params = ("WHERE u.name = ?", (name,)) if name is not None else ("", ())
        if name is not None:
            self._user_id(name)  # an unknown user is an error, not an empty list
        rows = self._read(
            "SELECT k.id, u.name, k.prefix, k.created, k.revoked FROM api_keys k"
            f" JOIN users u ON u.id = k.user_id {where} ORDER BY k.id",
            params,
        )
        return [
            ApiKeyInfo(
                id=int(str(key_id)),
                user=str(user),
                prefix=str(prefix),
                created=_time(created),
                revoked=None if revoked is None else _time(revoked),
            )
            for key_id, user, prefix, created, revoked in rows
        ]

    def revoke_key(self, prefix_or_id: str) -> ApiKeyInfo:
        """Revoke a key given by its id or the prefix shown at creation (`sb_XXXXXXXX`)."""
        candidates = [
            k
            for k in self.keys()
            if str(k.id) == prefix_or_id
            or (len(prefix_or_id) >= SHOWN_PREFIX and k.prefix == prefix_or_id[:SHOWN_PREFIX])
        ]
        if not candidates:
            raise AccessError(f"no API key {prefix_or_id!r}; see `sourcebook key list`")
        if len(candidates) > 1:
            ids = ", ".join(str(k.id) for k in candidates)
            raise AccessError(f"{prefix_or_id!r} matches keys {ids}; revoke one by its id")
        key = candidates[0]
        if key.revoked is None:
            with self._transaction() as db:
                db.execute("UPDATE api_keys SET revoked = ? WHERE id = ?", (time.time(), key.id))
        return next(k for k in self.keys() if k.id == key.id)

    def authenticate(self, key: str) -> User | None:
        """The user holding this key, or None for an unknown or revoked key."""
        if not key.startswith(KEY_PREFIX) or len(key) <= SHOWN_PREFIX:
            return None
        digest = hash_key(key)
        rows = self._read(
            "SELECT u.name, k.hash FROM api_keys k JOIN users u ON u.id = k.user_id"
            " WHERE k.prefix = ? AND k.revoked IS NULL",
            (key[:SHOWN_PREFIX],),
        )
        for name, stored in rows:
            if hmac.compare_digest(str(stored), digest):
                return self.user(str(name))
        return None

    # --- audit log -----------------------------------------------------------------------

    def record(
        self,
        user: str,
        surface: Surface,
        action: str,
        query: str | None = None,
        documents: Sequence[str] = (),
        detail: str | None = None,
    ) -> bool:
        """Append one audit row (a single INSERT). A failure (a read-only or locked
        database) is logged and returns False: the caller still gets its result."""
        try:
            self._db.execute(
                'INSERT INTO audit_log (at, "user", surface, action, query, documents, detail)'
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    time.time(),
                    user,
                    surface,
                    action,
                    query,
                    json.dumps(list(dict.fromkeys(documents)), ensure_ascii=False),
                    detail,
                ),
            )
        except self._db.errors as exc:
            logger.error(
                "could not write the audit log (%s by %s via %s): %s", action, user, surface, exc
            )
            return False
        return True

    def audit(
        self,
        user: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        action: str | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Audit rows, newest first, optionally of one user, action or time range."""
        sql = 'SELECT id, at, "user", surface, action, query, documents, detail FROM audit_log'
        conditions: list[str] = []
        params: list[object] = []
        for condition, value in (
            ('"user" = ?', user),
            ("action = ?", action),
            ("at >= ?", since.timestamp() if since else None),
            ("at <= ?", until.timestamp() if until else None),
        ):
            if value is not None:
                conditions.append(condition)
                params.append(value)
        if conditions:
            sql += " WHERE " + " AND ".join(conditions)
        sql += " ORDER BY at DESC, id DESC LIMIT ?"
        params.append(limit)
        return [
            AuditEntry.model_validate(
                {
                    "id": row_id,
                    "at": _time(at),
                    "user": who,
                    "surface": surface,
                    "action": what,
                    "query": query,
                    "documents": json.loads(str(documents)),
                    "detail": detail,
                }
            )
            for row_id, at, who, surface, what, query, documents, detail in self._read(sql, params)
        ]

    def close(self) -> None:
        self._db.close()


def audited(
    events: Iterator[AnswerEvent], record: Callable[[Answer], None]
) -> Iterator[AnswerEvent]:
    """`events`, calling `record` with the answer as it passes (to audit a streamed
    answer once it exists, whoever consumes the stream)."""
    for event in events:
        if event.answer is not None:
            record(event.answer)
        yield event


def _time(value: object) -> datetime:
    return datetime.fromtimestamp(float(str(value)), UTC)
