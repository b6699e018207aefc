"""The real CDD-CESM dev folder imported twice into the real PostgreSQL: 503 images, once."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from mammosearch.config import Settings
from mammosearch.db.models import Image
from mammosearch.db.session import make_session_factory
from mammosearch.ingest.cdd_cesm import import_cdd_cesm
from mammosearch.jobs.status import collect_status

pytestmark = [pytest.mark.postgres, pytest.mark.dataset, pytest.mark.slow]

DEV_IMAGES = 503
# The dev README's BIRADS counts over the 503 images (the highest category of `$` cells).
DEV_BIRADS_COUNTS = {1: 188, 2: 106, 3: 31, 4: 62, 5: 114, 6: 2}


def test_importing_the_dev_folder_twice_registers_each_image_once(
    dev_data: Path, pg_settings: Settings
) -> None:
    factory = make_session_factory(pg_settings.database_url)
    with factory() as session:
        started = time.perf_counter()
        first = import_cdd_cesm(session, dev_data, pg_settings, progress=False)
        first_s = time.perf_counter() - started
    assert (first.new, first.updated, first.unchanged, first.rejected) == (DEV_IMAGES, 0, 0, [])
    assert first.missing_by_modality == {"low-energy": DEV_IMAGES}  # DM rows, no files here
    assert first.images_without_row == []

    with factory() as session:
        started = time.perf_counter()
        second = import_cdd_cesm(session, dev_data, pg_settings, progress=False)
        second_s = time.perf_counter() - started
        assert (second.new, second.updated, second.unchanged) == (0, 0, DEV_IMAGES)
        assert second.nothing_new
        assert collect_status(session)["images"]["total"] == DEV_IMAGES
        images = session.scalars(select(Image)).all()
        assert Counter(image.birads for image in images) == DEV_BIRADS_COUNTS
        assert {image.modality for image in images} == {"subtracted"}
        assert {image.pathology for image in images} == {"benign", "malignant", "normal"}
        assert all(Path(image.stored_path).is_file() for image in images)
    print(f"\ndev folder import on PostgreSQL: first {first_s:.1f} s, re-run {second_s:.1f} s")
