"""The watch-folder scanner: new files become pending images once, complete files only."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image as PILImage
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from mammosearch.config import Settings
from mammosearch.db.models import Image, ImageStatus, SourceCursor
from mammosearch.db.session import session_scope
from mammosearch.ingest.watch import names_metadata, scan_directory


def _png(path: Path, shade: int, age_s: float = 60.0) -> Path:
    """A small grey PNG whose mtime is `age_s` seconds in the past."""
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.new("L", (64, 48), color=shade).save(path, format="PNG")
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def _images(settings: Settings) -> list[Image]:
    with session_scope(settings.database_url) as session:
        query = select(Image).options(selectinload(Image.patient)).order_by(Image.id)
        return list(session.scalars(query))


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    """An empty watch folder."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


def test_a_new_png_becomes_one_pending_image_and_a_rescan_adds_nothing(
    settings: Settings, inbox: Path
) -> None:
    """A complete file is registered pending; the cursor makes later scans skip it."""
    _png(inbox / "patient-7" / "scan.png", 100)
    first = scan_directory(settings, inbox)
    second = scan_directory(settings, inbox)
    assert first.registered == 1 and first.rejected == []
    assert second.registered == 0 and second.unchanged == 1
    (image,) = _images(settings)
    assert image.status == ImageStatus.PENDING
    assert image.source == "watch" and image.patient.source_patient_id == "patient-7"
    assert Path(image.stored_path).is_file()


def test_a_file_still_being_written_waits_for_a_second_unchanged_look(
    settings: Settings, inbox: Path
) -> None:
    """A fresh file is only noted; unchanged at the next scan, it is taken."""
    _png(inbox / "fresh.png", 10, age_s=0)
    now = time.time()
    first = scan_directory(settings, inbox, min_age_s=600, now=now)
    assert first.waiting == ["fresh.png"] and _images(settings) == []
    second = scan_directory(settings, inbox, min_age_s=600, now=now + 5)
    assert second.registered == 1


def test_a_file_that_grows_between_scans_keeps_waiting(settings: Settings, inbox: Path) -> None:
    """A size change between two looks restarts the wait."""
    path = _png(inbox / "growing.png", 10, age_s=0)
    now = time.time()
    scan_directory(settings, inbox, min_age_s=600, now=now)
    with path.open("ab") as handle:
        handle.write(b"\0" * 10)
    again = scan_directory(settings, inbox, min_age_s=600, now=now + 5)
    assert again.waiting == ["growing.png"] and _images(settings) == []


def test_a_corrupt_file_is_rejected_by_name_and_not_reread_until_it_changes(
    settings: Settings, inbox: Path
) -> None:
    """The reason names the file; the cursor remembers the verdict."""
    broken = inbox / "broken.jpg"
    broken.write_bytes(b"PK\x03\x04 not a jpeg")
    os.utime(broken, (time.time() - 60, time.time() - 60))
    first = scan_directory(settings, inbox)
    assert len(first.rejected) == 1 and first.rejected[0].startswith("broken.jpg:")
    second = scan_directory(settings, inbox)
    assert second.rejected == [] and second.unchanged == 1
    _png(broken, 200)  # replaced by a real image: read again
    third = scan_directory(settings, inbox)
    assert third.registered == 1


def test_hidden_and_unknown_files_are_left_alone(settings: Settings, inbox: Path) -> None:
    """Writers' temporary names and non-image files never become images."""
    _png(inbox / ".upload.png.part", 1)
    notes = inbox / "notes.txt"
    notes.write_text("hello")
    os.utime(notes, (time.time() - 60, time.time() - 60))
    summary = scan_directory(settings, inbox)
    assert summary.registered == 0 and summary.ignored == ["notes.txt"]
    assert _images(settings) == []


def test_the_same_content_under_two_names_is_one_image(settings: Settings, inbox: Path) -> None:
    """Content addressing: a copy is recognised, not registered twice."""
    _png(inbox / "a.png", 42)
    shutil.copy2(inbox / "a.png", inbox / "b.png")
    summary = scan_directory(settings, inbox)
    assert summary.registered == 1 and summary.known == 1
    assert len(_images(settings)) == 1


def test_cdd_cesm_names_give_patient_side_view_and_modality(
    settings: Settings, inbox: Path
) -> None:
    """P12_L_CM_CC.jpg says patient P12, left, subtracted, CC."""
    assert names_metadata("x/P12_L_CM_CC.jpg") == {
        "patient": "P12",
        "side": "L",
        "view": "CC",
        "modality": "subtracted",
    }
    assert names_metadata("scan.png")["side"] is None
    _png(inbox / "P3_R_DM_MLO.png", 77)
    scan_directory(settings, inbox)
    (image,) = _images(settings)
    assert (image.side, image.view, image.modality) == ("R", "MLO", "low-energy")


def test_the_cursor_is_per_watched_folder(settings: Settings, tmp_path: Path) -> None:
    """Two watch folders keep separate cursors; a missing folder is an error naming it."""
    _png(tmp_path / "one" / "x.png", 1)
    _png(tmp_path / "two" / "y.png", 2)
    scan_directory(settings, tmp_path / "one")
    scan_directory(settings, tmp_path / "two")
    with session_scope(settings.database_url) as session:
        assert session.scalar(select(func.count()).select_from(SourceCursor)) == 2
    with pytest.raises(NotADirectoryError, match="nowhere"):
        scan_directory(settings, tmp_path / "nowhere")


def test_a_cdd_cesm_folder_is_imported_whole_once(
    settings: Settings, inbox: Path, dev_data: Path
) -> None:
    """A folder holding the annotation sheet goes to the CDD-CESM importer, once."""
    dataset = inbox / "delivery-1"
    images = dataset / "Subtracted images"
    images.mkdir(parents=True)
    shutil.copy2(dev_data / "Radiology manual annotations.xlsx", dataset)
    for source in sorted((dev_data / "Subtracted images").rglob("*.jpg"))[:3]:
        shutil.copy2(source, images / source.name)
    first = scan_directory(settings, inbox)
    assert first.registered == 3 and list(first.datasets) == ["delivery-1"]
    assert scan_directory(settings, inbox).unchanged == 1
    assert {image.source for image in _images(settings)} == {"cdd-cesm"}


@pytest.mark.timeout(60)
def test_links_fifos_devices_and_oversized_files_are_named_and_the_rest_is_taken(
    settings: Settings, inbox: Path
) -> None:
    """A link loop, a FIFO, a link to /dev/zero and a too-large file neither hang nor stop it."""
    _png(inbox / "a-first.png", 10)
    (inbox / "b-loop.jpg").symlink_to(inbox / "b-loop.jpg")
    os.mkfifo(inbox / "c-pipe.jpg")
    (inbox / "d-zero.jpg").symlink_to("/dev/zero")
    (inbox / "e-link.png").symlink_to(_png(inbox / "outside" / ".real.png", 30))
    big = inbox / "f-big.png"
    big.write_bytes(b"\0" * 2048)
    _png(inbox / "g-last.png", 20)
    summary = scan_directory(settings.with_overrides(max_ingest_file_bytes=1024), inbox)
    assert summary.registered == 2
    assert sorted(summary.ignored) == [
        "b-loop.jpg: a symbolic link (not followed)",
        "c-pipe.jpg: a FIFO",
        "d-zero.jpg: a symbolic link (not followed)",
        "e-link.png: a symbolic link (not followed)",
    ]
    assert summary.rejected == [
        "f-big.png: file is 2048 bytes; the limit is 1024 (MAMMOSEARCH_MAX_INGEST_FILE_BYTES)"
    ]
    assert sorted(image.source_file_name for image in _images(settings)) == [
        "a-first.png",
        "g-last.png",
    ]


@pytest.mark.timeout(60)
def test_a_fifo_swapped_in_after_the_look_is_refused_without_blocking(inbox: Path) -> None:
    """The read itself refuses what is not a regular file (O_NONBLOCK, O_NOFOLLOW)."""
    from mammosearch.ingest.watch import read_regular_file

    os.mkfifo(inbox / "pipe.jpg")
    (inbox / "zero.jpg").symlink_to("/dev/zero")
    with pytest.raises(OSError, match="pipe.jpg: a FIFO"):
        read_regular_file(inbox / "pipe.jpg", "pipe.jpg", 1024)
    with pytest.raises(OSError):
        read_regular_file(inbox / "zero.jpg", "zero.jpg", 1024)


def test_one_file_that_fails_unexpectedly_costs_only_itself(
    settings: Settings, inbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error in one registration is reported by name; later files are still registered."""
    from mammosearch.ingest import watch

    real = watch.register_loose_image

    def fail_on_b(session, settings, content, relative_name):  # type: ignore[no-untyped-def]
        if relative_name == "b.png":
            raise RuntimeError("disk on fire")
        return real(session, settings, content, relative_name)

    monkeypatch.setattr(watch, "register_loose_image", fail_on_b)
    for shade, name in enumerate(["a.png", "b.png", "c.png"]):
        _png(inbox / name, 10 * shade + 5)
    summary = scan_directory(settings, inbox)
    assert summary.registered == 2
    assert summary.rejected == [
        "b.png: could not be registered (RuntimeError: disk on fire); tried again next scan"
    ]
    monkeypatch.setattr(watch, "register_loose_image", real)
    assert scan_directory(settings, inbox).registered == 1
