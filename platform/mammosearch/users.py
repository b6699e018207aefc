"""Users, roles, password hashes and API tokens: the core of sign-in, without Flask."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from mammosearch.db.models import ApiToken, User, utcnow

ROLES = ("admin", "radiologist")
"""admin: users, ingestion, evaluations, settings; radiologist: search and view cases."""

MIN_PASSWORD_LENGTH = 8
TOKEN_USE_RESOLUTION = timedelta(minutes=1)
"""last_used_at is rewritten at most this often: one write per request would serialise them."""
_hasher = PasswordHasher()


class UserError(ValueError):
    """A user request that cannot be done; the message says which input and why."""


def hash_password(password: str) -> str:
    """An argon2id hash (salted, parameters embedded) of `password`."""
    return _hasher.hash(password)


def _check_new_password(username: str, password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(
            f"{username}: password too short ({len(password)} characters, "
            f"at least {MIN_PASSWORD_LENGTH})"
        )


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")


def get_user(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def create_user(session: Session, username: str, password: str, role: str) -> User:
    """Add an active user; the caller commits."""
    username = username.strip()
    if not username:
        raise UserError("username must not be empty")
    _check_role(role)
    _check_new_password(username, password)
    if get_user(session, username) is not None:
        raise UserError(f"{username}: user already exists")
    user = User(username=username, password_hash=hash_password(password), role=role, active=True)
    session.add(user)
    session.flush()
    return user


def set_password(user: User, password: str) -> None:
    _check_new_password(user.username, password)
    user.password_hash = hash_password(password)


def set_role(user: User, role: str) -> None:
    _check_role(role)
    user.role = role


def verify_password(user: User, password: str) -> bool:
    """Check `password`; upgrades the stored hash when argon2's parameters changed."""
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return True


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The active user with this name and password, or None; records the sign-in time."""
    user = get_user(session, username.strip())
    if user is None:
        _hasher.hash(password)  # spend the same time as a real check: no user enumeration
        return None
    if not user.active or not verify_password(user, password):
        return None
    user.last_login_at = utcnow()
    return user


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_api_token(session: Session, user: User) -> str:
    """A new bearer token for `user`; only its sha256 is stored, so show it once."""
    token = "ms_" + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, token_sha256=token_sha256(token)))
    session.flush()
    return token


def verify_api_token(session: Session, token: str) -> User | None:
    """The active user owning this unrevoked token, or None; records when it was used."""
    if not token:
        return None
    api_token = session.scalar(
        select(ApiToken).where(
            ApiToken.token_sha256 == token_sha256(token), ApiToken.revoked.is_(False)
        )
    )
    if api_token is None or not api_token.user.active:
        return None
    now = utcnow()
    last_used = api_token.last_used_at
    if last_used is not None and last_used.tzinfo is None:  # SQLite drops the zone; we store UTC
        last_used = last_used.replace(tzinfo=UTC)
    if last_used is None or now - last_used > TOKEN_USE_RESOLUTION:
        api_token.last_used_at = now
    return api_token.user


def revoke_api_tokens(session: Session, user: User) -> int:
    """Revoke every token of `user`; returns how many were active."""
    tokens = session.scalars(
        select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked.is_(False))
    ).all()
    for api_token in tokens:
        api_token.revoked = True
    return len(tokens)
