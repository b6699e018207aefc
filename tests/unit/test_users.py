"""Users, password hashes and API tokens (core), and the `mammosearch users` commands."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from mammosearch.cli import main
from mammosearch.db.models import ApiToken, User
from mammosearch.users import (
    UserError,
    authenticate,
    create_api_token,
    create_user,
    revoke_api_tokens,
    verify_api_token,
)


def test_passwords_are_stored_as_argon2_hashes(session: Session) -> None:
    """The hash is argon2id, never the password; the right password signs in, a wrong one not."""
    user = create_user(session, "ana", "s3cret-pass-words", "radiologist")
    assert user.password_hash.startswith("$argon2id$")
    assert "s3cret-pass-words" not in user.password_hash
    assert authenticate(session, "ana", "s3cret-pass-words") is user
    assert user.last_login_at is not None
    assert authenticate(session, "ana", "wrong-pass") is None
    assert authenticate(session, "nobody", "s3cret-pass-words") is None


def test_disabled_users_cannot_sign_in_or_use_tokens(session: Session) -> None:
    """Deactivating a user closes both doors."""
    user = create_user(session, "ben", "s3cret-pass-words", "admin")
    token = create_api_token(session, user)
    user.active = False
    assert authenticate(session, "ben", "s3cret-pass-words") is None
    assert verify_api_token(session, token) is None


@pytest.mark.parametrize(
    ("username", "password", "role", "message"),
    [
        ("", "long-enough-words", "admin", "username must not be empty"),
        ("cy", "short-pass1", "admin", "cy: password too short"),
        ("cy", "long-enough-words", "janitor", "unknown role 'janitor'"),
    ],
)
def test_bad_user_input_says_what_is_wrong(
    session: Session, username: str, password: str, role: str, message: str
) -> None:
    """Errors name the input and the rule."""
    with pytest.raises(UserError, match=message):
        create_user(session, username, password, role)


def test_usernames_are_unique(session: Session) -> None:
    """A second user with the same name is refused."""
    create_user(session, "dee", "long-enough-words", "admin")
    with pytest.raises(UserError, match="dee: user already exists"):
        create_user(session, "dee", "long-enough-words", "radiologist")


def test_tokens_are_stored_hashed_and_can_be_revoked(session: Session) -> None:
    """Only sha256(token) is kept; a revoked token no longer works."""
    user = create_user(session, "eve", "long-enough-words", "radiologist")
    token = create_api_token(session, user)
    stored = session.scalar(select(ApiToken))
    assert stored.token_sha256 != token and len(stored.token_sha256) == 64
    assert verify_api_token(session, token) is user and stored.last_used_at is not None
    assert verify_api_token(session, token + "x") is None
    assert revoke_api_tokens(session, user) == 1
    assert verify_api_token(session, token) is None


def test_cli_creates_a_user_and_prints_a_token(settings, session: Session) -> None:  # type: ignore[no-untyped-def]
    """`users create --password-stdin` then `users token` prints a token that verifies."""
    runner = CliRunner()
    created = runner.invoke(
        main, ["users", "create", "fay", "--role", "radiologist", "--password-stdin"],
        input="long-enough-words\n",
    )
    assert created.exit_code == 0, created.output
    assert "created radiologist fay" in created.output
    token = runner.invoke(main, ["users", "token", "fay"])
    assert token.exit_code == 0, token.output
    assert verify_api_token(session, token.output.strip()).username == "fay"
    listed = runner.invoke(main, ["users", "list"])
    assert "fay\tradiologist\tactive" in listed.output


def test_cli_refuses_duplicates_and_unknown_users(settings) -> None:  # type: ignore[no-untyped-def]
    """Clear messages and a non-zero exit instead of a traceback."""
    runner = CliRunner()
    args = ["users", "create", "gil", "--role", "admin", "--password-stdin"]
    assert runner.invoke(main, args, input="long-enough-words\n").exit_code == 0
    again = runner.invoke(main, args, input="long-enough-words\n")
    assert again.exit_code == 1 and "gil: user already exists" in again.output
    missing = runner.invoke(main, ["users", "token", "nobody"])
    assert missing.exit_code == 1 and "nobody: no such user" in missing.output


def test_cli_prompts_for_the_password_twice(settings, session: Session) -> None:  # type: ignore[no-untyped-def]
    """Without --password-stdin the password is asked for, hidden, with confirmation."""
    result = CliRunner().invoke(
        main, ["users", "create", "hal", "--role", "admin"],
        input="long-enough-words\nlong-enough-words\n",
    )
    assert result.exit_code == 0, result.output
    assert session.scalar(select(User.role).where(User.username == "hal")) == "admin"
