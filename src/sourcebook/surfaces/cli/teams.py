"""Teams: users, API keys, groups, access rules, and the audit log."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from sourcebook.surfaces.cli.common import (
    CliError,
    JsonOption,
    KbOption,
    app,
    audit_log,
    command_group,
    console,
    display_path,
    emit_json,
    errors,
    errors_to_exit,
    open_kb,
)

if TYPE_CHECKING:
    from sourcebook.kb import KnowledgeBase
    from sourcebook.models import User

user_app = command_group("Users of a shared knowledge base (served with API keys).")
key_app = command_group("API keys: created once per person, revocable.")
group_app = command_group("Put users into groups, or take them out.")
access_app = command_group("Which groups may read which documents.")
for sub, name in (
    (user_app, "user"),
    (key_app, "key"),
    (group_app, "group"),
    (access_app, "access"),
):
    sub.info.no_args_is_help = True
    app.add_typer(sub, name=name)

GroupsOption = Annotated[
    list[str] | None, typer.Option("--group", "-g", help="a group the user belongs to (repeatable)")
]


def _print_users(users: list[User]) -> None:
    if not users:
        console.print("[yellow]no users: the server serves only this machine, without keys[/]")
        return
    table = Table("user", "admin", "groups", "active keys", "created", box=None)
    for user in users:
        table.add_row(
            escape(user.name),
            "yes" if user.admin else "",
            escape(", ".join(user.groups)),
            str(user.active_keys),
            _when(user.created),
        )
    console.print(table)


def _when(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="user name (letters, digits, . _ @ -)")],
    admin: Annotated[
        bool, typer.Option("--admin", help="may read every document and change the knowledge base")
    ] = False,
    group: GroupsOption = None,
    kb: KbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a user. Once a knowledge base has users, every API request needs a key."""
    with errors_to_exit(), open_kb(kb) as base:
        user = base.access.add_user(name, admin, group or [])
        audit_log(base, "user.add", detail=_user_detail(user))
        if as_json:
            emit_json(user)
            return
        console.print(
            f"added {_user_detail(user)}; create a key with `sourcebook key create {name}`"
        )


def _user_detail(user: User) -> str:
    role = "admin" if user.admin else "user"
    groups = f" in {', '.join(user.groups)}" if user.groups else ""
    return f"{role} {user.name}{groups}"


@user_app.command("list")
def user_list(kb: KbOption = None, as_json: JsonOption = False) -> None:
    """List users with their groups and number of active keys."""
    with errors_to_exit(), open_kb(kb) as base:
        users = base.access.users()
        if as_json:
            emit_json(users)
            return
        _print_users(users)


@user_app.command("remove")
def user_remove(
    name: Annotated[str, typer.Argument(help="user name")],
    kb: KbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove a user and revoke their keys. Without users, the server is single-user again
    (loopback only, no keys)."""
    with errors_to_exit(), open_kb(kb) as base:
        user = base.access.remove_user(name)
        audit_log(base, "user.remove", detail=_user_detail(user))
        if as_json:
            emit_json(user)
            return
        console.print(f"removed {escape(_user_detail(user))} and {user.active_keys} key(s)")


@key_app.command("create")
def key_create(
    user: Annotated[str, typer.Argument(help="the user the key belongs to")],
    kb: KbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create an API key and print it; it is shown only this once (only its hash is kept)."""
    with errors_to_exit(), open_kb(kb) as base:
        info, key = base.access.create_key(user)
        audit_log(base, "key.create", detail=f"{info.prefix} (id {info.id}) for {user}")
        if as_json:
            emit_json({**info.model_dump(mode="json"), "key": key})
            return
        errors.print(
            f"API key {info.id} for {escape(user)} (shown only now; revoke it with "
            f"`sourcebook key revoke {info.prefix}`):"
        )
        sys.stdout.write(key + "\n")


@key_app.command("list")
def key_list(
    user: Annotated[str | None, typer.Option("--user", "-u", help="only this user's keys")] = None,
    kb: KbOption = None,
    as_json: JsonOption = False,
) -> None:
    """List API keys (their prefixes, never the keys)."""
    with errors_to_exit(), open_kb(kb) as base:
        keys = base.access.keys(user)
        if as_json:
            emit_json(keys)
            return
        table = Table("id", "prefix", "user", "created", "revoked", box=None)
        for k in keys:
            revoked = _when(k.revoked) if k.revoked else ""
            table.add_row(str(k.id), k.prefix + "…", escape(k.user), _when(k.created), revoked)
        console.print(table if keys else "[yellow]no API keys[/]")


@key_app.command("revoke")
def key_revoke(
    key: Annotated[str, typer.Argument(help="the key's id, its prefix (sb_XXXXXXXX) or the key")],
    kb: KbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke an API key: requests with it are refused from now on."""
    with errors_to_exit(), open_kb(kb) as base:
        info = base.access.revoke_key(key)
        audit_log(base, "key.revoke", detail=f"{info.prefix} (id {info.id}) of {info.user}")
        if as_json:
            emit_json(info)
            return
        console.print(f"revoked key {info.id} ({info.prefix}…) of {escape(info.user)}")


@group_app.command("add")
def group_add(
    user: Annotated[str, typer.Argument(help="user name")],
    groups: Annotated[list[str], typer.Argument(help="groups to add the user to")],
    kb: KbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a user to groups."""
    with errors_to_exit(), open_kb(kb) as base:
        updated = base.access.add_to_groups(user, groups)
        audit_log(base, "group.add", detail=f"{user} + {', '.join(groups)}")
        _show_user(updated, as_json)


@group_app.command("remove")
def group_remove(
    user: Annotated[str, typer.Argument(help="user name")],
    groups: Annotated[list[str], typer.Argument(help="groups to take the user out of")],
    kb: KbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Take a user out of groups."""
    with errors_to_exit(), open_kb(kb) as base:
        updated = base.access.remove_from_groups(user, groups)
        audit_log(base, "group.remove", detail=f"{user} - {', '.join(groups)}")
        _show_user(updated, as_json)


def _show_user(user: User, as_json: bool) -> None:
    if as_json:
        emit_json(user)
    else:
        _print_users([user])


@access_app.command("set")
def access_set(
    pattern: Annotated[
        str, typer.Argument(help="path glob, as --path: 'hr/*', '*.pdf', '/abs/folder/*'")
    ],
    groups: Annotated[list[str], typer.Argument(help="the groups that may read them")],
    kb: KbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Only these groups (and admins) may read documents matching PATTERN, now and when
    indexed later. A document matched by several rules may be read by each rule's groups;
    one uploaded with its own groups keeps them. Documents no rule matches: everyone."""
    with errors_to_exit(), open_kb(kb) as base:
        base.set_access_rule(pattern, groups)
        audit_log(base, "access.set", pattern, _matching(base, pattern), ", ".join(groups))
        _show_rules(base, as_json)


@access_app.command("remove")
def access_remove(
    pattern: Annotated[str, typer.Argument(help="the rule's path glob")],
    kb: KbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove a rule: the documents it matched are readable by everyone again (unless
    another rule matches them)."""
    with errors_to_exit(), open_kb(kb) as base:
        base.set_access_rule(pattern, [])
        audit_log(base, "access.remove", pattern, _matching(base, pattern))
        _show_rules(base, as_json)


@access_app.command("list")
def access_list(
    documents: Annotated[
        bool, typer.Option("--documents", help="also list each restricted document")
    ] = False,
    kb: KbOption = None,
    as_json: JsonOption = False,
) -> None:
    """The access rules (and with --documents, who may read each restricted document)."""
    with errors_to_exit(), open_kb(kb) as base:
        _show_rules(base, as_json, documents)


def _matching(base: KnowledgeBase, pattern: str) -> list[str]:
    return [d.path for d in base.documents_matching(pattern)]


def _show_rules(base: KnowledgeBase, as_json: bool, documents: bool = False) -> None:
    rules = base.access_rules()
    restricted = base.document_groups()
    if as_json:
        data: dict[str, Any] = {"rules": rules}
        if documents:
            data["documents"] = restricted
        emit_json(data)
        return
    if not rules:
        console.print("[yellow]no access rules: every user may read every document[/]")
    for pattern, groups in rules.items():
        console.print(f"[green]{escape(pattern)}[/] → {escape(', '.join(groups))}")
    if documents:
        for path, groups in restricted.items():
            console.print(f"  {escape(display_path(path))}  [dim]{escape(', '.join(groups))}[/]")


def _moment(value: str | None, option: str) -> datetime | None:
    """An ISO date or time; without a time zone, local time."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CliError(
            f"{option} {value!r} is not an ISO date or time (2025-03-01, 2025-03-01T14:30)"
        ) from None
    return moment if moment.tzinfo else moment.astimezone()


@app.command()
def audit(
    user: Annotated[str | None, typer.Option("--user", "-u", help="only this user")] = None,
    since: Annotated[str | None, typer.Option(help="from this ISO date/time on")] = None,
    until: Annotated[str | None, typer.Option(help="up to this ISO date/time")] = None,
    action: Annotated[
        str | None, typer.Option(help="only this action (search, ask, document, upload, …)")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="newest N entries")] = 50,
    kb: KbOption = None,
    as_json: JsonOption = False,
) -> None:
    """The audit log, newest first: who searched, asked, read or changed what, when, and
    through which surface (cli, http, openai, mcp)."""
    with errors_to_exit():
        start, end = _moment(since, "--since"), _moment(until, "--until")
        if start and end and end < start:
            raise CliError("--until is before --since")
        with open_kb(kb) as base:
            entries = base.access.audit(user, start, end, action, limit)
        if as_json:
            emit_json(entries)
            return
        if not entries:
            console.print("[yellow]no audit entries[/]")
        for entry in entries:
            query = f" [bold]{escape(entry.query)}[/]" if entry.query else ""
            detail = f" [dim]({escape(entry.detail)})[/]" if entry.detail else ""
            console.print(
                f"[dim]{_when(entry.at)}[/] {escape(entry.user)} [cyan]{entry.surface}[/] "
                f"{entry.action}{query}{detail}"
            )
            for path in entry.documents:
                console.print(f"    {escape(display_path(path))}", highlight=False)
