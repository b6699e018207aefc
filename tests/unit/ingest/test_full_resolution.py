"""Every pixel the archive has, for the viewer: a deep DICOM keeps its grey levels and its
pixel spacing at ingest, /cases/<id>/full windows it on all its bits, audited once."""

from __future__ import annotations

import io

import numpy as np
import pytest
from flask.testing import FlaskClient
from PIL import Image as PILImage
from sqlalchemy import select

from mammosearch.db.models import AuditEvent, Image
from mammosearch.ingest.dicom import read_dicom
from mammosearch.ingest.dicom_register import register_dicom
from tests.dicom_samples import dicom_bytes, make_dataset, ramp, real_mammograms
from tests.factories import make_image, make_patient


def _deep_dicom(top: int = 4000, **tags: object) -> bytes:
    """A 12-bit ramp (0..`top` down the rows) with a window over its middle third."""
    pixels = ramp(96, 64, top=top)
    return dicom_bytes(
        make_dataset(pixels, BitsStored=12, WindowCenter=2000, WindowWidth=1334, **tags)
    )


def test_pixel_spacing_is_read_calibrated_first_then_at_the_detector() -> None:
    both = _deep_dicom(PixelSpacing=[0.07, 0.07], ImagerPixelSpacing=[0.1, 0.1])
    detector = _deep_dicom(ImagerPixelSpacing=[0.1, 0.1])
    assert read_dicom(both, "a.dcm").metadata["pixel_spacing_mm"] == pytest.approx(0.07)
    assert read_dicom(detector, "b.dcm").metadata["pixel_spacing_mm"] == pytest.approx(0.1)
    assert read_dicom(_deep_dicom(), "c.dcm").metadata["pixel_spacing_mm"] is None


def test_a_monochrome1_original_keeps_bright_high_and_its_window_turned_with_it() -> None:
    content = dicom_bytes(
        make_dataset(ramp(), photometric="MONOCHROME1", WindowCenter=1000, WindowWidth=500)
    )
    depth = read_dicom(content, "m1.dcm", keep_full_depth=True).full_depth
    assert depth is not None and depth.values.dtype == np.uint16
    assert depth.values[0, 0] == 4000 and depth.values[-1, 0] == 0  # bright (low value) high
    assert (depth.window_center, depth.window_width) == (3000, 500)


@pytest.mark.slow
def test_a_real_16_bit_mammogram_keeps_every_grey_level_beside_its_8_bit_rendering(
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    """CBIS-DDSM (16-bit): the copy holds far more than 256 levels, and windowed at the
    file's own window it is the stored 8-bit rendering again (to one grey level)."""
    from mammosearch.ingest.full_depth import store_full_depth, windowed

    path = real_mammograms()[0]
    dicom = read_dicom(path.read_bytes(), path.name, keep_full_depth=True)
    depth = dicom.full_depth
    assert depth is not None and depth.bits_stored == 16
    assert len(np.unique(depth.values[::8, ::8])) > 1000
    stored = store_full_depth(tmp_path, depth)
    shown = windowed(stored, depth.window_center, depth.window_width)
    assert shown.size == dicom.image.size  # full resolution
    difference = np.abs(np.asarray(shown, dtype=int) - np.asarray(dicom.image, dtype=int))
    assert difference.max() <= 1


def test_full_resolution_windows_a_deep_original_on_all_its_bits_and_is_audited_once(
    radiologist_client: FlaskClient,
    db,
    web_settings,  # type: ignore[no-untyped-def]
) -> None:
    """The default window, then a wider one that shows what the first left black; the
    re-windowing is one viewing in the audit, not one event per drag step."""
    registered = register_dicom(db, _deep_dicom(PixelSpacing=[0.1, 0.1]), "deep.dcm", web_settings)
    db.commit()
    image = db.get(Image, registered.image_id)
    assert image.pixel_spacing_mm == pytest.approx(0.1)
    assert image.full_depth["bits_stored"] == 12 and image.full_depth["window"] == [2000, 1334]

    first = radiologist_client.get(f"/cases/{image.id}/full")
    assert first.status_code == 200 and first.mimetype == "image/png"
    default = np.asarray(PILImage.open(io.BytesIO(first.data)))
    assert default.shape == (96, 64) and default[0, 0] == 0  # below the window: black
    for width in (3000, 4001):
        wide = radiologist_client.get(f"/cases/{image.id}/full?center=2000&width={width}")
        assert wide.status_code == 200
    wide_pixels = np.asarray(PILImage.open(io.BytesIO(wide.data)))
    assert wide_pixels[10, 0] > 0, "the wider window shows grey levels the default clipped"
    assert radiologist_client.get(f"/cases/{image.id}/full?center=1&width=x").status_code == 400
    events = db.scalars(
        select(AuditEvent.detail).where(
            AuditEvent.action == "view_image_file", AuditEvent.image_id == image.id
        )
    ).all()
    assert len(events) == 1 and events[0]["full_resolution"] is True


def test_an_8_bit_original_is_sent_as_stored(
    radiologist_client: FlaskClient,
    db,
    web_settings,  # type: ignore[no-untyped-def]
) -> None:
    image = make_image(db, web_settings, make_patient(db, "P-8BIT"), seed=4)
    full = radiologist_client.get(f"/cases/{image.id}/full")
    stored = radiologist_client.get(f"/cases/{image.id}/image")
    assert full.status_code == 200 and full.data == stored.data


def test_the_case_page_hangs_the_study_and_carries_spacing_and_depth(
    radiologist_client: FlaskClient,
    db,
    web_settings,  # type: ignore[no-untyped-def]
) -> None:
    """R CC, L CC, R MLO, L MLO panes (absent views say so); a deep DICOM's pane carries
    its full-resolution address, spacing and depth; the case's labels beside it."""
    study = "1.2.826.0.1.3680043.99.1"
    views = {}
    for top, view in ((4000, "CC"), (3900, "MLO")):
        content = _deep_dicom(
            top,
            PixelSpacing=[0.1, 0.1],
            ViewPosition=view,
            PatientID="DEEP-1",
            StudyInstanceUID=study,
        )
        views[view] = register_dicom(db, content, f"{view}.dcm", web_settings).image_id
    db.commit()
    page = radiologist_client.get(f"/cases/{views['CC']}").get_data(as_text=True)
    for pane in ("case-viewer", "case-r-cc", "case-r-mlo", "case-l-mlo"):
        assert f'id="{pane}"' in page
    assert f'data-src="/cases/{views["CC"]}/full"' in page
    assert f'data-src="/cases/{views["MLO"]}/full"' in page
    assert 'data-spacing-mm="0.1"' in page and "data-depth=" in page
    assert "R CC: none in this study" in page
    assert views["CC"] != views["MLO"]
    assert 'id="case-birads"' in page and 'id="find-similar-case"' in page
