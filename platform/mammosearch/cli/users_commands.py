"""`mammosearch users ...`: create, disable and enable users, set passwords, manage API tokens."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import click

from mammosearch.access.audit import record_access
from mammosearch.access.users import (
    ROLES,
    UserError,
    create_user,
    issue_api_token,
    list_api_tokens,
    list_users,
    require_user,
    revoke_api_token,
    set_active,
    set_password,
    temporary_password,
    token_state,
)
from mammosearch.config import get_settings
from mammosearch.db.session import session_scope


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


@click.group("users")
def users() -> None:
    """Manage the people who may sign in (roles: admin, radiologist)."""


@users.command("create")
@click.argument("username")
@click.option("--role", type=click.Choice(ROLES), required=True, help="What the user may do.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def create(username: str, role: str, password_stdin: bool) -> None:
    """Create USERNAME with ROLE; the password is prompted for (or read from stdin)."""
    password = _read_password(password_stdin)
    try:
        with session_scope(get_settings().database_url) as session:
            user = create_user(session, username, password, role)
            record_access(session, None, "create_user", detail={"username": user.username})
    except UserError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"created {role} {user.username}")


@users.command("bootstrap")
def bootstrap() -> None:
    """Create a first admin account when there is no user yet (for a new installation).

    Its random password is printed once and written to DATA_DIR/initial-admin.txt (mode
    0600); the first sign-in asks for a new one before any other page opens.
    """
    import os

    settings = get_settings()
    with session_scope(settings.database_url) as session:
        if list_users(session):
            click.echo("users exist already: nothing to bootstrap")
            return
        password = temporary_password()
        create_user(session, "admin", password, "admin", must_change_password=True)
        record_access(session, None, "create_user", detail={"username": "admin"})
    path = settings.data_dir / "initial-admin.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(f"username: admin\npassword: {password}\n")
    click.echo(f"created the first admin account: username admin, password {password}")
    click.echo("(a temporary password: the first sign-in asks for a new one)")
    click.echo(
        f"(also in {path}; create radiologists with `mammosearch users create NAME "
        "--role radiologist`)"
    )


@users.command("set-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option(
    "--temporary", is_flag=True, help="The user must choose a new one at the next sign-in."
)
def set_password_command(username: str, password_stdin: bool, temporary: bool) -> None:
    """Replace USERNAME's password; the user's sessions end (API tokens are kept)."""
    password = _read_password(password_stdin)
    with _user_errors(), session_scope(get_settings().database_url) as session:
        set_password(require_user(session, username), password, temporary=temporary)
        record_access(session, None, "reset_password", detail={"username": username})
    click.echo(f"password of {username} changed; their sessions were signed out")


@contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except UserError as exc:
        raise click.ClickException(str(exc)) from exc


@users.command("disable")
@click.argument("username")
def disable(username: str) -> None:
    """Disable USERNAME: signed out everywhere at once, API tokens refused while disabled."""
    with _user_errors(), session_scope(get_settings().database_url) as session:
        changed = set_active(session, require_user(session, username), False)
        if changed:
            record_access(session, None, "disable_user", detail={"username": username})
    click.echo(f"{username} disabled" if changed else f"{username} was already disabled")


@users.command("enable")
@click.argument("username")
def enable(username: str) -> None:
    """Enable USERNAME again (its unexpired, unrevoked tokens work again)."""
    with _user_errors(), session_scope(get_settings().database_url) as session:
        changed = set_active(session, require_user(session, username), True)
        if changed:
            record_access(session, None, "enable_user", detail={"username": username})
    click.echo(f"{username} enabled" if changed else f"{username} was already enabled")


@users.command("token")
@click.argument("username")
@click.option("--name", "label", help="What the token is for, shown in `users tokens`.")
@click.option(
    "--expires-days",
    type=click.IntRange(min=1),
    help="Refuse the token after this many days (default: until revoked).",
)
def token(username: str, label: str | None, expires_days: int | None) -> None:
    """Print a new API token for USERNAME (send it as `Authorization: Bearer TOKEN`)."""
    with _user_errors(), session_scope(get_settings().database_url) as session:
        user = require_user(session, username)
        api_token, secret = issue_api_token(session, user, label, expires_days)
        record_access(
            session,
            None,
            "create_token",
            detail={"username": user.username, "token_id": api_token.id, "name": api_token.name},
        )
    click.echo(secret)


def _when(moment: datetime | None, empty: str = "-") -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else empty


@users.command("tokens")
@click.argument("username")
def tokens(username: str) -> None:
    """List USERNAME's API tokens: id, name, created, expires, last used, state."""
    with _user_errors(), session_scope(get_settings().database_url) as session:
        listed = list_api_tokens(session, require_user(session, username))
        click.echo("id\tname\tcreated\texpires\tlast used\tstate")
        for api_token in listed:
            click.echo(
                "\t".join(
                    [
                        str(api_token.id),
                        api_token.name or "-",
                        _when(api_token.created_at),
                        _when(api_token.expires_at, "never"),
                        _when(api_token.last_used_at),
                        token_state(api_token),
                    ]
                )
            )


@users.command("revoke-token")
@click.argument("token_id", type=int)
def revoke_token(token_id: int) -> None:
    """Revoke the API token TOKEN_ID (see `users tokens USERNAME`); it is refused at once."""
    with _user_errors(), session_scope(get_settings().database_url) as session:
        api_token = revoke_api_token(session, token_id)
        owner = api_token.user.username
        record_access(
            session, None, "revoke_token", detail={"username": owner, "token_id": token_id}
        )
    click.echo(f"token {token_id} of {owner} revoked")


@users.command("list")
def list_command() -> None:
    """List users with their role and last sign-in."""
    with session_scope(get_settings().database_url) as session:
        for user in list_users(session):
            state = "active" if user.active else "disabled"
            last = user.last_login_at.isoformat(timespec="seconds") if user.last_login_at else "-"
            click.echo(f"{user.username}\t{user.role}\t{state}\tlast login {last}")


commands = [users]
