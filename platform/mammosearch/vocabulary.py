"""The words the archive, search and evaluation share, in one place: BI-RADS categories,
pathology classes, mammographic views, distance metrics and the orders of results."""

from __future__ import annotations

# ACR BI-RADS assessment categories 0..6 as stored; subcategories 4a/4b/4c count as 4.
ASSESSMENT_CATEGORIES = range(0, 7)

# The classes retrieval is scored on: 0 ("incomplete, needs more imaging") is not a finding.
RETRIEVAL_CLASSES = (1, 2, 3, 4, 5, 6)

# Coarse groups: negative / benign or probably benign / suspicious or malignant.
COARSE_GROUPS = {1: "1", 2: "2-3", 3: "2-3", 4: "4-6", 5: "4-6", 6: "4-6"}

PATHOLOGY_CLASSES = ("normal", "benign", "malignant")
"""Lower-case, as stored; the CDD-CESM sheet writes them capitalised."""

# ViewPosition values, plus the spellings some archives (CBIS-DDSM) put in PatientOrientation.
KNOWN_VIEWS = {"CC", "MLO", "ML", "LM", "LMO", "XCCL", "XCCM", "FB", "SIO", "AT", "RL", "RM"}

DISTANCE_METRICS: tuple[str, ...] = ("l2", "cosine")
"""The metrics the product indexes, searches and evaluates with; the first is the order
reports and settings list them in. l2: squared Euclidean distance of the raw embeddings;
cosine: inner product of the L2-normalised embeddings."""

RANKINGS = ("similarity", "consensus")
"""How a query's neighbours may be ordered (mammosearch.search.ranking): by similarity, or
those agreeing with their vote first."""
