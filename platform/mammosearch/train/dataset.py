"""The archive's labelled images, as training examples: ids, patients, labels, pixels."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.orm import Session

from mammosearch.db.models import Image
from mammosearch.embed.preprocess import to_grayscale_8bit
from mammosearch.evaluate.labels import get_label
from mammosearch.ingest.storage import open_upright

IGNORE_INDEX = -100
"""Class index of an image that lacks a secondary label: the loss skips it."""


class TrainingDataError(ValueError):
    """The archive cannot be trained on as asked; the message says what is missing."""


@dataclass(frozen=True)
class LabelledImages:
    """Parallel arrays over the training images; `targets[name][i]` indexes `classes[name]`."""

    image_ids: np.ndarray
    patient_ids: np.ndarray
    paths: tuple[Path, ...]
    names: tuple[str, ...]
    sha256s: tuple[str, ...]
    classes: dict[str, tuple[Any, ...]]
    targets: dict[str, np.ndarray]
    case_rows: tuple[dict[str, Any], ...] = ()
    """Per image what a case-level figure needs (evaluate/case_units.py): patient_id,
    study_instance_uid, side, view, modality, birads, pathology, findings."""

    def __len__(self) -> int:
        return int(self.image_ids.size)

    @property
    def primary(self) -> str:
        return next(iter(self.classes))

    def label_values(self, name: str) -> list[Any]:
        """The label of every image in its own terms (None where missing)."""
        classes = self.classes[name]
        return [classes[code] if code >= 0 else None for code in self.targets[name]]

    def fingerprint(self) -> dict[str, object]:
        """Count and sha256 of the sorted content hashes: which images trained a model."""
        return images_fingerprint(self.sha256s)


def images_fingerprint(sha256s: Sequence[str]) -> dict[str, object]:
    digest = hashlib.sha256("\n".join(sorted(sha256s)).encode()).hexdigest()
    return {"count": len(sha256s), "sha256": digest}


def load_labelled_images(session: Session, label_names: Sequence[str]) -> LabelledImages:
    """Every image that has the first label; later labels are optional (IGNORE_INDEX)."""
    if not label_names:
        raise TrainingDataError("no label given: pass --label birads (and optionally more)")
    specs = [get_label(name) for name in label_names]
    rows = session.scalars(select(Image).order_by(Image.id)).all()
    keep = [row for row in rows if specs[0].of_image(row) is not None]
    if not keep:
        raise TrainingDataError(
            f"no image in the archive has a {specs[0].name!r} label ({len(rows)} images)"
        )
    classes: dict[str, tuple[Any, ...]] = {}
    targets: dict[str, np.ndarray] = {}
    for spec in specs:
        values = [spec.of_image(row) for row in keep]
        present = [c for c in spec.classes if c in set(values)]
        code = {c: i for i, c in enumerate(present)}
        classes[spec.name] = tuple(present)
        targets[spec.name] = np.array(
            [code.get(v, IGNORE_INDEX) if v is not None else IGNORE_INDEX for v in values],
            dtype=np.int64,
        )
    if len(classes[specs[0].name]) < 2:
        raise TrainingDataError(
            f"{specs[0].name}: every labelled image has the same class; nothing to learn"
        )
    return LabelledImages(
        image_ids=np.array([row.id for row in keep], dtype=np.int64),
        patient_ids=np.array([row.patient_id for row in keep], dtype=np.int64),
        paths=tuple(Path(row.stored_path) for row in keep),
        names=tuple(row.source_file_name for row in keep),
        sha256s=tuple(row.sha256 for row in keep),
        classes=classes,
        targets=targets,
        case_rows=tuple(
            {
                name: getattr(row, name)
                for name in (
                    "patient_id",
                    "study_instance_uid",
                    "side",
                    "view",
                    "modality",
                    "birads",
                    "pathology",
                    "findings",
                )
            }
            for row in keep
        ),
    )


def load_pixels(paths: Sequence[Path], names: Sequence[str], size_px: int) -> np.ndarray:
    """Stored files -> uint8 array (n, size_px, size_px), grayscale, resized as served."""
    pixels = np.empty((len(paths), size_px, size_px), dtype=np.uint8)
    for position, (path, name) in enumerate(zip(paths, names, strict=True)):
        try:
            gray = to_grayscale_8bit(open_upright(path))
            resized = gray.resize((size_px, size_px), PILImage.Resampling.BILINEAR)
        except OSError as error:
            raise TrainingDataError(
                f"{name}: stored file {path.name} unreadable ({error})"
            ) from error
        pixels[position] = np.asarray(resized, dtype=np.uint8)
    return pixels
