"""Who may call which view: public views, per-blueprint roles, per-view roles; default deny."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from flask import Blueprint
from flask.sansio.blueprints import Blueprint as SansioBlueprint  # what app.blueprints holds

View = TypeVar("View", bound=Callable[..., Any])

RADIOLOGY = ("radiologist", "admin")
"""Search and case viewing; admins may check what radiologists see."""
ADMIN = ("admin",)
"""Users, ingestion, evaluations, audit."""
PUBLIC_ENDPOINTS = {"static"}


def public(view: View) -> View:
    """Mark a view as open to anonymous callers (login page, health checks, metrics)."""
    view.public = True  # type: ignore[attr-defined]
    return view


def roles_required(*roles: str) -> Callable[[View], View]:
    """Restrict one view to `roles` (overrides its blueprint's roles)."""

    def mark(view: View) -> View:
        view.allowed_roles = tuple(roles)  # type: ignore[attr-defined]
        return view

    return mark


def restrict_blueprint(blueprint: Blueprint, roles: Iterable[str]) -> Blueprint:
    """The roles allowed on every view of `blueprint` unless a view says otherwise."""
    blueprint.allowed_roles = tuple(roles)  # type: ignore[attr-defined]
    return blueprint


def is_public(endpoint: str, view: Callable[..., Any] | None) -> bool:
    return endpoint in PUBLIC_ENDPOINTS or bool(getattr(view, "public", False))


def allowed_roles(
    view: Callable[..., Any] | None, blueprint: SansioBlueprint | None
) -> tuple[str, ...]:
    """The view's roles, else its blueprint's, else admin only (fail closed)."""
    roles = getattr(view, "allowed_roles", None) or getattr(blueprint, "allowed_roles", None)
    return tuple(roles) if roles else ADMIN
