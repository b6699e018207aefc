"""Waits for pages that re-render: a node replaced while it is read is retried, not an error."""

from __future__ import annotations

from typing import Any


def page_wait(driver: Any, timeout_s: float) -> Any:
    """A WebDriverWait that polls until `timeout_s`, ignoring nodes the page just replaced."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(
        driver,
        timeout_s,
        ignored_exceptions=(StaleElementReferenceException, NoSuchElementException),
    )
