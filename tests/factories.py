"""Rows for tests, built over the real models: patients, images, spaces and their vectors.

One place per row kind, so a new required column is one change here, not ten. Every maker
adds its row and flushes it (so it has its id); it commits too unless `commit=False`, which
loops building many rows pass to commit once at the end.
"""

from __future__ import annotations

import io
import itertools
import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
from PIL import Image as PILImage
from sqlalchemy.orm import Session

from mammosearch.access.users import create_user
from mammosearch.config import Settings
from mammosearch.db.models import (
    EmbeddingSpace,
    Image,
    ImageEmbedding,
    Patient,
    Report,
    Segmentation,
    User,
)
from mammosearch.ingest.storage import check_image, store_image
from mammosearch.pipeline.embed_stage import vector_to_bytes

TEST_PASSWORD = "correct horse battery"

_image_numbers = itertools.count()
Row = TypeVar("Row")


def _saved(session: Session, row: Row, commit: bool) -> Row:
    session.add(row)
    session.flush()
    if commit:
        session.commit()
    return row


def synthetic_image_bytes(seed: int, size: tuple[int, int] = (96, 128), fmt: str = "PNG") -> bytes:
    """A grey image with a few bright blobs: distinct per seed, stable across runs."""
    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    pixels = rng.normal(40, 10, (height, width))
    for _ in range(3):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(6, 24)
        pixels += 180 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
    buffer = io.BytesIO()
    PILImage.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def make_user(
    session: Session, username: str = "rad", role: str = "radiologist",
    password: str = TEST_PASSWORD,
) -> User:  # fmt: skip
    user = create_user(session, username, password, role)
    session.commit()
    return user


def make_patient(
    session: Session, source_patient_id: str = "P1", age: int | None = 50, *,
    source: str = "test", commit: bool = True,
) -> Patient:  # fmt: skip
    return _saved(
        session, Patient(source=source, source_patient_id=source_patient_id, age=age), commit
    )


def make_bare_image(
    session: Session, patient: Patient, *, commit: bool = True, **columns: Any
) -> Image:
    """An image row with no stored file, for work that never opens it (claims, queues,
    evaluation over stored vectors). `columns` override the defaults; the digest is unique."""
    number = next(_image_numbers)
    file_name = columns.pop("source_file_name", f"{patient.source_patient_id}-{number}.png")
    values: dict[str, Any] = {
        "source": "test", "sha256": uuid.uuid4().hex + uuid.uuid4().hex,
        "stored_path": f"/nowhere/{file_name}", "modality": "subtracted", "width": 8, "height": 8,
        **columns,
    }  # fmt: skip
    return _saved(
        session, Image(patient_id=patient.id, source_file_name=file_name, **values), commit
    )


def make_bare_images(
    session: Session, patient: Patient, count: int, *, commit: bool = True, **columns: Any
) -> list[int]:
    """`count` bare image rows of one patient (see make_bare_image); returns their ids."""
    ids = [make_bare_image(session, patient, commit=False, **columns).id for _ in range(count)]
    if commit:
        session.commit()
    return ids


def make_image(
    session: Session, settings: Settings, patient: Patient, seed: int = 0, *,
    content: bytes | None = None, file_name: str | None = None, commit: bool = True,
    **labels: Any,
) -> Image:  # fmt: skip
    """A stored image file and its row, as ingestion leaves it (status pending unless `labels`
    says otherwise). The file is `content`, or the synthetic image of `seed`."""
    name = file_name or f"{patient.source_patient_id}_{seed}.png"
    checked = check_image(content if content is not None else synthetic_image_bytes(seed), name)
    path = store_image(settings.images_dir, checked)
    values: dict[str, Any] = {
        "side": "L", "view": "CC", "modality": "subtracted", "birads": 2,
        "pathology": "Benign", "findings": f"finding {seed}", **labels,
    }  # fmt: skip
    image = Image(
        patient_id=patient.id, source="test", source_file_name=name, sha256=checked.sha256,
        stored_path=str(path), width=checked.width, height=checked.height, **values,
    )  # fmt: skip
    return _saved(session, image, commit)


def make_space(
    session: Session, backbone: str = "densenet121", dim: int = 8, *, commit: bool = True,
    **columns: Any,
) -> EmbeddingSpace:  # fmt: skip
    """An embedding space of made-up weights (not pretrained unless `columns` say so)."""
    values: dict[str, Any] = {
        "weights_sha256": f"{backbone}-{dim}".ljust(64, "0"), "weights_source": "random (test)",
        "pretrained": False, "preprocessing_version": 1, **columns,
    }  # fmt: skip
    return _saved(session, EmbeddingSpace(backbone=backbone, dim=dim, **values), commit)


def make_vector(
    session: Session, image: Image, space: EmbeddingSpace, vector: np.ndarray, *,
    commit: bool = True, **columns: Any,
) -> ImageEmbedding:  # fmt: skip
    """The image's stored vector in the space (float32, little-endian, as the pipeline writes)."""
    embedding = ImageEmbedding(
        image_id=image.id, space_id=space.id, vector=vector_to_bytes(vector),
        **columns,
    )  # fmt: skip
    return _saved(session, embedding, commit)


def make_class_archive(
    session: Session, space: EmbeddingSpace, classes: Sequence[int], patients: int,
    rng: np.random.Generator, prefix: str = "P",
) -> None:  # fmt: skip
    """`patients` patients of two indexed images each, BIRADS taking `classes` in turn; each
    vector points along its class' axis, plus small noise. Committed."""
    for number in range(patients):
        birads = classes[number % len(classes)]
        patient = make_patient(session, f"{prefix}{number}", None, commit=False)
        for view in range(2):
            image = make_bare_image(
                session, patient, commit=False, source_file_name=f"P{number}_{view}.png",
                stored_path="/nowhere.png", birads=birads, status="indexed",
            )  # fmt: skip
            vector = rng.normal(scale=0.05, size=space.dim).astype(np.float32)
            vector[list(classes).index(birads)] += 1.0
            make_vector(session, image, space, vector, commit=False)
    session.commit()


def add_report(session: Session, patient: Patient, text: str) -> Report:
    return _saved(
        session,
        Report(patient_id=patient.id, source_file="report.docx", sha256="ab" * 32, text=text),
        commit=True,
    )


def add_polygon(session: Session, image: Image, xs: list[int], ys: list[int]) -> Segmentation:
    region = Segmentation(
        image_id=image.id, region_index=0,
        shape={"name": "polygon", "all_points_x": xs, "all_points_y": ys},
    )  # fmt: skip
    return _saved(session, region, commit=True)
