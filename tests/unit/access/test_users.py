"""Users, password hashes and API tokens (core), and the `mammosearch users` commands."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from mammosearch.access.users import (
    FREE_SIGN_IN_FAILURES,
    TokenRefused,
    UserError,
    authenticate,
    change_own_password,
    check_api_token,
    create_api_token,
    create_user,
    issue_api_token,
    list_api_tokens,
    reset_password,
    revoke_api_token,
    revoke_api_tokens,
    session_is_current,
    set_active,
    sign_in,
    token_state,
    verify_api_token,
)
from mammosearch.cli import main
from mammosearch.db.models import ApiToken, User, utcnow


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
        main,
        ["users", "create", "fay", "--role", "radiologist", "--password-stdin"],
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
        main,
        ["users", "create", "hal", "--role", "admin"],
        input="long-enough-words\nlong-enough-words\n",
    )
    assert result.exit_code == 0, result.output
    assert session.scalar(select(User.role).where(User.username == "hal")) == "admin"


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("eleven-char", "password too short (11 characters, at least 12)"),
        ("password1234", "password too easy to guess: this is a very common password"),
        ("aaaaaaaaaaaaaaaa", "password too easy to guess: repeats like"),
        ("ivy-ivy-ivy-ivy-", "password too easy to guess"),
    ],
)
def test_weak_passwords_are_refused_saying_why(
    session: Session, password: str, message: str
) -> None:
    """At least 12 characters, and not common, repeated or built from the username (zxcvbn)."""
    with pytest.raises(UserError, match=re.escape(f"ivy: {message}")):
        create_user(session, "ivy", password, "radiologist")


def test_disabling_ends_sessions_and_refuses_tokens_until_enabled(session: Session) -> None:
    """Disable moves the session version on and the token says why; enable opens it again."""
    user = create_user(session, "jo", "s3cret-pass-words", "radiologist")
    token = create_api_token(session, user)
    version = user.session_version
    assert set_active(session, user, False) is True
    assert user.session_version == version + 1 and not session_is_current(user, version + 1)
    with pytest.raises(TokenRefused, match="user jo is disabled"):
        check_api_token(session, token)
    assert sign_in(session, "jo", "s3cret-pass-words").refused == "disabled"
    assert set_active(session, user, False) is False  # already disabled: nothing changes
    set_active(session, user, True)
    assert check_api_token(session, token) is user
    assert session_is_current(user, user.session_version)


def test_the_last_active_admin_cannot_be_disabled(session: Session) -> None:
    """Someone must be able to enable the others again."""
    first = create_user(session, "kim", "s3cret-pass-words", "admin")
    with pytest.raises(UserError, match="kim: the last active admin cannot be disabled"):
        set_active(session, first, False)
    create_user(session, "lee", "s3cret-pass-words", "admin")
    assert set_active(session, first, False) is True


def test_tokens_have_names_expiry_and_are_revoked_one_by_one(session: Session) -> None:
    """An expired token and a revoked one are refused with the reason; the others still work."""
    user = create_user(session, "max", "s3cret-pass-words", "radiologist")
    expiring, expiring_secret = issue_api_token(session, user, "nightly", expires_days=7)
    kept, kept_secret = issue_api_token(session, user, "pacs")
    assert kept.expires_at is None and token_state(kept) == "active"
    assert expiring.expires_at - expiring.created_at == timedelta(days=7)
    expiring.expires_at = utcnow() - timedelta(seconds=1)
    assert token_state(expiring) == "expired"
    with pytest.raises(TokenRefused, match=rf"API token {expiring.id} \(nightly\) expired at"):
        check_api_token(session, expiring_secret)
    assert check_api_token(session, kept_secret) is user
    assert [t.id for t in list_api_tokens(session, user)] == [kept.id, expiring.id]
    revoke_api_token(session, kept.id)
    assert token_state(kept) == "revoked" and kept.revoked_at is not None
    with pytest.raises(TokenRefused, match=r"\(pacs\) was revoked"):
        check_api_token(session, kept_secret)
    with pytest.raises(UserError, match="token 999: no such token"):
        revoke_api_token(session, 999)
    with pytest.raises(UserError, match="at least 1 day"):
        issue_api_token(session, user, expires_days=0)


def test_sign_in_backs_off_per_account_and_a_success_resets_it(session: Session) -> None:
    """Five wrong passwords, then even the right one waits 1 minute, then 2, ... up to 15."""
    create_user(session, "ned", "s3cret-pass-words", "radiologist")
    now = utcnow()
    for _ in range(FREE_SIGN_IN_FAILURES):
        assert sign_in(session, "ned", "wrong", now=now).refused == "wrong_password"
    blocked = sign_in(session, "ned", "s3cret-pass-words", now=now)
    assert blocked.refused == "blocked" and blocked.retry_after_s == 60
    later = now + timedelta(seconds=61)
    assert sign_in(session, "ned", "wrong", now=later).refused == "wrong_password"
    assert sign_in(session, "ned", "s3cret-pass-words", now=later).retry_after_s == 120
    much_later = later + timedelta(minutes=3)
    assert sign_in(session, "ned", "s3cret-pass-words", now=much_later).user is not None
    assert sign_in(session, "ned", "wrong", now=much_later).refused == "wrong_password"
    assert sign_in(session, "ned", "s3cret-pass-words", now=much_later).user is not None


def test_password_changes_end_sessions_keep_tokens_and_a_reset_is_temporary(
    session: Session,
) -> None:
    """Own change needs the current password; an admin's reset must be changed at sign-in."""
    user = create_user(session, "oli", "s3cret-pass-words", "radiologist")
    token = create_api_token(session, user)
    version = user.session_version
    with pytest.raises(UserError, match="oli: the current password is wrong"):
        change_own_password(user, "nope", "another-long-phrase")
    change_own_password(user, "s3cret-pass-words", "another-long-phrase")
    assert user.session_version == version + 1 and not user.must_change_password
    assert check_api_token(session, token) is user  # tokens are kept
    temporary = reset_password(user)
    assert user.must_change_password and user.session_version == version + 2
    assert authenticate(session, "oli", temporary) is user


def test_cli_disables_enables_and_manages_named_expiring_tokens(settings, session: Session) -> None:  # type: ignore[no-untyped-def]
    """`users disable|enable`, `token --name --expires-days`, `tokens NAME`, `revoke-token ID`."""
    runner = CliRunner()
    runner.invoke(
        main,
        ["users", "create", "pat", "--role", "radiologist", "--password-stdin"],
        input="long-enough-words\n",
    )
    issued = runner.invoke(
        main, ["users", "token", "pat", "--name", "PACS bridge", "--expires-days", "30"]
    )
    assert issued.exit_code == 0, issued.output
    token = issued.output.strip()
    assert token.startswith("ms_") and verify_api_token(session, token).username == "pat"
    session.commit()
    listed = runner.invoke(main, ["users", "tokens", "pat"]).output.splitlines()
    assert listed[0] == "id\tname\tcreated\texpires\tlast used\tstate"
    token_id, name, _created, expires, _used, state = listed[1].split("\t")
    assert name == "PACS bridge" and state == "active"
    assert expires.startswith((utcnow() + timedelta(days=30)).strftime("%Y-%m-%d"))
    assert runner.invoke(main, ["users", "token", "pat", "--expires-days", "0"]).exit_code == 2

    assert "pat disabled" in runner.invoke(main, ["users", "disable", "pat"]).output
    session.expire_all()
    assert verify_api_token(session, token) is None
    assert "pat enabled" in runner.invoke(main, ["users", "enable", "pat"]).output
    session.expire_all()
    assert verify_api_token(session, token) is not None
    revoked = runner.invoke(main, ["users", "revoke-token", token_id])
    assert revoked.exit_code == 0 and f"token {token_id} of pat revoked" in revoked.output
    session.expire_all()
    assert verify_api_token(session, token) is None
    assert runner.invoke(main, ["users", "revoke-token", "999"]).exit_code == 1
    assert "nobody: no such user" in runner.invoke(main, ["users", "disable", "nobody"]).output


def test_bootstrap_admin_must_change_the_printed_password(settings, session: Session) -> None:  # type: ignore[no-untyped-def]
    """The printed password signs in once, flagged: pages wait for a new one."""
    result = CliRunner().invoke(main, ["users", "bootstrap"])
    assert result.exit_code == 0, result.output
    password = re.search(r"password (\S+)", result.output)[1]
    admin = authenticate(session, "admin", password)
    assert admin is not None and admin.must_change_password
