"""DICOM file -> 8-bit grayscale PIL image + the tags the archive needs."""

from __future__ import annotations

import io
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image as PILImage
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut
from pydicom.uid import UID

from mammosearch.ingest.full_depth import FullDepth, full_depth, pixel_spacing_mm
from mammosearch.ingest.storage import ImageRejected
from mammosearch.vocabulary import KNOWN_VIEWS

# Which pylibjpeg plugin decodes which compressed transfer syntax (gdcm decodes them all).
_PLUGIN_FOR_SYNTAX = {
    "1.2.840.10008.1.2.5": "pylibjpeg-rle",  # RLE Lossless
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg",  # JPEG Extended
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80": "pylibjpeg-libjpeg",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": "pylibjpeg-libjpeg",  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg-openjpeg",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202": "pylibjpeg-openjpeg",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203": "pylibjpeg-openjpeg",  # HTJ2K
}

DICOM_SUFFIXES = {".dcm", ".dicom", ".dic"}
"""File names that are DICOM by convention; others are DICOM if they carry the signature."""

_VIEW_CODE_MEANINGS = {
    "cranio-caudal": "CC",
    "medio-lateral oblique": "MLO",
    "medio-lateral": "ML",
    "latero-medial": "LM",
    "latero-medial oblique": "LMO",
    "exaggerated cranio-caudal": "XCCL",
}


@dataclass(frozen=True)
class DicomImage:
    """A rendered DICOM image: `image` is mode "L"; `metadata` holds the tags we keep;
    `full_depth` every grey level of an original deeper than 8 bits (else None)."""

    image: PILImage.Image
    metadata: dict[str, Any]
    full_depth: FullDepth | None = None


def looks_like_dicom(name: str, content: bytes) -> bool:
    """A DICOM suffix, or a Part 10 file: a 128-byte preamble, then 'DICM'."""
    return Path(name).suffix.lower() in DICOM_SUFFIXES or content[128:132] == b"DICM"


def is_dicom_file(path: Path) -> bool:
    """`looks_like_dicom` for a file on disk, reading only its first 132 bytes."""
    with path.open("rb") as handle:
        return looks_like_dicom(path.name, handle.read(132))


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _side(ds: Dataset) -> str | None:
    laterality = (_text(ds, "ImageLaterality") or _text(ds, "Laterality") or "").upper()
    return laterality if laterality in {"L", "R"} else None


def _view(ds: Dataset) -> str | None:
    position = (_text(ds, "ViewPosition") or "").upper()
    if position:
        return position[:16]
    for item in ds.get("ViewCodeSequence") or []:
        meaning = str(item.get("CodeMeaning", "")).strip().lower()
        if meaning in _VIEW_CODE_MEANINGS:
            return _VIEW_CODE_MEANINGS[meaning]
    orientation = (_text(ds, "PatientOrientation") or "").upper()
    return orientation if orientation in KNOWN_VIEWS else None


def _age_years(ds: Dataset) -> int | None:
    """PatientAge is 'nnnY' (or M/W/D for infants, which round down to 0 years)."""
    age = _text(ds, "PatientAge")
    if not age or not age[:-1].isdigit():
        return None
    return int(age[:-1]) if age[-1].upper() == "Y" else 0


def dicom_metadata(ds: Dataset) -> dict[str, Any]:
    """The tags we store, under our column names; missing tags are None."""
    transfer_syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return {
        "patient_id": _text(ds, "PatientID"),
        "side": _side(ds),
        "view": _view(ds),
        "study_date": _text(ds, "StudyDate"),
        "study_instance_uid": _text(ds, "StudyInstanceUID"),
        "series_instance_uid": _text(ds, "SeriesInstanceUID"),
        "sop_instance_uid": _text(ds, "SOPInstanceUID"),
        "sop_class_uid": _text(ds, "SOPClassUID"),
        "modality": _text(ds, "Modality"),
        "manufacturer": _text(ds, "Manufacturer"),
        "patient_age": _age_years(ds),
        "transfer_syntax": str(transfer_syntax) if transfer_syntax else None,
        "pixel_spacing_mm": pixel_spacing_mm(ds),
    }


def parse_dicom(content: bytes | Path, name: str) -> Dataset:
    """Parse a DICOM file (Part 10, or a bare dataset) or raise ImageRejected."""
    if isinstance(content, bytes) and not content:
        raise ImageRejected(f"{name}: empty file")
    try:
        return pydicom.dcmread(_source(content))
    except InvalidDicomError:
        pass  # no 128-byte preamble + 'DICM': still DICOM if the tags parse
    except Exception as exc:  # a damaged file: pydicom raises BytesLengthException, struct...
        raise ImageRejected(f"{name}: not a readable DICOM file ({exc})") from exc
    try:
        ds = pydicom.dcmread(_source(content), force=True)
    except Exception as exc:
        raise ImageRejected(f"{name}: not a DICOM file ({exc})") from exc
    if "PixelData" not in ds and "SOPClassUID" not in ds:
        head = content[:4] if isinstance(content, bytes) else _first_bytes(content)
        raise ImageRejected(f"{name}: not a DICOM file (no 'DICM' marker; starts with {head!r})")
    return ds


def stated_pixels(content: bytes) -> int:
    """Rows x Columns x frames from the header (every frame is decoded); 0 if unreadable."""
    try:
        ds = pydicom.dcmread(io.BytesIO(content), stop_before_pixels=True, force=True)
        frames = int(ds.get("NumberOfFrames") or 1)
        return int(ds.get("Rows") or 0) * int(ds.get("Columns") or 0) * max(frames, 1)
    except Exception:  # noqa: BLE001 - the full read names what is wrong
        return 0


def _first_bytes(path: Path) -> bytes:
    with Path(path).open("rb") as handle:
        return handle.read(4)


def _source(content: bytes | Path) -> io.BytesIO | Path:
    return io.BytesIO(content) if isinstance(content, bytes) else Path(content)


def _transfer_syntax(ds: Dataset) -> UID:
    file_meta = getattr(ds, "file_meta", None)
    syntax = getattr(file_meta, "TransferSyntaxUID", None)
    return UID(str(syntax)) if syntax else UID("1.2.840.10008.1.2.1")


def _decoder_available(syntax: UID) -> bool:
    try:
        return bool(get_decoder(syntax).is_available)
    except NotImplementedError:  # pydicom has no decoder at all for this syntax
        return False


def _is_decoder_failure(exc: BaseException) -> bool:
    """Python decoders raise RuntimeError, ValueError, ...; the Rust ones (pylibjpeg-rle)
    panic, and pyo3's PanicException derives from BaseException, not Exception."""
    return isinstance(exc, Exception) or type(exc).__name__ == "PanicException"


def _decode_pixels(ds: Dataset, name: str) -> np.ndarray:
    syntax = _transfer_syntax(ds)
    try:
        return ds.pixel_array
    except BaseException as exc:
        if not _is_decoder_failure(exc):
            raise
        if _decoder_available(syntax):
            raise ImageRejected(f"{name}: corrupt {syntax.name} pixel data ({exc})") from exc
        plugin = _PLUGIN_FOR_SYNTAX.get(str(syntax))
        install = f"install {plugin} or python-gdcm" if plugin else "no decoder exists for it"
        raise ImageRejected(
            f"{name}: cannot decode {syntax.name} ({syntax}) pixel data; {install}"
        ) from exc


def _to_8bit(values: np.ndarray) -> np.ndarray:
    """Stretch the value range onto 0..255 (after windowing, this is the window's range)."""
    values = values.astype(np.float32, copy=False)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values - low) * np.float32(255.0 / (high - low))
    return np.rint(scaled, out=scaled).astype(np.uint8)


def render_dataset(ds: Dataset, name: str, max_pixels: int = 100_000_000) -> PILImage.Image:
    """Decode the first frame and render it as an 8-bit grayscale image a reader would see.

    Modality LUT (rescale) then VOI LUT / window, then a stretch to 8 bits; MONOCHROME1
    stores bright as low values, so it is inverted to look like every other image.
    """
    return _render(ds, name, max_pixels)[0]


def _render(ds: Dataset, name: str, max_pixels: int) -> tuple[PILImage.Image, np.ndarray | None]:
    """render_dataset's image, and the grey modality values it came from (None for colour)."""
    if "PixelData" not in ds:
        raise ImageRejected(f"{name}: DICOM file has no pixel data")
    rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if rows * columns > max_pixels:  # checked before decoding: no decompression bombs
        raise ImageRejected(
            f"{name}: image too large ({columns}x{rows} px); limit is {max_pixels} pixels "
            "(MAMMOSEARCH_MAX_IMAGE_PIXELS)"
        )
    if rows < 16 or columns < 16:
        raise ImageRejected(f"{name}: image is only {columns}x{rows} px")
    pixels = _decode_pixels(ds, name)
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames > 1:
        pixels = pixels[0]
    if int(ds.get("SamplesPerPixel") or 1) > 1:  # colour secondary captures: already RGB
        return PILImage.fromarray(_to_8bit(pixels)).convert("L"), None
    try:
        modality_values = apply_modality_lut(pixels, ds)
        values = apply_voi_lut(modality_values, ds)
    except ValueError as exc:
        raise ImageRejected(f"{name}: invalid rescale/window tags ({exc})") from exc
    gray = _to_8bit(values)
    if int(gray.min()) == int(gray.max()):
        raise ImageRejected(f"{name}: renders blank (every pixel is one value){_blank_cause(ds)}")
    if _text(ds, "PhotometricInterpretation") == "MONOCHROME1":
        gray = np.subtract(255, gray, dtype=np.uint8)
    return PILImage.fromarray(gray), modality_values


def _blank_cause(ds: Dataset) -> str:
    """The likely reason a render is blank, for the message."""
    try:
        slope = float(ds.RescaleSlope) if ds.get("RescaleSlope") is not None else 1.0
    except (TypeError, ValueError):
        slope = 1.0
    if slope == 0:
        return "; RescaleSlope (0028,1053) is 0, which maps every stored value to one"
    return "; the stored pixels or the window (0028,1050/1051) leave nothing to see"


def check_modality(ds: Dataset, name: str, accepted: Collection[str]) -> None:
    """Refuse a DICOM image whose Modality (0008,0060) is not one the archive takes."""
    modality = (_text(ds, "Modality") or "").upper()
    if modality not in {value.upper() for value in accepted}:
        shown = modality or "missing"
        raise ImageRejected(
            f"{name}: Modality {shown} is not accepted; accepted: {', '.join(accepted)} "
            "(MAMMOSEARCH_ACCEPTED_MODALITIES)"
        )


def read_dicom(
    content: bytes | Path,
    name: str,
    max_pixels: int = 100_000_000,
    modalities: Collection[str] | None = None,
    keep_full_depth: bool = False,
) -> DicomImage:
    """Read a DICOM file into an 8-bit image + metadata; raise ImageRejected naming `name`.

    `modalities`: the Modality values taken (settings.accepted_modalities); None reads any,
    for files the archive already holds. `keep_full_depth`: also the grey levels beyond 8
    bits (for storing; a query only needs the 8-bit image).
    """
    ds = parse_dicom(content, name)
    if modalities is not None:
        check_modality(ds, name, modalities)
    image, modality_values = _render(ds, name, max_pixels)
    depth = None
    if keep_full_depth and modality_values is not None:
        depth = full_depth(ds, modality_values)
    return DicomImage(image=image, metadata=dicom_metadata(ds), full_depth=depth)
