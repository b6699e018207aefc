"""One intensity rule for every bit depth, and EXIF orientation applied where files are
decoded: a 16-bit twin or a photo turned by its tag is the image it shows."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mammosearch.embed import preprocess
from mammosearch.embed.loader import load_embedder
from mammosearch.embed.preprocess import to_grayscale_8bit
from mammosearch.ingest.storage import check_image, open_upright
from mammosearch.search.query_image import read_query_image

MAX_PIXELS = 10_000_000


def _mammogram_like(width: int = 160, height: int = 224) -> np.ndarray:
    """8-bit pixels that use 30..200 only (as most images do), with an off-centre blob so
    that a turn shows."""
    yy, xx = np.mgrid[0:height, 0:width]
    blob = 170 * np.exp(-((xx - width * 0.3) ** 2 + (yy - height * 0.2) ** 2) / 400.0)
    ramp = 30 + 60 * xx / width
    return np.clip(ramp + blob, 30, 200).astype(np.uint8)


def _encoded(pixels: np.ndarray, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_a_16_bit_png_twin_embeds_as_its_8_bit_original() -> None:
    """value * 257 in a 16-bit PNG is value in 8 bits: same network input, same vector."""
    eight = _mammogram_like()
    sixteen = eight.astype(np.uint16) * 257
    original = read_query_image(_encoded(eight, "PNG"), "a.png", MAX_PIXELS)
    twin = read_query_image(_encoded(sixteen, "PNG"), "a16.png", MAX_PIXELS)
    assert twin.mode.startswith("I")  # really decoded as 16-bit
    assert torch.equal(preprocess(twin), preprocess(original))
    embedder = load_embedder("efficientnet-lite0", runtime="torch")
    vectors = embedder.embed_pil([original, twin])
    first, second = (vector / np.linalg.norm(vector) for vector in vectors)
    cosine = float(first @ second)
    assert cosine > 0.9999


def test_deep_images_scale_by_their_depth_never_by_their_own_range() -> None:
    """A dark 16-bit image stays dark (no min-max stretch); 12-bit data in a 16-bit file
    (never above 4095) spans 0..255; floats in 0..1 are that range."""
    dark = np.full((32, 32), 20000, dtype=np.uint16)
    dark[:16] = 10000
    gray = np.asarray(to_grayscale_8bit(Image.fromarray(dark)))
    assert set(np.unique(gray)) == {round(10000 / 65535 * 255), round(20000 / 65535 * 255)}
    twelve = np.tile(np.linspace(0, 4095, 32).astype(np.uint16), (32, 1))
    gray = np.asarray(to_grayscale_8bit(Image.fromarray(twelve)))
    assert gray.min() == 0 and gray.max() == 255
    unit = Image.fromarray(np.full((32, 32), 0.5, dtype=np.float32), mode="F")
    assert np.asarray(to_grayscale_8bit(unit)).max() == 128


def _turned_by_tag(pixels: np.ndarray) -> bytes:
    """JPEG whose stored pixels are `pixels` turned 90 degrees counter-clockwise, tagged
    Orientation 6 (turn 90 clockwise to show): a viewer shows `pixels`."""
    stored = Image.fromarray(pixels).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def test_exif_orientation_is_applied_to_uploads_and_stored_files(tmp_path: Path) -> None:
    """A JPEG turned by its tag reads upright (its size as shown, its pixels as the
    untagged original's), whether uploaded or read back from the image store."""
    pixels = _mammogram_like()
    height, width = pixels.shape
    tagged = _turned_by_tag(pixels)
    plain = read_query_image(_encoded(pixels, "JPEG", quality=95), "plain.jpg", MAX_PIXELS)
    checked = check_image(tagged, "tagged.jpg")
    assert (checked.width, checked.height) == (width, height)
    uploaded = read_query_image(tagged, "tagged.jpg", MAX_PIXELS)
    stored = tmp_path / "stored.jpg"
    stored.write_bytes(tagged)
    for upright in (uploaded, open_upright(stored)):
        assert upright.size == (width, height)
        difference = np.abs(preprocess(upright) - preprocess(plain)).mean()
        assert float(difference) < 0.05
