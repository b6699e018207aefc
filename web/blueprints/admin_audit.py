"""The access audit page (admin): events filtered by patient, user, action and days, and
their CSV export. Routes on the admin blueprint, so its guard and endpoint names apply."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime

from flask import abort, current_app, render_template, request, stream_with_context
from flask_login import current_user
from werkzeug.wrappers import Response

from mammosearch.access import audit
from web.blueprints.admin import bp
from web.db import get_session

AUDIT_PAGE_SIZE = 100
AUDIT_MAX_PAGE = 100_000  # 10 million events back: beyond it a page number is a typo
AUDIT_CSV_COLUMNS = (
    "when_utc", "username", "action", "patient", "image_id", "remote_addr", "detail",
)  # fmt: skip


FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a cell as a formula (OWASP, CSV injection)."""


def spreadsheet_safe(cell: str) -> str:
    """`cell` as a spreadsheet shows it, never runs it: a leading quote before a trigger.

    Usernames, patient ids and details come from people and sheets (`=HYPERLINK(...)`);
    the quote is OWASP's rule and shows in the cell, which is the point.
    """
    return "'" + cell if cell.startswith(FORMULA_TRIGGERS) else cell


def _page_number() -> int:
    """`page` from the query: a whole number from 1 to AUDIT_MAX_PAGE, else a 400."""
    raw = request.args.get("page", "1").strip() or "1"
    if not raw.isdigit() or not 1 <= int(raw) <= AUDIT_MAX_PAGE:
        abort(400, description=f"page {raw[:20]!r}: a whole number from 1 to {AUDIT_MAX_PAGE}")
    return int(raw)


def _day(name: str, label: str) -> date | None:
    raw = (request.args.get(name) or "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        abort(400, description=f"{label} {raw[:20]!r}: not a date; write it as YYYY-MM-DD")


def _audit_filter() -> audit.AuditFilter:
    """The page's filters from its query string (a bad date or range is a 400)."""
    selection = audit.AuditFilter(
        patient=(request.args.get("patient") or "").strip() or None,
        username=(request.args.get("username") or "").strip() or None,
        action=(request.args.get("action") or "").strip() or None,
        since=_day("since", "from"),
        until=_day("until", "to"),
    )
    if selection.since and selection.until and selection.since > selection.until:
        abort(400, description=f"from {selection.since} is after to {selection.until}")
    return selection


def _filter_args(selection: audit.AuditFilter) -> dict[str, str]:
    """The filters as query arguments (empty ones left out), for links and the export."""
    values = {
        "patient": selection.patient, "username": selection.username,
        "action": selection.action, "since": selection.since, "until": selection.until,
    }  # fmt: skip
    return {name: str(value) for name, value in values.items() if value}


@bp.get("/audit")
def audit_log() -> str:
    session = get_session()
    page = _page_number()
    selection = _audit_filter()
    rows = audit.find_events(
        session, selection, limit=AUDIT_PAGE_SIZE, offset=(page - 1) * AUDIT_PAGE_SIZE
    )
    total = audit.count_found(session, selection)
    return render_template(
        "admin/audit.html", rows=rows, total=total, page=page, page_size=AUDIT_PAGE_SIZE,
        actions=audit.known_actions(session), filters=_filter_args(selection),
    )  # fmt: skip


def _csv_lines(selection: audit.AuditFilter) -> Iterator[str]:
    """The header, then one line per event, read from the database a batch at a time."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def taken() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(AUDIT_CSV_COLUMNS)
    yield taken()
    with current_app.extensions["mammosearch_sessions"]() as session:
        for row in audit.iter_found(session, selection):
            event = row.event
            cells = (
                event.created_at.strftime("%Y-%m-%d %H:%M:%S"), event.username or "",
                event.action, row.source_patient_id or "", str(event.image_id or ""),
                event.remote_addr or "",
                json.dumps(event.detail, sort_keys=True) if event.detail else "",
            )  # fmt: skip
            writer.writerow([spreadsheet_safe(cell) for cell in cells])
            yield taken()


@bp.get("/audit.csv")
def audit_export() -> Response:
    """Every event the filters select, as CSV, streamed; the export is itself audited."""
    selection = _audit_filter()
    session = get_session()
    matching = audit.count_found(session, selection)
    audit.record_access(
        session, current_user.row, "export_audit",
        detail={"filters": _filter_args(selection), "events": matching},
        remote_addr=request.remote_addr,
    )  # fmt: skip
    session.commit()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Response(
        stream_with_context(_csv_lines(selection)),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="audit-{stamp}.csv"'},
    )
