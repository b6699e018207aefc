"""Users, roles, passwords, sign-in backoff and API tokens: the core of sign-in, without Flask.

Cutting a user off is immediate: every browser session carries the user's `session_version`
and the web layer compares it on each request, so disabling a user, signing out and any
password change (own or an admin's reset) end every session of that user at once. API tokens
are separate credentials with their own name, expiry and revocation; a disabled user's tokens
are refused while the user is disabled, and a password change leaves tokens alone (they are
revoked one by one: `mammosearch users revoke-token ID` or the admin Users page).
"""

from __future__ import annotations

import hashlib
import math
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from mammosearch.db.driver_rows import driver_rows
from mammosearch.db.models import ApiToken, User, utcnow

ROLES = ("radiologist", "admin")
"""Least privilege first (forms offer it by default). radiologist: search and view cases;
admin: also users, ingestion, evaluations, settings."""

MIN_PASSWORD_LENGTH = 12
MIN_PASSWORD_SCORE = 3
"""zxcvbn's 0-4 scale; 3 resists an online attacker (common passwords, names, keyboard runs
and repeats score lower)."""
STRENGTH_CHECKED_CHARS = 100  # zxcvbn's time grows with the length; the rest adds strength

FREE_SIGN_IN_FAILURES = 5
"""Wrong passwords in a row before the account's sign-in waits; then 1, 2, 4 ... minutes."""
FIRST_BACKOFF = timedelta(minutes=1)
MAX_BACKOFF = timedelta(minutes=15)

TOKEN_USE_RESOLUTION = timedelta(minutes=1)
"""last_used_at is rewritten at most this often: one write per request would serialise them."""
_hasher = PasswordHasher()


class UserError(ValueError):
    """A user request that cannot be done; the message says which input and why."""


class TokenRefused(Exception):
    """An API token that does not open the API; the message says why and what to do."""


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite drops the zone; everything is stored in UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def hash_password(password: str) -> str:
    """An argon2id hash (salted, parameters embedded) of `password`."""
    return _hasher.hash(password)


def password_problem(username: str, password: str) -> str | None:
    """Why `password` is not good enough for `username`, or None when it is."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"password too short ({len(password)} characters, at least {MIN_PASSWORD_LENGTH})"
    from zxcvbn import zxcvbn  # here: its dictionaries take a fifth of a second to load

    result = zxcvbn(password[:STRENGTH_CHECKED_CHARS], user_inputs=[username])
    if result["score"] < MIN_PASSWORD_SCORE:
        feedback = result["feedback"]
        why = (feedback.get("warning") or "it follows a guessable pattern").rstrip(".")
        hints = " ".join(feedback.get("suggestions") or ["Add another uncommon word or two."])
        return f"password too easy to guess: {why[0].lower()}{why[1:]}. {hints}"
    return None


def _check_new_password(username: str, password: str) -> None:
    problem = password_problem(username, password)
    if problem:
        raise UserError(f"{username}: {problem}")


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")


def temporary_password() -> str:
    """A random password to hand over once (bootstrap, admin reset); 16 URL-safe characters."""
    return secrets.token_urlsafe(12)


MAX_USERNAME_LENGTH = 128


def display_username(username: str) -> str:
    """The name as stored and shown: NFKC-normalised, without surrounding spaces."""
    return unicodedata.normalize("NFKC", username).strip()


def username_key(username: str) -> str:
    """The name as sign-in compares it: NFKC, then case-folded (Unicode's NFKC_Casefold
    less its default-ignorable removals). `ADMIN1`, `admin1` and a full-width `ａｄｍｉｎ１`
    are one user; casefold, unlike lower, also folds `ß` to `ss`."""
    return unicodedata.normalize("NFKC", display_username(username).casefold())


def get_user(session: Session, username: str) -> User | None:
    """The user whose name matches `username` whatever its case or Unicode form."""
    return session.scalar(select(User).where(User.username_key == username_key(username)))


def require_user(session: Session, username: str) -> User:
    user = get_user(session, username)
    if user is None:
        raise UserError(f"{username}: no such user (see `mammosearch users list`)")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def create_user(
    session: Session,
    username: str,
    password: str,
    role: str,
    must_change_password: bool = False,
) -> User:
    """Add an active user; the caller commits. A name that differs from an existing one
    only in case or Unicode form is the existing one (see `username_key`)."""
    username = display_username(username)
    if not username:
        raise UserError("username must not be empty")
    if len(username) > MAX_USERNAME_LENGTH:
        raise UserError(
            f"{username[:20]}...: username longer than {MAX_USERNAME_LENGTH} characters"
        )
    _check_role(role)
    _check_new_password(username, password)
    existing = get_user(session, username)
    if existing is not None:
        same = "" if existing.username == username else f" as {existing.username!r}"
        raise UserError(
            f"{username}: user already exists{same} (names differing only in case or "
            "Unicode form are the same user)"
        )
    user = User(
        username=username,
        username_key=username_key(username),
        password_hash=hash_password(password),
        role=role,
        active=True,
        session_version=0,
        must_change_password=must_change_password,
        failed_sign_ins=0,
    )
    session.add(user)
    session.flush()
    return user


def end_sessions(user: User) -> None:
    """Every browser session of `user` is refused from its next request on."""
    user.session_version = (user.session_version or 0) + 1


def set_password(user: User, password: str, temporary: bool = False) -> None:
    """Replace the password and end the user's sessions (tokens are kept; see the module).

    `temporary`: someone else chose it (an admin's reset), so pages wait until it is changed.
    """
    _check_new_password(user.username, password)
    user.password_hash = hash_password(password)
    user.must_change_password = temporary
    user.failed_sign_ins = 0
    user.sign_in_blocked_until = None
    end_sessions(user)


def change_own_password(user: User, current_password: str, new_password: str) -> None:
    """The user's own change: the current password first, and a new one that differs."""
    if not verify_password(user, current_password):
        raise UserError(f"{user.username}: the current password is wrong")
    if new_password == current_password:
        raise UserError(f"{user.username}: the new password must differ from the current one")
    set_password(user, new_password)


def reset_password(user: User) -> str:
    """An admin's reset: a new temporary password (returned, to hand over once)."""
    password = temporary_password()
    set_password(user, password, temporary=True)
    return password


def _active_admins(session: Session) -> int:
    statement = select(func.count(User.id)).where(User.role == "admin", User.active.is_(True))
    return int(session.scalar(statement) or 0)


def set_active(session: Session, user: User, active: bool) -> bool:
    """Enable or disable `user`; returns whether anything changed.

    Disabling ends the user's sessions at once and refuses its tokens while disabled; the
    last active admin cannot be disabled (nobody could enable anyone again from the web).
    """
    if user.active == active:
        return False
    if not active and user.role == "admin" and _active_admins(session) <= 1:
        raise UserError(f"{user.username}: the last active admin cannot be disabled")
    user.active = active
    if not active:
        end_sessions(user)
    else:
        user.failed_sign_ins = 0
        user.sign_in_blocked_until = None
    return True


def session_is_current(user: User | None, session_version: object) -> bool:
    """Whether a browser session made at `session_version` may still act for `user`."""
    return user is not None and user.active and session_version == user.session_version


def verify_password(user: User, password: str) -> bool:
    """Check `password`; upgrades the stored hash when argon2's parameters changed."""
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return True


@dataclass(frozen=True)
class SignIn:
    """The outcome of a sign-in attempt: the user, or why not (and when to try again)."""

    user: User | None
    refused: str | None = None  # "unknown_user", "wrong_password", "disabled", "blocked"
    retry_after_s: int = 0


def _backoff(failures: int) -> timedelta:
    doublings = failures - FREE_SIGN_IN_FAILURES
    backoff: timedelta = FIRST_BACKOFF * (2 ** min(doublings, 10))
    return min(MAX_BACKOFF, backoff)


def sign_in(session: Session, username: str, password: str, now: datetime | None = None) -> SignIn:
    """Check a sign-in attempt; records the sign-in time or counts the failure (caller commits).

    After FREE_SIGN_IN_FAILURES wrong passwords in a row the account refuses every attempt,
    the right password included, for a doubling wait (per account, whatever the address).
    """
    now = now or utcnow()
    user = get_user(session, username.strip())
    if user is None:
        _hasher.hash(password)  # spend the same time as a real check: no user enumeration
        return SignIn(None, "unknown_user")
    blocked_until = _aware(user.sign_in_blocked_until)
    if blocked_until is not None and blocked_until > now:
        _hasher.hash(password)
        return SignIn(None, "blocked", math.ceil((blocked_until - now).total_seconds()))
    if not verify_password(user, password):
        user.failed_sign_ins = (user.failed_sign_ins or 0) + 1
        if user.failed_sign_ins >= FREE_SIGN_IN_FAILURES:
            user.sign_in_blocked_until = now + _backoff(user.failed_sign_ins)
        return SignIn(None, "wrong_password")
    user.failed_sign_ins = 0
    user.sign_in_blocked_until = None
    if not user.active:
        return SignIn(None, "disabled")
    user.last_login_at = now
    return SignIn(user)


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The active user with this name and password, or None (see `sign_in` for why)."""
    return sign_in(session, username, password).user


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_api_token(
    session: Session,
    user: User,
    name: str | None = None,
    expires_days: float | None = None,
) -> tuple[ApiToken, str]:
    """A new bearer token (its row, and the token to show once: only its sha256 is stored)."""
    if expires_days is not None and expires_days <= 0:
        raise UserError(f"{user.username}: a token's expiry must be at least 1 day ahead")
    name = (name or "").strip() or None
    if name is not None and len(name) > 128:
        raise UserError(f"{user.username}: token name longer than 128 characters")
    token = "ms_" + secrets.token_urlsafe(32)
    created = utcnow()
    api_token = ApiToken(
        user_id=user.id,
        token_sha256=token_sha256(token),
        name=name,
        created_at=created,
        expires_at=created + timedelta(days=expires_days) if expires_days is not None else None,
        revoked=False,
    )
    session.add(api_token)
    session.flush()
    return api_token, token


def create_api_token(
    session: Session,
    user: User,
    name: str | None = None,
    expires_days: float | None = None,
) -> str:
    """A new bearer token for `user`; only its sha256 is stored, so show it once."""
    return issue_api_token(session, user, name, expires_days)[1]


def token_state(api_token: ApiToken, now: datetime | None = None) -> str:
    """ "active", "expired" or "revoked"."""
    if api_token.revoked:
        return "revoked"
    expires_at = _aware(api_token.expires_at)
    if expires_at is not None and expires_at <= (now or utcnow()):
        return "expired"
    return "active"


@dataclass(frozen=True)
class TokenHolder:
    """Who an accepted API token acts for: what a request needs, without loading the row."""

    token_id: int
    user_id: int
    username: str
    role: str
    recorded_use: bool  # last_used_at was written: the caller's commit keeps it


# The token with its user in one query of plain columns, built once: every API request
# runs it, and loading two ORM objects for it cost more than the query itself.
_TOKEN_WITH_USER = (
    select(
        ApiToken.id,
        ApiToken.name,
        ApiToken.revoked,
        ApiToken.expires_at,
        ApiToken.last_used_at,
        User.id.label("user_id"),
        User.username,
        User.role,
        User.active,
    )
    .join(User, User.id == ApiToken.user_id)
    .where(ApiToken.token_sha256 == bindparam("token_sha256"))
)
_RECORD_TOKEN_USE = (
    update(ApiToken)
    .where(ApiToken.id == bindparam("token_id"))
    .values(last_used_at=bindparam("now"))
)


def accept_api_token(session: Session, token: str) -> TokenHolder:
    """Who this token acts for; raises TokenRefused saying why not. Records its use (at
    most once per TOKEN_USE_RESOLUTION) in the session's transaction."""
    found = None
    if token:
        if session.autoflush and (session.new or session.dirty or session.deleted):
            session.flush()  # what an ORM query would do: a revocation just made counts
        connection = session.connection()
        rows = driver_rows(connection, _TOKEN_WITH_USER, {"token_sha256": token_sha256(token)})
        found = rows[0] if rows else None
    if found is None:
        raise TokenRefused("unknown API token")
    label = f"API token {found.id}" + (f" ({found.name})" if found.name else "")
    now = utcnow()
    state = token_state(found, now)  # the row has the token's columns
    if state == "revoked":
        raise TokenRefused(f"{label} was revoked; ask an admin for a new one")
    if state == "expired":
        expires_at = _aware(found.expires_at)
        assert expires_at is not None  # an expired token has a date
        expired = expires_at.isoformat(timespec="minutes")
        raise TokenRefused(f"{label} expired at {expired}; ask an admin for a new one")
    if not found.active:
        raise TokenRefused(f"{label}: user {found.username} is disabled")
    last_used = _aware(found.last_used_at)
    recorded = last_used is None or now - last_used > TOKEN_USE_RESOLUTION
    if recorded:
        connection.execute(_RECORD_TOKEN_USE, {"token_id": found.id, "now": now})
    return TokenHolder(found.id, found.user_id, found.username, found.role, recorded)


def check_api_token(session: Session, token: str) -> User:
    """The user this token acts for; raises TokenRefused saying why not. Records its use."""
    holder = accept_api_token(session, token)
    if holder.recorded_use:  # a token object this session holds predates the write
        held = session.identity_map.get(identity_key(ApiToken, holder.token_id))
        if held is not None:
            session.expire(held, ["last_used_at"])
    user = session.get(User, holder.user_id)
    assert user is not None  # the join found it in this transaction
    return user


def verify_api_token(session: Session, token: str) -> User | None:
    """The active user owning this valid token, or None; records when it was used."""
    try:
        return check_api_token(session, token)
    except TokenRefused:
        return None


def list_api_tokens(session: Session, user: User | None = None) -> list[ApiToken]:
    """Tokens (of `user`, or everyone's), newest first, revoked and expired ones included."""
    statement = select(ApiToken).order_by(ApiToken.created_at.desc(), ApiToken.id.desc())
    if user is not None:
        statement = statement.where(ApiToken.user_id == user.id)
    return list(session.scalars(statement))


def revoke_api_token(session: Session, token_id: int) -> ApiToken:
    """Revoke one token by its id (as listed); revoking it again changes nothing."""
    api_token = session.get(ApiToken, token_id)
    if api_token is None:
        raise UserError(f"token {token_id}: no such token (see `mammosearch users tokens NAME`)")
    if not api_token.revoked:
        api_token.revoked = True
        api_token.revoked_at = utcnow()
    return api_token


def revoke_api_tokens(session: Session, user: User) -> int:
    """Revoke every token of `user`; returns how many were active."""
    tokens = session.scalars(
        select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked.is_(False))
    ).all()
    for api_token in tokens:
        api_token.revoked = True
        api_token.revoked_at = utcnow()
    return len(tokens)
