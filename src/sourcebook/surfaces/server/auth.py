"""Who is asking (`Caller`, resolved per request from the API key), where the server may
listen, and the audit record of each call."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, NoReturn

from fastapi import (
    Depends,
    HTTPException,
    Request,
)

from sourcebook.kb import KnowledgeBase
from sourcebook.models import (
    Answer,
    Surface,
    User,
)
from sourcebook.store.access import AccessControl
from sourcebook.store.embedded import Filters, restricted
from sourcebook.surfaces.server.errors import OpenAIError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_host(host: str, authenticated: bool = False) -> None:
    """Refuse an address other machines could reach unless requests are authenticated
    (`authenticated`: the knowledge base has users, so every request needs a key)."""
    if authenticated or is_loopback(host):
        return
    raise ValueError(
        f"refusing to listen on {host}: the knowledge base has no users, so the API has "
        "no authentication yet and only listens on a loopback address (127.0.0.1, ::1, "
        "localhost). To serve other machines, add an admin (`sourcebook user add NAME "
        "--admin`) and give each person a key (`sourcebook key create NAME`); or reach "
        "it through an SSH tunnel"
    )


# --- who is asking ---------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """Who makes a request: the local user when the knowledge base has no users, else
    the holder of the request's API key. `groups` None means every document may be read
    (the local user, an admin); otherwise only documents without groups or in one of
    these."""

    name: str
    can_write: bool
    groups: frozenset[str] | None = None

    def restrict(self, filters: Filters | None) -> Filters | None:
        """`filters` narrowed to what this caller may read."""
        return restricted(filters, self.groups)

    @classmethod
    def of(cls, user: User) -> Caller:
        """The holder of one of `user`'s API keys."""
        if user.admin:
            return cls(name=user.name, can_write=True)
        return cls(name=user.name, can_write=False, groups=frozenset(user.groups))


LOCAL_USER = Caller(name="local", can_write=True)


def current_caller(request: Request) -> Caller:
    """The caller of this request, resolved once per request. Without users, the local
    user (a server bound to a public address refuses everyone instead: it was started
    with users, and they have all been removed since). With users, the holder of the
    `Authorization: Bearer` key, or 401."""
    state = request.app.state
    access: AccessControl = state.access
    if not access.has_users():
        if state.require_auth:
            _unauthorized(request, "the knowledge base has no users any more; add one")
        return LOCAL_USER
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        _unauthorized(
            request,
            "this knowledge base has users: send an API key as `Authorization: Bearer "
            "<key>` (an admin creates one with `sourcebook key create NAME`)",
        )
    user = access.authenticate(key.strip())
    if user is None:
        _unauthorized(request, "the API key is not valid (unknown or revoked)")
    return Caller.of(user)


# a route parameter of this type receives the request's caller (resolved once per request,
# however many dependencies ask for it)
CallerDep = Annotated[Caller, Depends(current_caller)]


def _unauthorized(request: Request, message: str) -> NoReturn:
    """401, in OpenAI's error format under /v1 (its clients show that message)."""
    if request.url.path.startswith("/v1"):
        raise OpenAIError(401, message, "invalid_api_key")
    raise HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


def writer(caller: Annotated[Caller, Depends(current_caller)]) -> Caller:
    if not caller.can_write:
        raise HTTPException(403, f"{caller.name} may not change the knowledge base")
    return caller


def audit(
    kb: KnowledgeBase,
    caller: Caller,
    surface: Surface,
    action: str,
    query: str | None = None,
    documents: Sequence[str] = (),
    detail: str | None = None,
) -> None:
    kb.access.record(caller.name, surface, action, query, documents, detail)


def groups_detail(groups: Sequence[str]) -> str | None:
    return "groups: " + ", ".join(groups) if groups else None


def cited(answer: Answer) -> list[str]:
    return [c.hit.absolute_path for c in answer.citations]


def answer_detail(answer: Answer) -> str:
    return f"{answer.mode}, {'found' if answer.found else 'not found'}"
