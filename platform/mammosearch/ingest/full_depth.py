"""What a DICOM original holds beyond the stored 8-bit rendering: its pixel spacing, and
(when deeper than 8 bits) every grey level, kept as a 16-bit PNG for the viewer.

The 8-bit PNG stays the image of record (search, thumbnails, its sha256 is the identity);
the full-depth copy only lets the viewer move the window over all 12-16 bits, as a PACS
does, instead of stretching what one window already kept.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage
from pydicom.dataset import Dataset

from mammosearch.ingest.storage import CheckedImage, store_image

FULL_DEPTH_SUFFIX = ".png"
UINT16_TOP = 65535


def pixel_spacing_mm(ds: Dataset) -> float | None:
    """One pixel's side in mm: PixelSpacing (calibrated), else ImagerPixelSpacing (detector).

    Mammography detectors have square pixels; where row and column spacing differ the
    column (horizontal) spacing is kept, the one a side-by-side comparison lines up.
    """
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        try:
            spacing = float(value[1] if len(value) > 1 else value[0])
        except (TypeError, ValueError, IndexError):
            continue
        if 0.001 <= spacing <= 10:  # a plausible detector pitch; 0 or junk is "unknown"
            return spacing
    return None


@dataclass(frozen=True)
class FullDepth:
    """The modality values as uint16 (bright is high, offset to start at 0) and the window
    the modality chose for them, in the same units."""

    values: np.ndarray
    bits_stored: int
    window_center: float
    window_width: float

    def png_bytes(self) -> bytes:
        buffer = io.BytesIO()
        PILImage.fromarray(self.values).save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()

    def as_row(self, path: Path) -> dict[str, Any]:
        """The images.full_depth column's value."""
        return {
            "path": str(path),
            "bits_stored": self.bits_stored,
            "window": [round(self.window_center, 3), round(self.window_width, 3)],
        }


def _first(value: Any) -> float | None:
    """The first of a multi-valued window tag, as a float; None when absent or junk."""
    many = value is not None and not isinstance(value, str) and hasattr(value, "__getitem__")
    try:
        return float(value[0] if many else value)
    except (TypeError, ValueError, IndexError):
        return None


def full_depth(ds: Dataset, modality_values: np.ndarray) -> FullDepth | None:
    """The full-depth copy of a grey DICOM image deeper than 8 bits, else None.

    `modality_values`: the first frame after the modality LUT (rescale). MONOCHROME1 is
    turned so bright is high, like the 8-bit rendering. The default window is the file's
    own (WindowCenter/Width, first value), else the whole range, as the 8-bit rendering.
    """
    bits = int(ds.get("BitsStored") or 0)
    if bits <= 8 or int(ds.get("SamplesPerPixel") or 1) != 1:
        return None
    values = np.asarray(modality_values, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    monochrome1 = str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1"
    if monochrome1:
        values = (high + low) - values
    origin = np.floor(low)
    values = values - origin
    top = float(values.max())
    scale = UINT16_TOP / top if top > UINT16_TOP else 1.0
    stored = np.rint(values * scale).astype(np.uint16)
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is None or width is None or width < 1:
        center, width = top / 2.0, top + 1.0
    else:
        center = ((high + low) - center if monochrome1 else center) - origin
    return FullDepth(stored, bits, center * scale, width * scale)


def store_full_depth(images_dir: Path, depth: FullDepth) -> Path:
    """Store the 16-bit PNG content-addressed beside the 8-bit images; once per content."""
    content = depth.png_bytes()
    rows, columns = depth.values.shape
    checked = CheckedImage(
        content, hashlib.sha256(content).hexdigest(), "PNG", columns, rows, FULL_DEPTH_SUFFIX
    )
    return store_image(images_dir, checked)


def windowed(path: Path, center: float, width: float) -> PILImage.Image:
    """The full-depth image through a linear window: 8-bit grey, full resolution."""
    with PILImage.open(path) as opened:
        values = np.asarray(opened, dtype=np.float32)
    width = max(float(width), 1.0)
    low = float(center) - width / 2.0
    scaled = (values - np.float32(low)) * np.float32(255.0 / width)
    np.clip(scaled, 0, 255, out=scaled)
    return PILImage.fromarray(np.rint(scaled).astype(np.uint8))
