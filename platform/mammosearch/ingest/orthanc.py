"""Follow an Orthanc server's change feed and register each new instance.

Orthanc numbers every change (`Seq`); we keep the last handled number in a SourceCursor
row. The cursor moves in the same transaction that registers the instance, so a crash
never skips an image, and a restart resumes after the last committed one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import requests
from sqlalchemy.orm import Session, sessionmaker

from mammosearch.config import Settings
from mammosearch.db.models import SourceCursor
from mammosearch.ingest.dicom_register import ImageRegisteredHook, register_dicom
from mammosearch.ingest.storage import ImageRejected

log = logging.getLogger(__name__)


class OrthancError(RuntimeError):
    """Orthanc could not be reached or answered with an error; the cursor did not move."""


def default_cursor_name(base_url: str) -> str:
    return f"orthanc:{base_url.rstrip('/')}"


def read_cursor(session: Session, cursor_name: str) -> int:
    cursor = session.get(SourceCursor, cursor_name)
    return int((cursor.value or {}).get("since", 0)) if cursor else 0


def write_cursor(session: Session, cursor_name: str, since: int) -> None:
    """Set the cursor (a new dict, so the JSON column sees the change); the caller commits."""
    cursor = session.get(SourceCursor, cursor_name)
    if cursor is None:
        session.add(SourceCursor(name=cursor_name, value={"since": since}))
    else:
        cursor.value = {**(cursor.value or {}), "since": since}


def _get(http: requests.Session, url: str, timeout_s: float, **params: Any) -> requests.Response:
    try:
        response = http.get(url, params=params or None, timeout=timeout_s)
    except requests.RequestException as exc:
        raise OrthancError(f"{url}: Orthanc unreachable ({exc})") from exc
    return response


def _changes(
    http: requests.Session, base_url: str, since: int, limit: int, timeout_s: float
) -> dict[str, Any]:
    url = f"{base_url}/changes"
    response = _get(http, url, timeout_s, since=since, limit=limit)
    if response.status_code != 200:
        raise OrthancError(f"{url}: HTTP {response.status_code} {response.text[:200]}")
    page: dict[str, Any] = response.json()  # {"Changes": [...], "Last": n, "Done": bool}
    return page


def _register_change(
    session_factory: sessionmaker[Session],
    http: requests.Session,
    base_url: str,
    settings: Settings,
    change: dict[str, Any],
    cursor_name: str,
    timeout_s: float,
) -> int | None:
    """Register one NewInstance change and move the cursor past it; the new image id or None."""
    instance_id, seq = change["ID"], int(change["Seq"])
    name = f"orthanc instance {instance_id}"
    url = f"{base_url}/instances/{instance_id}/file"
    response = _get(http, url, timeout_s)
    with session_factory() as session:
        created_id = None
        if response.status_code == 404:  # deleted from Orthanc since the change was logged
            log.warning("%s: gone from Orthanc (HTTP 404); skipped", name)
        elif response.status_code != 200:
            raise OrthancError(f"{url}: HTTP {response.status_code} {response.text[:200]}")
        else:
            try:
                result = register_dicom(session, response.content, name, settings, "orthanc")
                created_id = result.image_id if result.created else None
            except ImageRejected as exc:  # not an image (e.g. a structured report): skip it
                session.rollback()
                log.warning("skipped %s", exc)
        write_cursor(session, cursor_name, seq)
        session.commit()
    return created_id


def follow_orthanc(
    session_factory: sessionmaker[Session],
    base_url: str,
    settings: Settings,
    cursor_name: str | None = None,
    limit: int = 100,
    *,
    http: requests.Session | None = None,
    on_registered: Sequence[ImageRegisteredHook] = (),
    timeout_s: float = 60.0,
) -> int:
    """Read the change feed from the stored cursor to its end; return images created.

    Raises OrthancError when Orthanc fails; everything before the failure stays committed.
    """
    base_url = base_url.rstrip("/")
    cursor_name = cursor_name or default_cursor_name(base_url)
    http = http or requests.Session()
    with session_factory() as session:
        since = read_cursor(session, cursor_name)
    created = 0
    while True:
        page = _changes(http, base_url, since, limit, timeout_s)
        for change in page.get("Changes", []):
            if change.get("ChangeType") != "NewInstance":
                continue
            image_id = _register_change(
                session_factory, http, base_url, settings, change, cursor_name, timeout_s
            )
            since = int(change["Seq"])
            if image_id is not None:
                created += 1
                for hook in on_registered:
                    try:
                        hook(image_id)
                    except Exception:  # the image is committed; the reconciler picks it up
                        log.exception("on_registered hook failed for image %d", image_id)
        last = int(page.get("Last", since))
        if not page.get("Changes") and last < since:
            # Orthanc's database was reset: its numbering restarted. Re-reading from 0 is
            # safe because registration is idempotent.
            log.warning("%s: change feed restarted (last %d < cursor %d)", base_url, last, since)
            with session_factory() as session:
                write_cursor(session, cursor_name, 0)
                session.commit()
            since = 0
            continue
        if last > since:  # the page's other change types: nothing to do, move past them
            with session_factory() as session:
                write_cursor(session, cursor_name, last)
                session.commit()
            since = last
        if page.get("Done", True):
            return created
