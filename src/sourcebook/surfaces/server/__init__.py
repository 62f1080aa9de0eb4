"""`sourcebook serve`: the HTTP API (REST under /api) and an OpenAI-compatible endpoint
(/v1), both working only through `KnowledgeBase`.

Concurrency. FastAPI runs these (synchronous) routes on a thread pool, so one
`KnowledgeBase` is used from several threads. Reads share it: the store's SQLite
connection is opened with `check_same_thread=False` in serialised mode, and 180
concurrent search + ask calls from 2, 4 and 8 threads gave the same results as
sequential ones, without errors. Writes (upload, delete, re-sync) are exclusive, also
against reads: while a document is written, the shared connection is inside the
writer's transaction (a reader on it would see half a document) and the vector index
is swapped and modified in place. `ReadWriteLock` does both; a streamed answer holds
the read lock until its last event.

Every request has a `Caller` (`current_caller`). Without users it is the local user, who
may do everything, and the server only listens on a loopback address. Once a user exists
(`sourcebook user add`), every /api and /v1 request needs `Authorization: Bearer <key>`;
admins read everything and may write, other users read only the documents of their groups
and those without groups (`Filters.groups`, applied inside retrieval), and may not write.
Each search, answer, document read and change is recorded in the audit log.

The package: `app` (the application), one module of routes per resource (`answers`,
`documents`, `openai`), and what they share (`auth`, `errors`, `locking`, `schemas`,
`streaming`).
"""

from sourcebook.surfaces.server.app import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    UPLOADS,
    create_app,
    run_server,
)
from sourcebook.surfaces.server.auth import (
    LOCAL_USER,
    Caller,
    check_host,
    current_caller,
    is_loopback,
)
from sourcebook.surfaces.server.locking import ReadWriteLock

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "LOCAL_USER",
    "UPLOADS",
    "Caller",
    "ReadWriteLock",
    "check_host",
    "create_app",
    "current_caller",
    "is_loopback",
    "run_server",
]
