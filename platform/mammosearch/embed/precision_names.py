"""How a reduced-precision variant is named: `NAME:int8`, `NAME:bf16` (backbone and space)."""

from __future__ import annotations

PRECISIONS = ("int8", "bf16")


def split_precision(name: str) -> tuple[str, str | None]:
    """`name:int8` -> (name, "int8"); `name:bf16` -> (name, "bf16"); else (name, None)."""
    base, _, suffix = name.rpartition(":")
    if base and suffix in PRECISIONS:
        return base, suffix
    return name, None


def variant_name(name: str, precision: str) -> str:
    return f"{name}:{precision}"
