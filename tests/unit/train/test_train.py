"""`mammosearch train` and serving its model: a tiny model trained on a few dev images."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from mammosearch.config import Settings, get_settings, settings_from_env
from mammosearch.db import migrate
from mammosearch.db.session import session_scope
from tests.conftest import DEV_DATA, needs_dev_data

pytestmark = [needs_dev_data, pytest.mark.slow]

SHEET = "Radiology manual annotations.xlsx"
TINY = dict(image_size_px=64, n_views=2, folds=2, trained_blocks=2, dim=32)


@dataclass
class Archive:
    settings: Settings
    folder: Path


def _patients(first: int, count: int) -> list[str]:
    names = sorted((DEV_DATA / "Subtracted images").glob("*.jpg"))
    patients = sorted({name.name.split("_")[0] for name in names}, key=lambda p: int(p[1:]))
    return patients[first : first + count]


def _archive(root: Path, patients: list[str], monkeypatch: pytest.MonkeyPatch) -> Archive:
    """A CDD-CESM folder with these patients' images, imported (not yet embedded)."""
    from mammosearch.ingest.cdd_cesm import import_cdd_cesm

    folder = root / "cdd"
    (folder / "Subtracted images").mkdir(parents=True)
    shutil.copy(DEV_DATA / SHEET, folder / SHEET)
    for patient in patients:
        for image in (DEV_DATA / "Subtracted images").glob(f"{patient}_*.jpg"):
            shutil.copy(image, folder / "Subtracted images" / image.name)
    data_dir = root / "data"
    url = f"sqlite:///{root / 'db.sqlite3'}"
    migrate.upgrade(url)
    monkeypatch.setenv("MAMMOSEARCH_DATA_DIR", str(data_dir))
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("MAMMOSEARCH_BACKBONE", "efficientnet-lite0")
    monkeypatch.setenv("MAMMOSEARCH_EMBED_RUNTIME", "torch")
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    get_settings.cache_clear()
    settings = settings_from_env()
    with session_scope(url) as session:
        import_cdd_cesm(session, folder, settings, progress=False)
    return Archive(settings, folder)


@pytest.fixture(scope="module")
def module_patch() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def training_archive(
    tmp_path_factory: pytest.TempPathFactory, module_patch: pytest.MonkeyPatch
) -> Archive:
    """Twelve dev patients, imported and embedded with the base backbone."""
    from mammosearch.pipeline.process import process_pending

    archive = _archive(tmp_path_factory.mktemp("train-archive"), _patients(0, 12), module_patch)
    process_pending(archive.settings)
    return archive


def _tiny_config(**changes: object):  # noqa: ANN202
    from mammosearch.train.config import TrainConfig

    return replace(TrainConfig(), **{**TINY, **changes}).with_fit(epochs=1)


@pytest.fixture(scope="module")
def trained_model(training_archive: Archive, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained for one epoch at 64 px on the training archive, with the setting an
    automatic run on a CPU records."""
    from mammosearch.train.auto import choose_setting
    from mammosearch.train.train_run import run_training

    out = tmp_path_factory.mktemp("models") / "tiny-model"
    with session_scope(training_archive.settings.database_url) as session:
        run_training(
            session, _tiny_config(), out, "pytest", quiet=True,
            setting=choose_setting("cpu").to_dict(),
        )  # fmt: skip
    return out


def test_folds_never_put_a_patient_on_both_sides() -> None:
    from mammosearch.train.folds import patient_folds

    generator = np.random.default_rng(0)
    patients = np.repeat(np.arange(40), 3)
    targets = generator.integers(0, 4, size=patients.size)
    folds = patient_folds(targets, patients, 5, seed=1)
    assert len(folds) == 5
    seen = np.concatenate([valid for _, valid in folds])
    assert sorted(seen.tolist()) == list(range(patients.size))  # every image validated once
    for train, valid in folds:
        assert not set(patients[train]) & set(patients[valid])


def test_model_dir_holds_the_model_and_its_record(trained_model: Path) -> None:
    from mammosearch.embed.weights import file_sha256

    record = json.loads((trained_model / "model.json").read_text())
    assert record["model_sha256"] == file_sha256(trained_model / "model.onnx")
    assert record["input"]["image_size_px"] == 64
    assert record["output"]["dim"] == 32
    assert record["base"]["backbone"] == "efficientnet-lite0"
    assert len(record["base"]["weights_sha256"]) == 64
    assert record["labels"]["birads"]
    assert record["training_images"]["count"] == len(
        (trained_model / "training-images.txt").read_text().split()
    )
    cv = record["cross_validation"]
    assert cv["folds"] == 2 and "precision@5" in cv["trained"]["metrics"]
    assert "precision@5" in cv["base"]["metrics"]
    assert cv["trained"]["vote_per_class_recall"]
    # The served consensus order scored beside the similarity order, with who gains.
    assert 0.0 <= cv["trained"]["metrics"]["consensus_precision@5"] <= 1.0
    assert "consensus_precision@5" in cv["base"]["metrics"]
    per_class = cv["trained"]["per_class_precision@5"]
    assert set(per_class) == {"similarity", "consensus"}
    assert set(per_class["consensus"]) == set(per_class["similarity"])
    # The same unseen queries against each fold's whole archive: as many or more can be
    # scored (more candidates), never more than the labelled images.
    archive = cv["trained_archive"]
    assert cv["trained"]["queries"] <= archive["queries"] <= record["training_images"]["count"]
    assert archive["queries"] == cv["base_archive"]["queries"]
    assert 0.0 <= archive["metrics"]["precision@5"] <= 1.0
    assert "training images included" in cv["archive_protocol"]
    # Case level too: each fold's cases against its other cases, per fusion rule.
    for space in ("trained_case", "base_case"):
        for fusion in ("mean", "best-pair", "matched-views"):
            scored = cv[space].get(fusion)
            assert scored is None or 0.0 <= scored["metrics"]["precision@5"] <= 1.0
            assert scored is None or scored["vote_reliability"]["bins"]  # the case vote
    assert "unseen patients' cases" in cv["case_protocol"]
    assert record["training"]["command_line"] == "pytest" and record["software"]["torch"]
    assert record["training"]["setting"]["name"] == "defaults"  # who chose the config, and why
    assert record["training"]["device"] == "cpu"
    leftovers = [p.name for p in trained_model.parent.iterdir() if p.name != "tiny-model"]
    assert leftovers == []  # no staging folder, no work folder


def test_an_interrupted_run_leaves_no_model_dir_and_resumes(
    training_archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mammosearch.train import runner, train_run

    out = tmp_path / "model"
    real_train_final = runner.train_final

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(train_run, "train_final", interrupted)
    with (
        session_scope(training_archive.settings.database_url) as session,
        pytest.raises(KeyboardInterrupt),
    ):
        train_run.run_training(session, _tiny_config(), out, "pytest", quiet=True)
    assert not out.exists()
    assert sorted(p.name for p in (tmp_path / "model.work").glob("fold-*.npz")) == [
        "fold-1.npz",
        "fold-2.npz",
    ]
    older = tmp_path / "model.work" / "fold-2.npz"  # as written before the archive protocol
    with np.load(older) as saved:
        validation_only = saved["vectors"]
    np.savez(older, vectors=validation_only)
    trained_splits: list[int] = []
    real_fit = runner.fit_top

    def counting_fit(top, cache, targets, positions, *args, **kwargs):  # noqa: ANN001, ANN202
        trained_splits.append(int(positions.size))
        return real_fit(top, cache, targets, positions, *args, **kwargs)

    monkeypatch.setattr(train_run, "train_final", real_train_final)
    monkeypatch.setattr(runner, "fit_top", counting_fit)
    with session_scope(training_archive.settings.database_url) as session:
        train_run.run_training(session, _tiny_config(), out, "pytest", quiet=True)
    # fold 1 resumed; fold 2's older file lacks the training vectors, so it trained again
    assert len(trained_splits) == 2
    assert trained_splits[1] > trained_splits[0]  # the final model: every labelled image
    assert (out / "model.json").is_file() and not (tmp_path / "model.work").exists()


def test_a_changed_config_does_not_resume_another_runs_folds(
    training_archive: Archive, tmp_path: Path
) -> None:
    from mammosearch.train.dataset import images_fingerprint
    from mammosearch.train.runner import prepare_work_dir

    out = tmp_path / "model"
    first = prepare_work_dir(out, _tiny_config(), images_fingerprint(["a"]))
    (first / "fold-1.npz").write_bytes(b"x")
    second = prepare_work_dir(out, _tiny_config(dim=16), images_fingerprint(["a"]))
    assert not (second / "fold-1.npz").exists()


def test_a_tampered_model_file_is_refused(trained_model: Path, tmp_path: Path) -> None:
    from mammosearch.embed.trained import ModelDirError, read_trained_model

    copy = tmp_path / "copy"
    shutil.copytree(trained_model, copy)
    with (copy / "model.onnx").open("ab") as model_file:
        model_file.write(b"\0")
    with pytest.raises(ModelDirError, match="does not match"):
        read_trained_model(copy)


def test_a_new_archive_ingests_searches_and_evaluates_with_the_model(
    trained_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model trained on one archive serves another (patients it never saw)."""
    from mammosearch.embed.serving import open_serving_space
    from mammosearch.evaluate import evaluate_space
    from mammosearch.pipeline.process import process_pending
    from mammosearch.search.service import SearchService

    archive = _archive(tmp_path, _patients(40, 8), monkeypatch)
    monkeypatch.setenv("MAMMOSEARCH_BACKBONE", str(trained_model))
    get_settings.cache_clear()
    settings = settings_from_env()
    summary = process_pending(settings)
    assert summary.embedded > 0 and summary.failed == 0
    record = json.loads((trained_model / "model.json").read_text())
    with session_scope(settings.database_url) as session:
        space = open_serving_space(session, settings)
        assert space.backbone == "trained:efficientnet-lite0"
        assert space.weights_sha256 == record["model_sha256"] and space.dim == 32
        query = next((archive.folder / "Subtracted images").glob("*.jpg"))
        with PILImage.open(query) as image:
            response = SearchService(settings).search_image(session, image, k=3)
        assert len(response.results) == 3
        result = evaluate_space(session, settings, space, ks=(1, 5))
    assert result.training_overlap["leaky"] is False
    assert result.training_overlap["evaluated_images_that_trained_the_model"] == 0


def test_evaluating_on_the_training_archive_is_flagged_leaky(
    training_archive: Archive, trained_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mammosearch.embed.serving import embedder_for
    from mammosearch.embed.spaces import find_space
    from mammosearch.evaluate import evaluate_space, format_summary
    from mammosearch.jobs.space_switch import embed_into_space

    monkeypatch.setenv("MAMMOSEARCH_BACKBONE", str(trained_model))
    get_settings.cache_clear()
    settings = settings_from_env()
    with session_scope(settings.database_url) as session:
        from mammosearch.jobs.space_switch import missing_image_ids

        identity = embedder_for(settings, str(trained_model)).identity
        space = find_space(session, identity)
        if space is None or missing_image_ids(session, space):
            from sqlalchemy import select

            from mammosearch.db.models import Image

            ids = list(session.scalars(select(Image.id)))
            embed_into_space(session, settings, str(trained_model), ids)
            space = find_space(session, identity)
        result = evaluate_space(session, settings, space, ks=(1, 5))
    assert result.training_overlap["leaky"] is True
    assert "LEAKY" in format_summary(result)
    assert result.to_dict()["training_overlap"]["out_of_fold"]["trained"]["precision@5"] >= 0


def test_reembed_and_activate_switch_search_without_a_gap(
    training_archive: Archive, trained_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Search answers from the old space until the switch, from the new one right after."""
    from sqlalchemy import select

    from mammosearch.db.models import Image
    from mammosearch.embed.loader import registry_dir
    from mammosearch.embed.registry import register_model
    from mammosearch.embed.serving import serving_space
    from mammosearch.jobs.space_switch import activate, embed_into_space, missing_image_ids
    from mammosearch.search.service import SearchService

    monkeypatch.setenv("MAMMOSEARCH_BACKBONE", "auto")
    get_settings.cache_clear()
    settings = settings_from_env()
    model = register_model(trained_model, registry_dir(), "tiny")
    service = SearchService(settings)
    with session_scope(settings.database_url) as session:
        old = serving_space(session, settings)
        assert old is not None and old.backbone == "efficientnet-lite0"
        some_id = session.scalars(select(Image.id).order_by(Image.id)).first()
        before = service.search_image_id(session, some_id, k=3)
        assert len(before.results) == 3 and before.embedding_space["id"] == old.id
        ids = list(session.scalars(select(Image.id).order_by(Image.id)))
        embed_into_space(session, settings, "tiny", ids[: len(ids) // 2])  # half-way
        during = service.search_image_id(session, some_id, k=3)
        assert during.embedding_space["id"] == old.id and len(during.results) == 3
        record = activate(session, settings, "tiny")  # catches up the other half first
        after = service.search_image_id(session, some_id, k=3)
        assert after.embedding_space["weights_sha256"] == model.sha256
        assert len(after.results) == 3
        new_space = serving_space(session, settings)
        assert new_space.id == record["space"]["id"] != old.id
        assert missing_image_ids(session, new_space) == []


def test_a_pathology_model_serves_with_its_pathology_vote_measured(
    training_archive: Archive,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`--label pathology`: registered, re-embedded, activated; the panel's pathology vote
    reads the model's out-of-fold table, and its BIRADS vote the same folds' BIRADS one."""
    from sqlalchemy import select

    from mammosearch.db.models import Image
    from mammosearch.embed.loader import registry_dir
    from mammosearch.embed.registry import register_model
    from mammosearch.embed.serving import serving_space
    from mammosearch.evaluate import evaluate_space
    from mammosearch.evaluate.runs import measured_vote
    from mammosearch.jobs.space_switch import activate, embed_into_space
    from mammosearch.search.service import SearchService
    from mammosearch.search.vote import NO_VOTE, UNMEASURED
    from mammosearch.train.train_run import run_training

    out = tmp_path_factory.mktemp("models") / "tiny-pathology"
    with session_scope(training_archive.settings.database_url) as session:
        run_training(session, _tiny_config(labels=("pathology",)), out, "pytest", quiet=True)
    record = json.loads((out / "model.json").read_text())
    cv = record["cross_validation"]
    assert list(record["labels"]) == ["pathology"]  # the scored BIRADS is not a head
    assert cv["label"] == "pathology" and set(cv["other_labels"]) == {"birads"}
    assert cv["trained"]["metrics"]["precision@5"] >= 0
    assert cv["other_labels"]["birads"]["trained"]["metrics"]["precision@5"] >= 0

    monkeypatch.setenv("MAMMOSEARCH_BACKBONE", "auto")
    get_settings.cache_clear()
    settings = settings_from_env()
    register_model(out, registry_dir(), "tiny-pathology")
    with session_scope(settings.database_url) as session:
        ids = list(session.scalars(select(Image.id).order_by(Image.id)))
        embed_into_space(session, settings, "tiny-pathology", ids)
        activate(session, settings, "tiny-pathology")
        space = serving_space(session, settings)
        assert space.weights_sha256 == record["model_sha256"]
        measured = measured_vote(session, settings, space)
        assert set(measured) == {"pathology", "birads"}
        assert "model tiny-pathology" in measured["pathology"]["source"]
        some_id = session.scalars(select(Image.id).order_by(Image.id)).first()
        panel = SearchService(settings).search_image_id(session, some_id, k=10).suggested_birads
        leaky = {
            label: evaluate_space(session, settings, space, label=label, ks=(1, 5))
            for label in ("pathology", "birads")
        }
    pathology = panel["pathology"]
    assert pathology["status"] not in (UNMEASURED, NO_VOTE)
    assert pathology["measured"]["accuracy"] == measured["pathology"]["accuracy"]
    assert panel["status"] not in (UNMEASURED, NO_VOTE)  # BIRADS, from the same folds
    for label, result in leaky.items():  # each evaluation beside that label's CV figures
        out_of_fold = result.training_overlap["out_of_fold"]
        figures = cv if label == "pathology" else cv["other_labels"]["birads"]
        assert result.training_overlap["leaky"] and out_of_fold["label"] == label
        assert out_of_fold["trained"] == figures["trained"]["metrics"]
