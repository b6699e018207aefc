"""The watch folder: new files dropped into a directory become pending images.

What it picks up under the watched directory:
- a CDD-CESM-style folder (one holding the annotation sheet, *annotation*.xlsx): imported
  whole with `import_cdd_cesm` once its files stop changing, again when they change;
- loose JPEG/PNG files: registered with what their name tells (CDD-CESM names such as
  `P12_L_CM_CC.jpg` give patient, side, modality and view);
- DICOM files (.dcm, or the DICM signature): `register_dicom`.

A file still being written is left for a later scan: it is taken when its size and mtime
are unchanged since an earlier scan, or when it was last modified at least `min_age_s` ago.
Hidden files (writers' temporary names such as `.x.jpg.part`) are never taken, nor anything
that is not a regular file (symbolic links are not followed: a loop, a FIFO or a link to
/dev/zero is named in `ignored` and never opened), nor a file over
MAMMOSEARCH_MAX_INGEST_FILE_BYTES. A file that fails is named in `rejected` and the scan goes
on with the next one, so what was registered before and after it is still handed on. A cursor per
file (SourceCursor rows `watch:<dir>:<file>`: size, mtime, sha256, outcome) is committed with
the file's registration, so a restart re-reads nothing it has already handled.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mammosearch.config import Settings
from mammosearch.db.models import Image, ImageStatus, Patient, SourceCursor
from mammosearch.db.session import session_scope
from mammosearch.ingest.cdd_names import parse_cdd_name
from mammosearch.ingest.dicom import DICOM_SUFFIXES, looks_like_dicom
from mammosearch.ingest.patients import get_or_create_patient
from mammosearch.ingest.storage import ImageRejected, check_image, store_image

log = logging.getLogger(__name__)

WATCH_SOURCE = "watch"
LOOSE_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
DEFAULT_MIN_AGE_S = 10.0
SAME_SCAN_S = 1.0  # two looks closer together than this are one look


@dataclass
class WatchSummary:
    """What one scan did; names behind the counts that need attention."""

    directory: str
    registered: int = 0  # new images (loose files) + new or updated images (datasets)
    known: int = 0  # files whose content was already registered
    unchanged: int = 0  # files handled by an earlier scan
    waiting: list[str] = field(default_factory=list)  # still being written
    ignored: list[str] = field(default_factory=list)  # not an image format we take
    rejected: list[str] = field(default_factory=list)  # "name: reason"
    datasets: dict[str, dict[str, int]] = field(default_factory=dict)  # folder -> import counts

    def counts(self) -> dict[str, Any]:
        return {
            "registered": self.registered,
            "known": self.known,
            "unchanged": self.unchanged,
            "waiting": len(self.waiting),
            "ignored": len(self.ignored),
            "rejected": len(self.rejected),
            "datasets": len(self.datasets),
        }


@dataclass(frozen=True)
class _Seen:
    """A file (or a dataset folder's whole content) as one scan saw it."""

    size: int
    mtime_ns: int
    listing_sha1: str = ""  # folders: names, sizes and mtimes of every file

    def as_dict(self) -> dict[str, Any]:
        return {"size": self.size, "mtime_ns": self.mtime_ns, "listing_sha1": self.listing_sha1}

    def matches(self, cursor: dict[str, Any] | None) -> bool:
        if not cursor:
            return False
        return all(cursor.get(k) == v for k, v in self.as_dict().items())


def _cursor_prefix(directory: Path) -> str:
    return f"watch:{hashlib.sha1(str(directory).encode()).hexdigest()[:16]}:"


def _cursor_name(prefix: str, relative: str) -> str:
    return prefix + hashlib.sha1(relative.encode()).hexdigest()


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith((".", "~$")) for part in relative.parts)


def _is_annotation_sheet(path: Path) -> bool:
    return path.suffix.lower() == ".xlsx" and "annotation" in path.name.lower()


def _walk(directory: Path) -> tuple[list[Path], list[Path]]:
    """(dataset folders, loose files), as paths relative to `directory`."""
    datasets: list[Path] = []
    loose: list[Path] = []
    for root, dirs, files in os.walk(directory):
        root_path = Path(root)
        relative_root = root_path.relative_to(directory)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if any(_is_annotation_sheet(root_path / name) for name in files):
            datasets.append(relative_root)
            dirs[:] = []  # the importer owns everything below a sheet
            continue
        loose.extend(relative_root / name for name in sorted(files))
    return datasets, [p for p in loose if not _is_hidden(p)]


def _dataset_seen(folder: Path) -> _Seen:
    """One fingerprint for a folder: total size, newest mtime and listing of its files."""
    size, newest, listing = 0, 0, hashlib.sha1()
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if _is_hidden(relative) or not path.is_file():
            continue
        stat = path.stat()
        size += stat.st_size
        newest = max(newest, stat.st_mtime_ns)
        listing.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return _Seen(size=size, mtime_ns=newest, listing_sha1=listing.hexdigest())


def _ready(seen: _Seen, cursor: dict[str, Any] | None, now: float, min_age_s: float) -> bool:
    """Old enough, or unchanged since an earlier scan."""
    if now - seen.mtime_ns / 1e9 >= min_age_s:
        return True
    return (
        cursor is not None
        and cursor.get("state") == "seen"
        and seen.matches(cursor)
        and now - float(cursor.get("observed_at", now)) >= SAME_SCAN_S
    )


def _handled(seen: _Seen, cursor: dict[str, Any] | None) -> bool:
    return cursor is not None and cursor.get("state") != "seen" and seen.matches(cursor)


def _save_cursor(session: Session, name: str, value: dict[str, Any]) -> None:
    cursor = session.get(SourceCursor, name)
    if cursor is None:
        session.add(SourceCursor(name=name, value=value))
    else:
        cursor.value = value


def names_metadata(file_name: str) -> dict[str, str | None]:
    """Patient, side, view and modality from a CDD-CESM-style name; None where it says nothing."""
    parsed = parse_cdd_name(Path(file_name).name)
    if parsed is None or parsed.side is None:
        return {"patient": None, "side": None, "view": None, "modality": None}
    return {
        "patient": parsed.patient,
        "side": parsed.side,
        "view": parsed.view,
        "modality": parsed.modality,
    }


def _patient(session: Session, source_patient_id: str) -> Patient:
    return get_or_create_patient(session, WATCH_SOURCE, source_patient_id)[0]


def register_loose_image(
    session: Session, settings: Settings, content: bytes, relative_name: str
) -> tuple[int, bool]:
    """Check, store and register one JPEG/PNG as a pending image; (image_id, created).

    The caller commits. The same content already registered (by any source) is not
    registered again. Raises ImageRejected naming the file when it is not a usable image.
    """
    checked = check_image(content, relative_name, settings.max_image_pixels)
    existing = session.scalar(select(Image.id).where(Image.sha256 == checked.sha256))
    if existing is not None:
        return existing, False
    stored_path = store_image(settings.images_dir, checked)
    meta = names_metadata(relative_name)
    folder = str(Path(relative_name).parent)
    patient_key = meta["patient"] or (folder if folder != "." else "unknown")
    patient = _patient(session, patient_key)
    image = Image(
        patient_id=patient.id,
        source=WATCH_SOURCE,
        source_file_name=relative_name[-512:],
        sha256=checked.sha256,
        stored_path=str(stored_path),
        side=meta["side"],
        view=meta["view"],
        modality=meta["modality"] or "unknown",
        width=checked.width,
        height=checked.height,
        status=ImageStatus.PENDING,
    )
    try:
        with session.begin_nested():
            session.add(image)
    except IntegrityError:  # the same content registered meanwhile
        return session.scalars(select(Image.id).where(Image.sha256 == checked.sha256)).one(), False
    return image.id, True


class _NotRegular(OSError):
    """Not a regular file (a link, FIFO, device, socket): never opened for reading."""


def _kind_of(mode: int) -> str | None:
    """What a non-regular file is, in words; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return "a symbolic link (not followed)"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _too_large(name: str, size: int, max_bytes: int) -> str:
    return (
        f"{name}: file is {size} bytes; the limit is {max_bytes} "
        "(MAMMOSEARCH_MAX_INGEST_FILE_BYTES)"
    )


def read_regular_file(path: Path, name: str, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most `max_bytes`, without following a link.

    O_NOFOLLOW and O_NONBLOCK: a link swapped in after the scan looked, or a FIFO, fails
    at once instead of reading /dev/zero forever or blocking the scan.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    descriptor = os.open(path, flags)
    with os.fdopen(descriptor, "rb") as handle:
        kind = _kind_of(os.fstat(descriptor).st_mode)
        if kind:
            raise _NotRegular(f"{name}: {kind}")
        content = handle.read(max_bytes + 1)
    if len(content) > max_bytes:
        raise ImageRejected(_too_large(name, len(content), max_bytes))
    return content


def _take_file(
    session: Session, settings: Settings, directory: Path, relative: Path, summary: WatchSummary
) -> dict[str, Any]:
    """Register one ready file; returns the cursor's outcome fields."""
    path = directory / relative
    name = str(relative)
    suffix = path.suffix.lower()
    if suffix not in LOOSE_IMAGE_SUFFIXES | DICOM_SUFFIXES and suffix != "":
        summary.ignored.append(name)
        return {"state": "ignored"}
    try:
        content = read_regular_file(path, name, settings.max_ingest_file_bytes)
    except _NotRegular as exc:
        summary.ignored.append(str(exc))
        return {"state": "ignored", "error": str(exc)}
    except ImageRejected as exc:
        summary.rejected.append(str(exc))
        return {"state": "rejected", "error": str(exc)}
    sha256 = hashlib.sha256(content).hexdigest()
    try:
        if looks_like_dicom(path.name, content):
            from mammosearch.ingest.dicom_register import register_dicom

            result = register_dicom(session, content, name, settings, source=WATCH_SOURCE)
            image_id, created = result.image_id, result.created
        elif suffix in LOOSE_IMAGE_SUFFIXES:
            image_id, created = register_loose_image(session, settings, content, name)
        else:
            summary.ignored.append(name)
            return {"state": "ignored", "sha256": sha256}
    except (ImageRejected, ValueError) as exc:
        reason = str(exc) if str(exc).startswith(name) else f"{name}: {exc}"
        summary.rejected.append(reason)
        return {"state": "rejected", "sha256": sha256, "error": reason}
    if created:
        summary.registered += 1
    else:
        summary.known += 1
    return {"state": "registered", "sha256": sha256, "image_id": image_id}


def _take_dataset(
    session: Session, settings: Settings, directory: Path, relative: Path, summary: WatchSummary
) -> dict[str, Any]:
    from mammosearch.ingest.cdd_cesm import FolderError, import_cdd_cesm

    try:
        imported = import_cdd_cesm(
            session, directory / relative, settings, settings.birads_rule, progress=False
        )
    except (FolderError, ValueError) as exc:  # a bad sheet must not block the other files
        summary.rejected.append(str(exc))
        return {"state": "rejected", "error": str(exc)}
    counts = imported.counts()
    summary.datasets[str(relative)] = counts
    summary.registered += imported.new + imported.updated
    summary.known += imported.unchanged
    return {"state": "imported", "counts": counts}


def scan_directory(
    settings: Settings,
    directory: Path,
    min_age_s: float = DEFAULT_MIN_AGE_S,
    now: float | None = None,
) -> WatchSummary:
    """Register everything new and complete under `directory`; one commit per file/folder."""
    directory = Path(directory).expanduser().resolve()
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory}: watch folder does not exist or is not a folder")
    summary = WatchSummary(directory=str(directory))
    prefix = _cursor_prefix(directory)
    with session_scope(settings.database_url) as session:
        cursors = {
            row.name: dict(row.value)
            for row in session.scalars(
                select(SourceCursor).where(SourceCursor.name.startswith(prefix, autoescape=True))
            )
        }
    datasets, loose = _walk(directory)
    items = [("dataset", p) for p in datasets] + [("file", p) for p in loose]
    for kind, relative in items:
        try:
            _scan_item(
                settings, directory, prefix, cursors, kind, relative, min_age_s, now, summary
            )
        except Exception as exc:  # one file's failure must not cost the others their turn
            log.exception("watch: could not take one file (see the scan's rejected list)")
            summary.rejected.append(
                f"{relative}: could not be registered "
                f"({type(exc).__name__}: {exc}); tried again next scan"
            )
    log.info("watch %s: %s", directory, summary.counts())
    return summary


def _scan_item(
    settings: Settings,
    directory: Path,
    prefix: str,
    cursors: dict[str, dict[str, Any]],
    kind: str,
    relative: Path,
    min_age_s: float,
    now: float | None,
    summary: WatchSummary,
) -> None:
    """Look at one dataset folder or file; take it when it is ready and not yet handled."""
    path = directory / relative
    name = _cursor_name(prefix, f"{kind}:{relative}")
    try:
        if kind == "dataset":
            seen = _dataset_seen(path)
        else:
            status = path.lstat()  # the link itself: never where it points
            not_regular = _kind_of(status.st_mode)
            if not_regular:
                summary.ignored.append(f"{relative}: {not_regular}")
                return
            if status.st_size > settings.max_ingest_file_bytes:
                summary.rejected.append(
                    _too_large(str(relative), status.st_size, settings.max_ingest_file_bytes)
                )
                return
            seen = _Seen(size=status.st_size, mtime_ns=status.st_mtime_ns)
    except FileNotFoundError:
        return  # removed between listing and looking
    except OSError as exc:
        summary.rejected.append(f"{relative}: cannot be read ({exc.strerror or exc})")
        return
    cursor = cursors.get(name)
    if _handled(seen, cursor):
        summary.unchanged += 1
        return
    current_time = time.time() if now is None else now
    with session_scope(settings.database_url) as session:
        if not _ready(seen, cursor, current_time, min_age_s):
            summary.waiting.append(str(relative))
            if not seen.matches(cursor):  # keep the first look's time while unchanged
                observed = {"state": "seen", "observed_at": current_time, **seen.as_dict()}
                _save_cursor(session, name, {"path": str(relative), **observed})
            return
        take = _take_dataset if kind == "dataset" else _take_file
        outcome = take(session, settings, directory, relative, summary)
        # Committed with the registration: both happen, or neither.
        _save_cursor(session, name, {"path": str(relative), **seen.as_dict(), **outcome})
