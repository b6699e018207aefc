"""The BI-RADS categories, in one place: what the archive stores and what retrieval scores."""

from __future__ import annotations

# ACR BI-RADS assessment categories 0..6 as stored; subcategories 4a/4b/4c count as 4.
ASSESSMENT_CATEGORIES = range(0, 7)

# The classes retrieval is scored on: 0 ("incomplete, needs more imaging") is not a finding.
RETRIEVAL_CLASSES = (1, 2, 3, 4, 5, 6)

# Coarse groups: negative / benign or probably benign / suspicious or malignant.
COARSE_GROUPS = {1: "1", 2: "2-3", 3: "2-3", 4: "4-6", 5: "4-6", 6: "4-6"}
