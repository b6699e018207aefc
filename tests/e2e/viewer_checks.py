"""What every path to the comparison viewer must show: full-resolution pixels and the scale."""

from __future__ import annotations

FULL_AND_SCALED = (
    "return arguments[0].map(id => { const pane = document.getElementById(id);"
    " return [pane.dataset.src, pane.dataset.loaded, pane.dataset.scale || '',"
    " pane.dataset.scaleText || '']; })"
)


def _full_resolution_and_scale(driver, panes: list[str]) -> list[list[str]]:  # type: ignore[no-untyped-def]
    """Each pane's [src, loaded, scale mode, scale text]."""
    return driver.execute_script(FULL_AND_SCALED, panes)


def assert_full_resolution_at_one_scale(driver, panes: list[str], mode: str = "pixels") -> None:  # type: ignore[no-untyped-def]
    """Every pane loaded from the full-resolution address (or an upload's data URL) and
    showing the scale: one mode for the group, a bar with its length."""
    shown = _full_resolution_and_scale(driver, panes)
    for src, loaded, scale, text in shown:
        assert loaded == "1", shown
        assert src.endswith("/full") or "/full?" in src or src.startswith("data:image/"), src
        assert scale == mode and text.split()[1] == ("mm" if mode == "mm" else "px"), shown
