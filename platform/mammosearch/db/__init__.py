"""Database layer: SQLAlchemy models and sessions, no business logic."""

from mammosearch.db.models import (
    ApiToken,
    AuditEvent,
    Base,
    EmbeddingSpace,
    EvaluationRun,
    Image,
    ImageEmbedding,
    ImageStatus,
    LabelEvent,
    Patient,
    Report,
    Segmentation,
    SourceCursor,
    User,
)
from mammosearch.db.session import get_engine, make_session_factory, session_scope

__all__ = [
    "ApiToken",
    "AuditEvent",
    "Base",
    "EmbeddingSpace",
    "EvaluationRun",
    "Image",
    "ImageEmbedding",
    "ImageStatus",
    "LabelEvent",
    "Patient",
    "Report",
    "Segmentation",
    "SourceCursor",
    "User",
    "get_engine",
    "make_session_factory",
    "session_scope",
]
