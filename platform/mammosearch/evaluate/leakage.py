"""Is this evaluation leaky? A trained space judged on the images that trained it.

A space whose backbone is a trained model knows the content hashes of its training images
(model.json's fingerprint, training-images.txt). Evaluating it on an archive that holds
them measures memory, not retrieval: every output says so, and carries the model's
out-of-fold figures, the honest ones, beside it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mammosearch.config import Settings
from mammosearch.db.models import EmbeddingSpace
from mammosearch.embed.trained import TRAINED_PREFIX, ModelDirError, TrainedModel


def model_of_space(settings: Settings, space: EmbeddingSpace) -> TrainedModel | None:
    """The trained model behind a space: configured, activated or registered, by sha256."""
    if not space.backbone.startswith(TRAINED_PREFIX):
        return None
    from mammosearch.embed.loader import registry_dir, trained_model_for
    from mammosearch.embed.registry import registered_models
    from mammosearch.embed.serving_record import serving_backbone

    names = {settings.backbone, serving_backbone("auto", settings.data_dir)}
    for name in names:
        try:
            model = trained_model_for(name, registry_dir(settings))
        except ModelDirError:
            continue
        if model is not None and model.sha256 == space.weights_sha256:
            return model
    for model in registered_models(registry_dir(settings)):
        if model.sha256 == space.weights_sha256:
            return model
    return None


def training_overlap(
    model: TrainedModel | None,
    space: EmbeddingSpace,
    image_sha256s: Iterable[str],
    label: str = "birads",
) -> dict[str, Any] | None:
    """None for a base space; else how many evaluated images trained the model, and its CV
    figures for the evaluated `label` (the one it learned, or one its CV scored beside)."""
    if not space.backbone.startswith(TRAINED_PREFIX):
        return None
    evaluated = set(image_sha256s)
    if model is None:
        return {
            "leaky": None,
            "note": "trained space whose model directory is not found here: "
            "cannot tell whether these images trained it",
        }
    overlap = len(evaluated & model.training_image_hashes())
    cv = model.cross_validation()
    if (cv.get("label") or "birads") != label:
        cv = {"protocol": cv.get("protocol"), **(cv.get("other_labels") or {}).get(label, {})}
    document: dict[str, Any] = {
        "leaky": overlap > 0,
        "model": model.name,
        "training_images": model.record.get("training_images"),
        "evaluated_images_that_trained_the_model": overlap,
        "evaluated_images": len(evaluated),
        "out_of_fold": {
            "label": label,
            "protocol": cv.get("protocol"),
            "trained": (cv.get("trained") or {}).get("metrics"),
            "base": (cv.get("base") or {}).get("metrics"),
        },
    }
    if overlap:
        document["note"] = (
            f"LEAKY: {overlap} of {len(evaluated)} evaluated images trained this model; "
            "these figures overstate it. Its honest out-of-fold figures are beside them."
        )
    return document


def format_overlap(overlap: dict[str, Any] | None) -> list[str]:
    """Lines for the CLI tables (empty for a base space or a clean evaluation)."""
    if not overlap:
        return []
    if overlap.get("leaky") is False:
        return [f"trained model {overlap['model']}: none of these images trained it"]
    lines = [f"WARNING: {overlap['note']}"]
    oof = (overlap.get("out_of_fold") or {}).get("trained") or {}
    base = (overlap.get("out_of_fold") or {}).get("base") or {}
    if oof:
        label = (overlap.get("out_of_fold") or {}).get("label")
        lines.append(
            f"out-of-fold{f' {label}' if label else ''} (honest): "
            + ", ".join(
                f"{key} {oof[key]:.3f} (base {base.get(key, float('nan')):.3f})"
                for key in ("precision@5", "ndcg@5", "vote_accuracy")
                if key in oof
            )
        )
    return lines
