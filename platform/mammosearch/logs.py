"""Logging for every process: plain or JSON lines, with patient identifiers scrubbed.

Log lines leave the hospital's control (collectors, tickets), so they must not carry who a
patient is. Code logs internal image ids; this filter is the safety net for what slips
through in messages and exception texts: CDD-CESM file names (which embed the patient
number), DICOM UIDs, and values passed as `patient_id`/`patient_name` extras.
"""

from __future__ import annotations

import logging
import re
import sys

from pythonjsonlogger.json import JsonFormatter

from mammosearch.config import Settings, get_settings

SCRUBBED_ATTRIBUTES = ("patient_id", "patient_name", "source_patient_id", "PatientID")
_PATTERNS = [
    (re.compile(r"\bP\d+_[LR]_(?:CM|DM)_(?:CC|MLO)\w*(?:\.\w+)?", re.IGNORECASE), "<image-file>"),
    (re.compile(r"\b\d+(?:\.\d+){4,}\b"), "<dicom-uid>"),
    (re.compile(r"(?i)(patient(?:_?id| id|_name| name)?\s*[=:]\s*)([^\s,;)]+)"), r"\1<redacted>"),
]


# What every LogRecord has; anything else on a record is an `extra` (e.g. Celery's `data`).
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


def scrub(text: str) -> str:
    """Replace patient identifiers in `text` with placeholders."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _scrub_value(value: object) -> object:
    """Strings scrubbed inside nested dicts and lists (JSON logs print extras in full)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {key: _scrub_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_value(item) for item in value]
    return value


class PatientIdentifierFilter(logging.Filter):
    """Rewrites each record's message (and exception text) without patient identifiers."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        for name in vars(record).keys() - _RECORD_ATTRIBUTES:
            setattr(record, name, _scrub_value(getattr(record, name)))
        for name in SCRUBBED_ATTRIBUTES:
            if hasattr(record, name):
                setattr(record, name, "<redacted>")
        return True


_QUERY_STRING = re.compile(r"(\s/[^\s?]*)\?[^\s\"]*")


class QueryStringFilter(logging.Filter):
    """Drops query strings from request lines (werkzeug's access log): `?patient_id=...`."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = _QUERY_STRING.sub(r"\1", record.getMessage())
        record.args = None
        return True


def configure_logging(settings: Settings | None = None, force: bool = False) -> None:
    """Root logging from MAMMOSEARCH_LOG_LEVEL / MAMMOSEARCH_LOG_JSON; safe to call twice."""
    settings = settings or get_settings()
    root = logging.getLogger()
    if getattr(root, "_mammosearch_configured", False) and not force:
        return
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_json:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(PatientIdentifierFilter())
    for existing in list(root.handlers):
        existing.addFilter(PatientIdentifierFilter())
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    logging.captureWarnings(True)  # warnings.warn() lines become records too (JSON, scrubbed)
    root._mammosearch_configured = True  # type: ignore[attr-defined]
