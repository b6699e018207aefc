"""The readers fuzzed (hypothesis, small fixed budgets): arbitrary and mutated JPEG, PNG and
DICOM bytes are read or refused with ImageRejected naming the input, never another
exception; a sheet of fuzzed cells is read with its problems reported, never a crash.
tests/fuzz_long.py runs the same with large budgets."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from mammosearch.ingest.dicom import read_dicom
from mammosearch.ingest.storage import ImageRejected
from tests.dicom_samples import dicom_bytes, make_dataset, ramp
from tests.fuzz_inputs import (
    BYTE_READERS,
    PYDICOM_DATA,
    parse_fuzz_sheet,
    read_or_reject,
    sheet_rows,
)

SMALL_BUDGET = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("reader", sorted(BYTE_READERS))
def test_fuzzed_bytes_are_read_or_refused_by_name(reader: str) -> None:
    """check_image, read_dicom and read_query_image: accepted, or ImageRejected('NAME: ...')."""

    @SMALL_BUDGET
    @given(content=BYTE_READERS[reader][2]())
    def read(content: bytes) -> None:
        read_or_reject(reader, content)

    read()


def test_a_sheet_of_fuzzed_cells_is_read_and_its_problems_reported() -> None:
    """Numbers, huge floats, NaN, text, dates, booleans and blanks in every column."""
    with tempfile.TemporaryDirectory() as folder:

        @settings(SMALL_BUDGET, max_examples=40)
        @given(rows=sheet_rows())
        def read(rows: list[list[object]]) -> None:
            parse_fuzz_sheet(Path(folder) / "fuzz.xlsx", rows)

        read()


def test_a_damaged_file_meta_length_is_a_rejection_not_a_crash() -> None:
    """Found by the fuzzer: pydicom's BytesLengthException (no ValueError) escaped."""
    content = bytearray(dicom_bytes(make_dataset(ramp())))
    assert content[132:140] == b"\x02\x00\x00\x00UL\x04\x00"  # (0002,0000) UL, 4 bytes
    content[138:140] = (3).to_bytes(2, "little")
    with pytest.raises(ImageRejected, match=r"^bad\.dcm: not a readable DICOM file"):
        read_dicom(bytes(content), "bad.dcm")


def test_a_corrupt_rle_frame_is_a_rejection_not_a_decoder_panic() -> None:
    """Found by the long fuzz run: pylibjpeg-rle panics on a run past the frame's end, and
    pyo3's PanicException is a BaseException (it went through `except Exception` to the
    server)."""
    content = bytearray((PYDICOM_DATA / "MR_small_RLE.dcm").read_bytes())
    frame = content.rindex(b"\xfe\xff\x00\xe0") + 8  # the last item: the one frame
    assert int.from_bytes(content[frame : frame + 4], "little") == 2  # an RLE header, 2 segments
    content[frame + 64] = 0x81  # the first run: "repeat the next byte 128 times"
    with pytest.raises(ImageRejected, match=r"^rle\.dcm: corrupt RLE Lossless pixel data"):
        read_dicom(bytes(content), "rle.dcm")
