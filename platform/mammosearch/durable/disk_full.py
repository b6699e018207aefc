"""A full disk, said as what is full and where: the database file, the PostgreSQL server or
the data directory, with the space left there, instead of a guess about DATABASE_URL."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from mammosearch.config import Settings

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_SQLITE_FULL = "database or disk is full"  # SQLITE_FULL's text
_POSTGRES_DISK_FULL = "53100"  # SQLSTATE disk_full


def space_left(path: Path) -> str:
    """Free space on the file system holding `path` (its nearest existing folder)."""
    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free_bytes = shutil.disk_usage(folder).free
    except OSError:
        return "free space unknown"
    return f"{free_bytes / 2**20:,.1f} MiB free there"


def sqlite_file(database_url: str) -> Path | None:
    """The database file of a SQLite URL; None for a server or an in-memory database."""
    if not database_url.startswith("sqlite"):
        return None
    path = database_url.split("///", 1)[-1] if "///" in database_url else ""
    return Path(path) if path and path != ":memory:" else None


def full_disk_message(error: BaseException, settings: Settings) -> str | None:
    """What is full and where, when `error` is a disk running out of space; else None."""
    if isinstance(error, OSError) and error.errno in _FULL_ERRNOS:
        where = Path(error.filename) if error.filename else settings.data_dir
        return (
            f"no space left on the disk holding {where} ({space_left(where)}); nothing was "
            f"saved. Free space there, or move the data directory (MAMMOSEARCH_DATA_DIR, "
            f"now {settings.data_dir}) to a larger disk"
        )
    original = getattr(error, "orig", None)  # SQLAlchemy's wrapper around the driver's error
    if original is None:
        return None
    text = str(original).splitlines()[0] if str(original) else ""
    database_file = sqlite_file(settings.database_url)
    if database_file is not None and _SQLITE_FULL in text:
        return (
            f"the disk holding the database file {database_file} is full "
            f"({space_left(database_file)}; SQLite: {text}); nothing was saved. Free space "
            f"on that disk (the data directory {settings.data_dir} holds the images and "
            "indexes too), or move the data directory to a larger disk"
        )
    if getattr(original, "sqlstate", None) == _POSTGRES_DISK_FULL or (
        "No space left on device" in text
    ):
        from mammosearch.db.session import redact_url

        return (
            f"the PostgreSQL server at {redact_url(settings.database_url)} has no disk space "
            f"left ({text}); nothing was saved. Free space in the server's data directory "
            "(its disk, not this machine's)"
        )
    return None
