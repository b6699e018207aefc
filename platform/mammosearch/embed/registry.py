"""Registered trained models: copies of model directories under DATA_DIR/models/registry.

A registered name works wherever a backbone name does. Registering copies the directory
(verified first) into a staging folder and renames it into place: all or nothing.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from mammosearch.embed.trained import ModelDirError, TrainedModel, read_trained_model

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def registered_models(registry: Path) -> list[TrainedModel]:
    """Every readable registered model, by name; unreadable folders are skipped."""
    models = []
    for folder in sorted(registry.glob("*")) if registry.is_dir() else []:
        if folder.is_dir() and not folder.name.startswith("."):
            try:
                models.append(read_trained_model(folder))
            except ModelDirError:
                continue
    return models


def register_model(source: Path, registry: Path, name: str | None = None) -> TrainedModel:
    """Copy a verified model directory into the registry as `name` (default: its own name)."""
    model = read_trained_model(source)
    name = name or model.name
    if not NAME_PATTERN.match(name):
        raise ModelDirError(
            f"model name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)"
        )
    target = registry / name
    if target.exists():
        existing = read_trained_model(target)
        if existing.sha256 == model.sha256:
            return existing  # the same model registered again: nothing to do
        raise ModelDirError(
            f"model name {name!r} is taken by another model (sha256 {existing.sha256[:12]}); "
            "choose another --name"
        )
    registry.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=registry, prefix=f".{name}.staging-"))
    try:
        for item in model.directory.iterdir():
            if item.is_file() and not item.name.endswith(".sha256.json"):
                shutil.copy2(item, staging / item.name)
        read_trained_model(staging)  # the copy is whole before it gets a name
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return read_trained_model(target)
