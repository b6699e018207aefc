"""The pathology classes, in one place: what the sheet may say, the archive stores, search
offers as a filter and evaluation scores."""

from __future__ import annotations

PATHOLOGY_CLASSES = ("normal", "benign", "malignant")
"""Lower-case, as stored; the CDD-CESM sheet writes them capitalised."""
