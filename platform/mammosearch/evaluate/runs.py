"""Evaluate an embedding space from the database and record the run (evaluation_runs)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from mammosearch.config import Settings
from mammosearch.db.models import EmbeddingSpace, EvaluationRun, Image, ImageEmbedding, utcnow
from mammosearch.embed.trained import TRAINED_PREFIX
from mammosearch.evaluate.case_units import evaluate_cases, measure_case_votes
from mammosearch.evaluate.evaluator import DEFAULT_KS, Progress, evaluate_vectors
from mammosearch.evaluate.labels import get_label
from mammosearch.evaluate.leakage import model_of_space, training_overlap
from mammosearch.evaluate.neighbour_vote import measure_space_votes
from mammosearch.evaluate.protocols import DEFAULT_PROTOCOL, get_protocol
from mammosearch.evaluate.result import EvaluationError, EvaluationResult
from mammosearch.evaluate.served_search import served_search, through_index_depth
from mammosearch.search.cases import CASE_FUSIONS, DEFAULT_FUSION, SEARCH_UNITS

VOTE_KEYS = {"image": "vote", "case": "case_vote"}
"""Where a run's config keeps the vote measured in each search unit (a model's
cross-validation keeps the case tables in `<column>_case`): an image table never answers for
a case search, nor the reverse."""


@dataclass(frozen=True)
class SpaceVectors:
    """Every vector of one space with what leave-one-out needs of its image."""

    vectors: np.ndarray  # float32, (n, dim)
    image_ids: list[int]
    image_names: list[str]
    patient_ids: list[int]
    image_rows: list[dict[str, Any]]  # labels' input (birads, pathology, findings) and the
    # case's (patient_id, study_instance_uid, side, view, modality: evaluate/case_units.py)
    image_sha256s: list[str]  # content hashes: which images trained a trained space


def load_space_vectors(session: Session, space: EmbeddingSpace) -> SpaceVectors:
    """Read image_embeddings joined to images, ordered by image id."""
    rows = session.execute(
        select(
            ImageEmbedding.image_id,
            ImageEmbedding.vector,
            Image.source_file_name,
            Image.patient_id,
            Image.birads,
            Image.pathology,
            Image.findings,
            Image.sha256,
            Image.study_instance_uid,
            Image.side,
            Image.view,
            Image.modality,
        )
        .join(Image, Image.id == ImageEmbedding.image_id)
        .where(ImageEmbedding.space_id == space.id)
        .order_by(ImageEmbedding.image_id)
    ).all()
    vectors = np.empty((len(rows), space.dim), dtype=np.float32)
    for position, row in enumerate(rows):
        vector = np.frombuffer(row.vector, dtype="<f4")
        if vector.size != space.dim:
            raise EvaluationError(
                f"image {row.image_id}: vector has {vector.size} values, space {space.id} "
                f"({space.backbone}) has dim {space.dim}; re-embed it"
            )
        vectors[position] = vector
    return SpaceVectors(
        vectors=vectors,
        image_ids=[row.image_id for row in rows],
        image_names=[row.source_file_name for row in rows],
        patient_ids=[row.patient_id for row in rows],
        image_rows=[
            {
                "birads": row.birads,
                "pathology": row.pathology,
                "findings": row.findings,
                "patient_id": row.patient_id,
                "study_instance_uid": row.study_instance_uid,
                "side": row.side,
                "view": row.view,
                "modality": row.modality,
            }
            for row in rows
        ],
        image_sha256s=[row.sha256 for row in rows],
    )


def resolve_space(
    session: Session,
    settings: Settings,
    backbone: str | None = None,
    space_id: int | None = None,
) -> EmbeddingSpace:
    """The space to evaluate: --space-id, else the newest space of --backbone with vectors,
    else the active space of the configured backbone, else the newest space with vectors."""
    if space_id is not None:
        space = session.get(EmbeddingSpace, space_id)
        if space is None:
            raise EvaluationError(f"space id {space_id}: no such embedding space")
        return space
    has_vectors = select(ImageEmbedding.image_id).where(
        ImageEmbedding.space_id == EmbeddingSpace.id
    )
    with_vectors = (
        select(EmbeddingSpace)
        .where(has_vectors.exists())
        .order_by(EmbeddingSpace.created_at.desc(), EmbeddingSpace.id.desc())
    )
    if backbone is not None:
        from mammosearch.embed.loader import registry_dir, trained_model_for
        from mammosearch.embed.spaces import find_space

        trained = trained_model_for(backbone, registry_dir(settings))
        if trained is not None:  # a model directory or a registered model's name
            space = find_space(session, trained.identity())
            if space is None:
                raise EvaluationError(
                    f"model {trained.name}: no embedding space yet; embed the archive with it "
                    f"(mammosearch spaces reembed {backbone})"
                )
            return space
        space = session.scalars(with_vectors.where(EmbeddingSpace.backbone == backbone)).first()
        if space is None:
            raise EvaluationError(f"backbone {backbone!r}: no embedding space with vectors")
        return space
    try:
        from mammosearch.embed.serving import open_serving_space as active_space
    except ImportError:  # no pipeline (a trimmed install): the newest space with vectors
        space = session.scalars(with_vectors).first()
        if space is None:
            raise EvaluationError(
                "no embedding space with vectors: run the embedding pipeline first"
            ) from None
        return space
    try:
        return active_space(session, settings)
    except Exception as exc:  # weights missing, unknown backbone, ...: say how to go around it
        raise EvaluationError(
            f"cannot load the configured backbone {settings.backbone!r} to find its space "
            f"({exc}); choose a space with --space-id or --backbone"
        ) from exc


def evaluate_space(
    session: Session,
    settings: Settings,
    space: EmbeddingSpace,
    label: str = "birads",
    protocol: str = DEFAULT_PROTOCOL,
    metric: str = "cosine",
    ks: Sequence[int] = DEFAULT_KS,
    *,
    map_cutoff: int | None = None,
    per_query_limit: int | None = None,
    per_query_k: int = 5,
    trigger: str = "cli",
    progress: Progress = False,
    through_index: bool = False,
    ranking: str = "similarity",
    unit: str = "image",
    fusion: str | None = None,
) -> EvaluationResult:
    """Leave-one-out over the space's vectors; records an EvaluationRun ("done" or "failed").

    `unit` "case": the images grouped into cases (one breast of one study), each case a
    query against the other cases, ranked by `fusion` (evaluate/case_units.py).

    `ranking` "consensus" scores the order search serves by default (mammosearch.search.ranking).

    `through_index`: candidates come from the served index (evaluate/served_search.py), to
    the depth max(ks) + a margin; mAP is then AP@max(ks) unless `map_cutoff` says otherwise.

    The run row is committed when it starts and when it ends, so that a failed run stays
    recorded even when the caller rolls its own work back. `settings` is kept for the
    scheduled runs and reports that reuse this function (nothing here reads it yet).
    """
    label_spec = get_label(label)
    get_protocol(protocol)
    if ranking == "consensus" and label != "birads":
        raise EvaluationError(
            f"--ranking consensus orders by the neighbours' BIRADS vote, as search does; "
            f"score it with --label birads (not {label!r})"
        )
    if unit not in SEARCH_UNITS:
        raise EvaluationError(f"unit {unit!r}: unknown; choose one of {', '.join(SEARCH_UNITS)}")
    if unit == "case":
        fusion = fusion or DEFAULT_FUSION
        if fusion not in CASE_FUSIONS:
            raise EvaluationError(
                f"fusion {fusion!r}: unknown; choose one of {', '.join(CASE_FUSIONS)}"
            )
        if through_index:
            raise EvaluationError(
                "--through-index scores image hits of the served index; with --unit case the "
                "fused scores are exact (leave --through-index out)"
            )
    if through_index and map_cutoff is None:
        map_cutoff = max(ks)  # the served ranking stops at its depth
    config = {
        "label": label,
        "protocol": protocol,
        "metric": metric,
        "ks": list(ks),
        "map_cutoff": map_cutoff,
        "embedding_space": space.describe(),
        "through_index": through_index,
        "order": ranking,  # the evaluator's config keeps "ranking" for how it searched
        "unit": unit,
        **({"fusion": fusion} if unit == "case" else {}),
    }
    run = EvaluationRun(
        space_id=space.id,
        trigger=trigger,
        status="running",
        config=config,
        protocol=protocol,
        label=label,
        metric=metric,
        started_at=utcnow(),
    )
    session.add(run)
    session.commit()
    started = time.perf_counter()
    try:
        loaded = load_space_vectors(session, space)
        if not loaded.image_ids:
            raise EvaluationError(
                f"space {space.id} ({space.backbone}): no vectors in image_embeddings; run "
                "the embedding pipeline, or choose another space with --space-id"
            )
        searcher, depth = None, None
        if through_index:
            searcher, config["served_index"] = served_search(
                settings, space, metric, loaded.image_ids
            )
            depth = through_index_depth(ks)
        # what the run asks of either unit's evaluator
        options: dict[str, Any] = {
            "metric": metric,
            "protocol": protocol,
            "ks": ks,
            "map_cutoff": map_cutoff,
            "per_query_limit": per_query_limit,
            "per_query_k": per_query_k,
            "embedding_space": space.describe(),
            "progress": progress,
            "ranking": ranking,
        }
        if unit == "case":
            result = evaluate_cases(
                loaded.vectors,
                loaded.image_ids,
                loaded.image_rows,
                label=label,
                fusion=fusion or DEFAULT_FUSION,
                **options,
            )
        else:
            result = evaluate_vectors(
                loaded.vectors,
                loaded.image_ids,
                [label_spec.of_image(row) for row in loaded.image_rows],
                loaded.patient_ids,
                label_name=label,
                image_names=loaded.image_names,
                searcher=searcher,
                search_depth=depth,
                **options,
            )
        base_space = not space.backbone.startswith(TRAINED_PREFIX)
        if protocol == "patient-excluded" and base_space:
            # The vote is measured in the run's unit: images (search's unit=image
            # suggestion) or cases by the run's fusion (unit=case), each under its own key
            # (VOTE_KEYS) so the two never mix. A base space's suggestion is as sure as this
            # run measured (SearchService reads it); a trained space's comes from its
            # out-of-fold figures, never from an archive whose images may have trained it.
            source = (
                f"patient-excluded evaluation of space {space.id} ({space.backbone}), "
                f"{len(loaded.image_ids)} images, {metric}"
            )
            if unit == "case":
                config[VOTE_KEYS[unit]] = measure_case_votes(
                    loaded.vectors, loaded.image_rows, fusion or DEFAULT_FUSION, metric,
                    source=f"{source}, {result.queries} cases by {fusion}",
                )  # fmt: skip
            else:
                config[VOTE_KEYS[unit]] = measure_space_votes(
                    loaded.vectors, loaded.image_rows, loaded.patient_ids, metric, source=source
                )
    except Exception as exc:
        session.rollback()
        run.status = "failed"
        run.error = str(exc)
        run.duration_s = time.perf_counter() - started
        run.finished_at = utcnow()
        session.commit()
        raise
    result.training_overlap = training_overlap(
        model_of_space(settings, space), space, loaded.image_sha256s, label
    )
    if through_index:
        result.config.update(through_index=True, served_index=config["served_index"])
    if config.get(VOTE_KEYS[unit]):
        result.config[VOTE_KEYS[unit]] = config[VOTE_KEYS[unit]]
    result.duration_s = time.perf_counter() - started
    result.run_id = run.id
    run.status = "done"
    run.metrics = result.metrics
    run.per_class = result.per_class
    run.queries = result.queries
    run.archive_size = result.archive_size
    run.config = {
        **config,
        **result.config,
        "excluded": result.excluded,
        "chance": result.chance,
        "training_overlap": result.training_overlap,
    }
    run.duration_s = result.duration_s
    run.progress = 1.0
    run.finished_at = utcnow()
    session.commit()
    return result


def measured_vote(
    session: Session,
    settings: Settings,
    space: EmbeddingSpace,
    metric: str = "cosine",
    unit: str = "image",
    fusion: str | None = None,
) -> dict[str, Any]:
    """How sure the neighbour vote is in `space` for a search of `unit` (cases: by
    `fusion`, default the served one): {"birads": reliability, "pathology": ...}
    (mammosearch.search.vote.Reliability documents), or {} when it was never measured.

    A trained space: its model's out-of-fold figures (model.json, written by train's
    cross-validation; the archive protocol's when recorded, as search meets the archive;
    cases: the `<column>_case` figures of that fusion). A base space: its latest
    patient-excluded evaluation run of this unit (and fusion) for this metric, else the base
    column of a registered model's cross-validation in this space.
    """
    fusion = (fusion or DEFAULT_FUSION) if unit == "case" else None
    from mammosearch.embed.loader import registry_dir
    from mammosearch.embed.registry import registered_models

    model = model_of_space(settings, space)
    column = "trained"
    if model is None and space.backbone.startswith(TRAINED_PREFIX):
        return {}
    if model is None:
        for run in latest_patient_excluded_runs(session, space.id, metric, 20):
            config = run.config or {}
            stored = config.get(VOTE_KEYS[unit])
            if stored and config.get("fusion") == fusion:
                return {**stored, "run_id": run.id}
        column = "base"
        model = next(
            (
                m
                for m in registered_models(registry_dir(settings))
                if m.record["base"].get("weights_sha256") == space.weights_sha256
                and m.record["base"].get("backbone") == space.backbone
            ),
            None,
        )
    if model is None:
        return {}
    cv = model.cross_validation()
    primary = cv.get("label") or "birads"
    measured: dict[str, Any] = {}
    table = _cv_vote(cv, column, unit, fusion, model.name)
    if table:
        measured[primary] = table
    # The model's other labels, scored on the same folds (train's `other_labels`): a
    # BIRADS model's pathology vote, a pathology model's BIRADS vote.
    for label, figures in (cv.get("other_labels") or {}).items():
        table = _cv_vote(figures, column, unit, fusion, model.name, cv.get("folds"))
        if table and label != primary:
            measured[label] = table
    return measured


def _cv_vote(
    figures: dict[str, Any],
    column: str,
    unit: str,
    fusion: str | None,
    model_name: str,
    folds: int | None = None,
) -> dict[str, Any] | None:
    """The reliability of one label's cross-validation figures (`column` "trained" or
    "base") with its source, or None when that unit was not measured."""
    folds = figures.get("folds") or folds
    if unit == "case":
        case_figures = (figures.get(f"{column}_case") or {}).get(fusion) or {}
        reliability = case_figures.get("vote_reliability")
        if not reliability:
            return None
        source = (
            f"{folds}-fold patient-grouped cross-validation, out of fold, cases by "
            f"{fusion} (model {model_name})"
        )
        return {**reliability, "source": source, "unit": "case", "fusion": fusion}
    # The archive protocol first: unseen patients' images asking the fold's whole archive,
    # as a served trained space is asked; else the within-fold pools.
    for key in (f"{column}_archive", column):
        reliability = (figures.get(key) or {}).get("vote_reliability")
        if reliability:
            source = (
                f"{folds}-fold patient-grouped cross-validation, out of fold"
                f"{' against the fold archive' if key.endswith('_archive') else ''} "
                f"(model {model_name})"
            )
            return {**reliability, "source": source}
    return None


def latest_patient_excluded_runs(
    session: Session, space_id: int, metric: str, limit: int
) -> Sequence[EvaluationRun]:
    """A space's finished patient-excluded evaluations under `metric`, newest first: the base
    space's measured figures and vote tables (one run per label, unit and order)."""
    return session.scalars(
        select(EvaluationRun)
        .where(
            EvaluationRun.space_id == space_id,
            EvaluationRun.status == "done",
            EvaluationRun.protocol == "patient-excluded",
            EvaluationRun.metric == metric,
        )
        .order_by(EvaluationRun.id.desc())
        .limit(limit)
    ).all()
