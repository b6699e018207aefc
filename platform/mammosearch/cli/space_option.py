"""Shared CLI options: which backbone (and so which embedding space) a command works on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from sqlalchemy.orm import Session

from mammosearch.config import Settings, get_settings
from mammosearch.db.models import EmbeddingSpace

backbone_option = click.option(
    "--backbone",
    default=None,
    help="Backbone name or 'auto' (default: MAMMOSEARCH_BACKBONE, else auto).",
)


def settings_for(backbone: str | None) -> Settings:
    """Settings with --backbone applied over MAMMOSEARCH_BACKBONE."""
    settings = get_settings()
    return settings.with_overrides(backbone=backbone) if backbone else settings


def resolve_space(session: Session, settings: Settings, echo: bool = True) -> EmbeddingSpace:
    """The embedding space of the configured backbone; says which backbone `auto` picked."""
    from mammosearch.embed import resolve_backbone_name
    from mammosearch.embed.serving import open_serving_space

    if echo and settings.backbone == "auto":
        name, reason = resolve_backbone_name("auto", settings.weights_path)
        click.echo(f"backbone auto -> {name} ({reason})", err=True)
    space = open_serving_space(session, settings)
    if echo and not space.pretrained:
        click.echo(f"WARNING: space {space.id} ({space.backbone}) uses UNTRAINED weights", err=True)
    return space


def pass_through(*decorators: Callable[..., Any]) -> Callable[..., Any]:
    def apply(function: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply
