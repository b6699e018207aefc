"""Values as people read them: bytes in KiB/MiB/GiB, seconds as minutes and hours, metric
values to a fixed number of decimals, a sheet's several values as a list. Template filters
`bytes`, `duration`, `metric` and `sheet_values`."""

from __future__ import annotations

import math
from typing import Any

from flask import Flask

from mammosearch.ingest.sheet import MULTI_VALUE_SEPARATOR

BYTE_UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB")


def human_bytes(size: int | float | None) -> str:
    if size is None:
        return "—"
    value = float(size)
    for unit in BYTE_UNITS:
        if value < 1024 or unit == BYTE_UNITS[-1]:
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:.0f} s"
    if seconds < 86400:
        return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:.0f} min"
    return f"{seconds // 86400:.0f} d {seconds % 86400 // 3600:.0f} h"


def metric_value(value: Any, decimals: int = 3) -> str:
    """A metric to `decimals` places; counts stay whole; no value is an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.{decimals}f}"


def sheet_values(text: str | None) -> str:
    """A sheet cell's several values ("a$b", as CDD-CESM joins them) as "a; b"."""
    if not text:
        return ""
    parts = [part.strip() for part in text.split(MULTI_VALUE_SEPARATOR)]
    return "; ".join(part for part in parts if part)


def init_app(app: Flask) -> None:
    app.add_template_filter(human_bytes, "bytes")
    app.add_template_filter(human_duration, "duration")
    app.add_template_filter(metric_value, "metric")
    app.add_template_filter(sheet_values, "sheet_values")
