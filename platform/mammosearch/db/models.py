"""SQLAlchemy 2 models: the metadata of record. FAISS holds vectors; this holds the truth."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class ImageStatus(enum.StrEnum):
    """Where an image is in the pipeline: pending -> claimed -> embedded -> indexed; failed;
    removed. `claimed`: a worker holds it under a lease (mammosearch.pipeline.claims)."""

    PENDING = "pending"
    CLAIMED = "claimed"
    EMBEDDED = "embedded"
    INDEXED = "indexed"
    FAILED = "failed"
    REMOVED = "removed"  # taken out of search on request; kept as a record


class Patient(Base):
    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("source", "source_patient_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(64))  # "cdd-cesm", "dicom", ...
    source_patient_id: Mapped[str] = mapped_column(String(128))
    age: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    images: Mapped[list[Image]] = relationship(back_populates="patient")
    reports: Mapped[list[Report]] = relationship(back_populates="patient")


class Image(Base):
    __tablename__ = "images"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    source: Mapped[str] = mapped_column(String(64))
    source_file_name: Mapped[str] = mapped_column(String(512))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    stored_path: Mapped[str] = mapped_column(String(1024))
    side: Mapped[str | None] = mapped_column(String(1))  # "L" / "R"
    view: Mapped[str | None] = mapped_column(String(16))  # "CC" / "MLO" / ...
    modality: Mapped[str] = mapped_column(String(32))  # "subtracted", "low-energy", "dicom"
    width: Mapped[int]
    height: Mapped[int]
    # One pixel's side in mm (DICOM PixelSpacing, else ImagerPixelSpacing); None: unknown,
    # and the viewer compares such images at the same pixel scale instead.
    pixel_spacing_mm: Mapped[float | None] = mapped_column(Float)
    # A DICOM original deeper than 8 bits, kept for the viewer's window/level
    # (mammosearch.ingest.full_depth.FullDepth.as_row): path, bits_stored, window.
    full_depth: Mapped[dict[str, Any] | None]
    breast_density: Mapped[str | None] = mapped_column(String(16))
    birads: Mapped[int | None] = mapped_column(Integer, index=True)
    birads_raw: Mapped[str | None] = mapped_column(String(64))
    findings: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[str | None] = mapped_column(Text)
    pathology: Mapped[str | None] = mapped_column(String(64), index=True)
    machine: Mapped[str | None] = mapped_column(String(128))
    study_instance_uid: Mapped[str | None] = mapped_column(String(128), index=True)
    sop_instance_uid: Mapped[str | None] = mapped_column(String(128), unique=True)
    study_date: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=ImageStatus.PENDING, index=True)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    indexed_at: Mapped[datetime | None]

    patient: Mapped[Patient] = relationship(back_populates="images")
    segmentations: Mapped[list[Segmentation]] = relationship(back_populates="image")
    embeddings: Mapped[list[ImageEmbedding]] = relationship(back_populates="image")


class Report(Base):
    """A patient's free-text report (CDD-CESM ships one .docx per patient)."""

    __tablename__ = "reports"
    __table_args__ = (UniqueConstraint("patient_id", "sha256"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    source_file: Mapped[str] = mapped_column(String(512))
    sha256: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    patient: Mapped[Patient] = relationship(back_populates="reports")


class Segmentation(Base):
    """One hand-drawn region from the dataset's segmentation CSV."""

    __tablename__ = "segmentations"
    __table_args__ = (UniqueConstraint("image_id", "region_index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), index=True)
    region_index: Mapped[int] = mapped_column(default=0)
    shape: Mapped[dict[str, Any]]  # e.g. {"name": "polygon", "all_points_x": [...], ...}
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    image: Mapped[Image] = relationship(back_populates="segmentations")


class EmbeddingSpace(Base):
    """A backbone + weights + preprocessing: vectors are comparable only within one space."""

    __tablename__ = "embedding_spaces"
    __table_args__ = (
        UniqueConstraint("backbone", "weights_sha256", "preprocessing_version", "dim"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    backbone: Mapped[str] = mapped_column(String(64))
    weights_sha256: Mapped[str] = mapped_column(String(64))
    weights_source: Mapped[str] = mapped_column(String(512))
    pretrained: Mapped[bool] = mapped_column(Boolean)
    preprocessing_version: Mapped[int]
    dim: Mapped[int]
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def describe(self) -> dict[str, Any]:
        """The identity printed in every index manifest, search result and report."""
        return {
            "id": self.id,
            "backbone": self.backbone,
            "weights_sha256": self.weights_sha256,
            "weights_source": self.weights_source,
            "pretrained": self.pretrained,
            "untrained": not self.pretrained,
            "preprocessing_version": self.preprocessing_version,
            "dim": self.dim,
        }


class ImageEmbedding(Base):
    """An image's vector in one space; the index is rebuilt from these rows."""

    __tablename__ = "image_embeddings"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), primary_key=True)
    space_id: Mapped[int] = mapped_column(ForeignKey("embedding_spaces.id"), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, little-endian, dim values
    indexed: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    image: Mapped[Image] = relationship(back_populates="embeddings")
    space: Mapped[EmbeddingSpace] = relationship()


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(128), unique=True)
    # The name as sign-in compares it (mammosearch.access.users.username_key): `ADMIN1` and a
    # full-width `ａｄｍｉｎ１` are `admin1`, so two users cannot differ only in case or form.
    username_key: Mapped[str] = mapped_column(String(512), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(512))
    role: Mapped[str] = mapped_column(String(32))  # "admin" / "radiologist"
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]
    # Stored in each browser session; bumping it ends every session of the user at once.
    session_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Set by the bootstrap and by an admin's reset: pages wait until the password is changed.
    must_change_password: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    # Per-account backoff: consecutive wrong passwords, and when sign-in opens again.
    failed_sign_ins: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    sign_in_blocked_until: Mapped[datetime | None]


class ApiToken(Base):
    """Bearer tokens for API clients; only the token's hash is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str | None] = mapped_column(String(128))  # what it is for: "PACS bridge"
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]  # None: until revoked
    last_used_at: Mapped[datetime | None]
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship()


class AuditEvent(Base):
    """Who searched, and who viewed which patient's images and reports, when."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_created_at", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    username: Mapped[str | None] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))  # "search", "view_image", "view_report", ...
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"))
    image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id"))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EvaluationRun(Base):
    __tablename__ = "evaluation_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    space_id: Mapped[int | None] = mapped_column(ForeignKey("embedding_spaces.id"), index=True)
    trigger: Mapped[str] = mapped_column(String(32), default="cli")  # cli / schedule / web
    status: Mapped[str] = mapped_column(String(16), default="running")  # running/done/failed
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    protocol: Mapped[str] = mapped_column(String(32))
    label: Mapped[str] = mapped_column(String(32))
    metric: Mapped[str] = mapped_column(String(16))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    per_class: Mapped[dict[str, Any]] = mapped_column(default=dict)
    queries: Mapped[int | None]
    archive_size: Mapped[int | None]
    duration_s: Mapped[float | None] = mapped_column(Float)
    progress: Mapped[float | None] = mapped_column(Float)
    task_id: Mapped[str | None] = mapped_column(String(64))
    report_path: Mapped[str | None] = mapped_column(String(1024))
    error: Mapped[str | None] = mapped_column(Text)
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    flag_reason: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]

    space: Mapped[EmbeddingSpace | None] = relationship()


class SourceCursor(Base):
    """Where a continuous source (watch folder, Orthanc /changes) has read up to."""

    __tablename__ = "source_cursors"

    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class LabelEvent(Base):
    """A label attached or corrected after ingestion, with who and when."""

    __tablename__ = "label_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), index=True)
    field: Mapped[str] = mapped_column(String(32))  # "birads" / "pathology"
    old_value: Mapped[str | None] = mapped_column(String(128))
    new_value: Mapped[str | None] = mapped_column(String(128))
    source_file: Mapped[str | None] = mapped_column(String(512))
    changed_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
