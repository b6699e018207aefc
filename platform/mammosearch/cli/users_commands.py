"""`mammosearch users ...`: create users, set passwords, issue API tokens."""

from __future__ import annotations

import sys

import click

from mammosearch.audit import record_access
from mammosearch.config import get_settings
from mammosearch.db.session import session_scope
from mammosearch.users import (
    ROLES,
    UserError,
    create_api_token,
    create_user,
    get_user,
    list_users,
    set_password,
)


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
    click.echo(f"created {role} {username}")


@users.command("bootstrap")
def bootstrap() -> None:
    """Create a first admin account when there is no user yet (for a new installation).

    Its random password is printed once and written to DATA_DIR/initial-admin.txt (mode
    0600); change it after the first sign-in with `mammosearch users set-password admin`.
    """
    import os
    import secrets

    settings = get_settings()
    with session_scope(settings.database_url) as session:
        if list_users(session):
            click.echo("users exist already: nothing to bootstrap")
            return
        password = secrets.token_urlsafe(12)
        create_user(session, "admin", password, "admin")
        record_access(session, None, "create_user", detail={"username": "admin"})
    path = settings.data_dir / "initial-admin.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(f"username: admin\npassword: {password}\n")
    click.echo(f"created the first admin account: username admin, password {password}")
    click.echo(f"(also in {path}; create radiologists with `mammosearch users create NAME "
               "--role radiologist`)")


@users.command("set-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def set_password_command(username: str, password_stdin: bool) -> None:
    """Replace USERNAME's password."""
    password = _read_password(password_stdin)
    try:
        with session_scope(get_settings().database_url) as session:
            user = get_user(session, username)
            if user is None:
                raise UserError(f"{username}: no such user (see `mammosearch users list`)")
            set_password(user, password)
    except UserError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"password of {username} changed")


@users.command("token")
@click.argument("username")
def token(username: str) -> None:
    """Print a new API token for USERNAME (send it as `Authorization: Bearer TOKEN`)."""
    with session_scope(get_settings().database_url) as session:
        user = get_user(session, username)
        if user is None:
            raise click.ClickException(f"{username}: no such user (see `mammosearch users list`)")
        api_token = create_api_token(session, user)
        record_access(session, None, "create_token", detail={"username": user.username})
    click.echo(api_token)


@users.command("list")
def list_command() -> None:
    """List users with their role and last sign-in."""
    with session_scope(get_settings().database_url) as session:
        for user in list_users(session):
            state = "active" if user.active else "disabled"
            last = user.last_login_at.isoformat(timespec="seconds") if user.last_login_at else "-"
            click.echo(f"{user.username}\t{user.role}\t{state}\tlast login {last}")


commands = [users]
