"""The admin's models page: spaces and their progress, registered models, training jobs."""

from __future__ import annotations

import json
import re
import time

from flask.testing import FlaskClient

from mammosearch.train.jobs import list_jobs
from tests.factories import make_image, make_patient


def _csrf(client: FlaskClient) -> str:
    page = client.get("/admin/models").get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def test_models_page_lists_spaces_models_and_a_training_form(admin_client: FlaskClient) -> None:
    page = admin_client.get("/admin/models")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "Embedding spaces" in text and "Registered models" in text
    assert "Start training" in text and "No training job yet" in text


def test_a_reduced_precision_space_shows_its_check_on_the_archive(  # type: ignore[no-untyped-def]
    admin_client: FlaskClient, db, web_settings
) -> None:
    from mammosearch.db.models import EmbeddingSpace
    from mammosearch.embed.quantize import PrecisionCheck, write_check

    db.add(EmbeddingSpace(
        backbone="efficientnet-lite0:int8", weights_sha256="ab" * 32, weights_source="int8 of",
        pretrained=True, preprocessing_version=1, dim=1280,
    ))  # fmt: skip
    db.commit()
    onnx_dir = web_settings.data_dir / "models" / "onnx"
    onnx_dir.mkdir(parents=True)
    write_check(onnx_dir / "efficientnet-lite0-x-p1.onnx", PrecisionCheck(
        precision="int8", fp32_p5=0.331, variant_p5=0.333, evaluated_images=503,
        calibration_images=64, fp32_images_per_s=160.0, variant_images_per_s=320.0,
        cpu="avx2", native_support=True, variant_sha256="ab" * 32,
    ))  # fmt: skip
    text = admin_client.get("/admin/models").get_data(as_text=True)
    assert "efficientnet-lite0:int8" in text
    assert "int8 check on this archive: P@5 0.333" in text
    assert "fp32 0.331, 503 images" in text and "x2.00 the speed; kept" in text


def test_radiologists_cannot_see_or_start_training(radiologist_client: FlaskClient) -> None:
    assert radiologist_client.get("/admin/models").status_code in (302, 403)
    answer = radiologist_client.post("/admin/models/train", data={"name": "x"})
    assert answer.status_code in (302, 400, 403)


def test_a_bad_training_request_is_refused_with_the_reason(admin_client: FlaskClient, app) -> None:  # type: ignore[no-untyped-def]
    token = _csrf(admin_client)
    answer = admin_client.post(
        "/admin/models/train",
        data={"name": "../evil", "labels": "birads", "epochs": "500", "base": "densenet121",
              "csrf_token": token},
        follow_redirects=True,
    )  # fmt: skip
    text = answer.get_data(as_text=True)
    assert "Training not started" in text and "epochs: between 1 and 200" in text
    assert "base: one of efficientnet-lite0, efficientnet-lite1, efficientnet-lite2" in text
    assert list_jobs(app.extensions["mammosearch_settings"]) == []


def test_a_training_job_records_its_failure_where_the_page_shows_it(  # type: ignore[no-untyped-def]
    admin_client: FlaskClient, app, db
) -> None:
    """An archive without labels: the job fails, and its record says why."""
    settings = app.extensions["mammosearch_settings"]
    make_image(db, settings, make_patient(db), birads=None)
    token = _csrf(admin_client)
    answer = admin_client.post(
        "/admin/models/train",
        data={"name": "first-model", "labels": "birads", "csrf_token": token},
    )
    assert answer.status_code == 302
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        jobs = list_jobs(settings)
        if jobs and jobs[0]["state"] == "failed":
            break
        time.sleep(0.2)
    assert jobs[0]["state"] == "failed" and "birads" in jobs[0]["error"]
    status = admin_client.get(f"/admin/models/jobs/{jobs[0]['id']}").get_json()
    assert status["name"] == "first-model"
    assert admin_client.get("/admin/models/jobs/not-a-job").status_code == 404


def test_a_registered_model_shows_its_figure_on_its_own_training_archive(  # type: ignore[no-untyped-def]
    admin_client: FlaskClient, web_settings
) -> None:
    import hashlib

    from mammosearch.embed.loader import registry_dir

    folder = registry_dir(web_settings) / "site-v1"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"onnx")
    figures = {
        "metrics": {"precision@5": 0.4, "consensus_precision@5": 0.476},
        "vote_per_class_recall": {"1": 0.7},
    }
    (folder / "model.json").write_text(json.dumps({
        "format": 1, "name": "site-v1", "model_sha256": hashlib.sha256(b"onnx").hexdigest(),
        "input": {"image_size_px": 224}, "output": {"dim": 256}, "base": {},
        "labels": {"birads": [1, 2]}, "training_images": {"count": 503},
        "created_at": "2026-12-06T22:00:00Z",
        "cross_validation": {
            "trained": figures, "base": {"metrics": {"precision@5": 0.302}},
            "trained_archive": {"metrics": {"precision@5": 0.474}},
            "base_archive": {"metrics": {"precision@5": 0.33}},
        },
    }))  # fmt: skip
    text = admin_client.get("/admin/models").get_data(as_text=True)
    assert "site-v1" in text and "On its training archive P@5" in text
    assert re.search(r"0\.474\s*<span class=\"hint\">\(base 0\.330\)</span>", text)
    assert re.search(r"0\.400\s*<span class=\"hint\">\(base 0\.302\)</span>", text)
    assert "agreeing first 0.476" in text  # the served order's figure beside the embedding's


def test_a_finished_job_shows_both_figures_and_times_the_next_run(  # type: ignore[no-untyped-def]
    admin_client: FlaskClient, web_settings
) -> None:
    """The jobs table never shows the out-of-fold figure without the archive one, and the
    form's estimate comes from the last run on this site, not from a fixed sentence."""
    from mammosearch.durable.atomic_files import atomic_write_bytes
    from mammosearch.train.jobs import finished_summary, jobs_dir

    text = admin_client.get("/admin/models").get_data(as_text=True)
    assert "500 images took" in text and "The last run here" not in text

    cv = {
        "trained": {"metrics": {"precision@5": 0.4}},
        "base": {"metrics": {"precision@5": 0.302}},
        "trained_archive": {"metrics": {"precision@5": 0.474}},
        "base_archive": {"metrics": {"precision@5": 0.33}},
    }
    summary = finished_summary(cv, 503, "2026-12-07T00:00:00+00:00", "2026-12-07T00:12:30+00:00")
    assert summary["duration_s"] == 750 and summary["archive"]["trained"]["precision@5"] == 0.474
    record = {
        "id": "a" * 32, "name": "site-v2", "options": {}, "state": "done",
        "stage": "registered", "progress": {}, "requested_by": "admin",
        "created_at": "2026-12-07T00:00:00+00:00", **summary,
    }  # fmt: skip
    atomic_write_bytes(jobs_dir(web_settings) / f"{'a' * 32}.json", json.dumps(record).encode())
    text = admin_client.get("/admin/models").get_data(as_text=True)
    assert "out-of-fold P@5 0.400 (base 0.302)" in text
    assert "on its training archive P@5 0.474 (base 0.330)" in text
    assert "took 12.5 min for 503 images" in text
    assert "The last run here took 12.5 min for 503 images" in text


def test_a_job_trains_from_the_base_the_form_chose() -> None:
    from mammosearch.train.jobs import job_config

    assert job_config({"base": "efficientnet-lite2"}).base == "efficientnet-lite2"
    assert job_config({"base": None}).base == "efficientnet-lite0"


def test_the_form_takes_the_train_commands_options_and_refuses_bad_ones(  # type: ignore[no-untyped-def]
    admin_client: FlaskClient, app
) -> None:
    from mammosearch.train.jobs import job_config

    text = admin_client.get("/admin/models").get_data(as_text=True)
    assert "More options" in text and 'name="ensemble"' in text
    token = _csrf(admin_client)
    refused = admin_client.post(
        "/admin/models/train",
        data={"name": "m", "labels": "birads", "folds": "1", "loss": "hinge", "dim": "x",
              "csrf_token": token},
        follow_redirects=True,
    ).get_data(as_text=True)  # fmt: skip
    assert "folds: a whole number from 2 to 10" in refused
    assert "loss: one of ce, supcon" in refused and "dim: a whole number" in refused
    assert list_jobs(app.extensions["mammosearch_settings"]) == []

    config = job_config({"labels": ["birads"], "folds": 3, "pooling": "gem", "ensemble": 2,
                         "test_views": 4, "seed": 7, "epochs": None})  # fmt: skip
    assert (config.folds, config.pooling, config.ensemble, config.test_views) == (3, "gem", 2, 4)
    assert config.seed == 7 and config.fit.epochs == 15 and config.loss == "supcon"


def _register_with_cv(web_settings, name: str, cv: dict, training: dict | None = None) -> None:  # type: ignore[no-untyped-def]
    import hashlib

    from mammosearch.embed.loader import registry_dir

    folder = registry_dir(web_settings) / name
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(name.encode())
    (folder / "model.json").write_text(json.dumps({
        "format": 1, "name": name, "model_sha256": hashlib.sha256(name.encode()).hexdigest(),
        "input": {"image_size_px": 320}, "output": {"dim": 256}, "base": {},
        "labels": {"birads": [1, 2]}, "training_images": {"count": 503},
        "created_at": "2026-12-07T10:00:00Z", "cross_validation": cv,
        "training": training or {},
    }))  # fmt: skip


def _table(precisions: list[float], floor: float = 0.5) -> dict:
    edges = [0.0, 0.45, 0.65, 1.0]
    bins = [
        {"low": low, "high": high, "suggestions": 20, "correct": round(20 * p), "precision": p}
        for low, high, p in zip(edges, edges[1:], precisions, strict=False)
    ]
    return {"bins": bins, "floor": floor, "accuracy": 0.45, "majority_rate": 0.37,
            "source": "", "suggestions": 60, "balanced_accuracy": 0.3, "ece": 0.05,
            "per_class_recall": {"1": 0.7, "2": 0.2}}  # fmt: skip


def test_spaces_are_compared_side_by_side_per_class_image_and_case(  # type: ignore[no-untyped-def]
    admin_client: FlaskClient, web_settings
) -> None:
    """A model's out-of-fold and same-fold base figures per class, at image and case level,
    each column naming its source; the training setting and device beside the model."""
    pooled = {
        "metrics": {"precision@5": 0.44, "ndcg@5": 0.43, "vote_accuracy": 0.49,
                    "vote_balanced_accuracy": 0.31},
        "per_class_precision@5": {"similarity": {"1": 0.61, "2": 0.22}},
        "vote_per_class_recall": {"1": 0.72, "2": 0.14},
    }  # fmt: skip
    base = {**pooled, "metrics": {"precision@5": 0.30}, "per_class_precision@5": {
        "similarity": {"1": 0.47, "2": 0.29}}}  # fmt: skip
    case = {"mean": {"metrics": {"precision@5": 0.42}, "vote_reliability": _table([0.3, 0.6, 0.7])}}
    cv = {"label": "birads", "folds": 5, "trained": pooled, "base": base,
          "trained_case": case, "base_case": case}  # fmt: skip
    setting = {"name": "strongest measured", "device": "cuda", "changes": {},
               "reason": "a CUDA GPU is present"}  # fmt: skip
    _register_with_cv(web_settings, "gpu-v1", cv, {"device": "cuda", "setting": setting})
    page = admin_client.get("/admin/models").get_data(as_text=True)
    compare = page[page.index('id="compare"') :]
    assert "BIRADS, images" in compare and "BIRADS, cases" in compare
    assert (
        "gpu-v1 (no space yet)" in compare
        and "gpu-v1 (no space yet)&#39;s base, same folds" in compare
    )
    assert "5-fold out-of-fold, cases by mean" in compare
    assert re.search(
        r"P@5, class 1</th><td class=\"num\">0\.610</td><td class=\"num\">0\.470</td>", compare
    )
    assert re.search(r"vote recall, class 2</th><td class=\"num\">0\.140</td>", compare)
    assert re.search(
        r'title="a CUDA GPU is present">strongest measured</span> on <code>cuda</code>', page
    )


def test_each_space_shows_the_reliability_tables_its_suggestions_read(  # type: ignore[no-untyped-def]
    admin_client: FlaskClient, db, web_settings
) -> None:
    """Measured: the table (share bins, right, precision, suggested or uncertain), its
    floor and a reliability diagram; unmeasured units say that nothing is suggested."""
    import numpy as np

    from mammosearch.evaluate.runs import evaluate_space
    from tests.factories import make_class_archive, make_space

    space = make_space(db, "efficientnet-lite0", 8, pretrained=True)
    make_class_archive(db, space, (1, 2, 4, 5), 16, np.random.default_rng(3))
    evaluate_space(db, web_settings, space, ks=(1, 5))  # image unit, cosine
    page = admin_client.get("/admin/models").get_data(as_text=True)
    section = page[page.index('id="reliability"') : page.index('id="compare"')]
    assert "Space 1 (efficientnet-lite0): 1 of 4 tables measured" in section
    image = section[section.index('data-unit="image" data-label="birads" data-measured="yes"') :]
    assert '<svg class="reliability"' in image and "floor 50%" in image
    assert re.search(r"<td>0\.\d\d–1\.00</td>\s*<td class=\"num\">\d+</td>", image)
    assert "patient-excluded evaluation of space 1" in image
    assert 'data-unit="case" data-label="birads" data-measured="no"' in section
    assert "Not measured: a case search here lists the neighbours' labels" in section
    compare = page[page.index('id="compare"') :]
    assert (
        "space 1 (efficientnet-lite0)" in compare
        and "patient-excluded evaluation, run #" in compare
    )


def test_a_running_job_shows_its_fold_epoch_and_time_left(  # type: ignore[no-untyped-def]
    admin_client: FlaskClient, web_settings
) -> None:
    from mammosearch.durable.atomic_files import atomic_write_bytes
    from mammosearch.train.jobs import jobs_dir

    record = {
        "id": "b" * 32, "name": "site-v3", "options": {}, "state": "running",
        "stage": "fold 2/5", "requested_by": "boss", "created_at": "2026-12-07T00:00:00+00:00",
        "progress": {"epoch": 3, "epochs": 15, "loss": 1.5, "fold": 2, "folds": 5,
                     "eta_s": 360},
    }  # fmt: skip
    atomic_write_bytes(jobs_dir(web_settings) / f"{'b' * 32}.json", json.dumps(record).encode())
    page = admin_client.get("/admin/models").get_data(as_text=True)
    assert "fold 2/5, epoch 3/15, about 6 min left,\n          loss 1.500" in page
    status = admin_client.get(f"/admin/models/jobs/{'b' * 32}").get_json()
    assert status["progress_line"] == "fold 2/5, epoch 3/15, about 6 min left"
    caching = {**record, "stage": "caching views",
               "progress": {"stage": "caching views", "done": 40, "total": 503}}  # fmt: skip
    atomic_write_bytes(jobs_dir(web_settings) / f"{'b' * 32}.json", json.dumps(caching).encode())
    page = admin_client.get("/admin/models").get_data(as_text=True)
    assert "caching views (40/503 images)" in page


def test_the_form_offers_every_train_option_the_command_has(  # type: ignore[no-untyped-def]
    admin_client: FlaskClient, app
) -> None:
    """Labels (the learned one and extra tasks), image size, positives, trained blocks and
    cached views, besides the others: a job's config takes them all."""
    from mammosearch.train.jobs import job_config

    text = admin_client.get("/admin/models").get_data(as_text=True)
    fields = ('name="extra_labels" value="pathology"', 'name="positives"', 'name="n_views"',
              'name="trained_blocks"', 'name="image_size_px" type="number"')  # fmt: skip
    assert all(field in text for field in fields)
    token = _csrf(admin_client)
    admin_client.post("/admin/models/train", data={
        "name": "multi", "labels": "pathology", "extra_labels": ["birads", "finding"],
        "image_size_px": "288", "positives": "other-patients", "trained_blocks": "6",
        "n_views": "6", "csrf_token": token, "epochs": "1",
    })  # fmt: skip
    (job,) = [j for j in list_jobs(app.extensions["mammosearch_settings"]) if j["name"] == "multi"]
    config = job_config(job["options"])
    assert config.labels == ("pathology", "birads", "finding") and config.image_size_px == 288
    assert (config.positives, config.trained_blocks, config.n_views) == ("other-patients", 6, 6)
    refused = admin_client.post(
        "/admin/models/train",
        data={"name": "bad", "labels": "colour", "image_size_px": "2000", "csrf_token": token},
        follow_redirects=True,
    ).get_data(as_text=True)
    assert "labels: colour unknown" in refused and "image size: 64 to 1024 pixels" in refused


def test_a_base_space_is_quantized_from_the_page_and_the_outcome_shown(  # type: ignore[no-untyped-def]
    admin_client: FlaskClient, db, web_settings
) -> None:
    """`models quantize` from the page: only a base space at full precision is offered; the
    run's record says how it ended (here: nothing labelled to check on), and a kept variant
    gets an Activate button."""
    from mammosearch.pipeline.quantize_jobs import read_state, state_path
    from tests.factories import make_space

    make_space(db, "efficientnet-lite0", 8, pretrained=True)
    text = admin_client.get("/admin/models").get_data(as_text=True)
    assert 'id="quantize-form"' in text and "<option>efficientnet-lite0</option>" in text
    token = _csrf(admin_client)
    refused = admin_client.post(
        "/admin/models/quantize", data={"backbone": "resnet50", "precision": "int8",
                                        "csrf_token": token}, follow_redirects=True,
    ).get_data(as_text=True)  # fmt: skip
    assert "Not started: choose a base space (efficientnet-lite0)" in refused
    admin_client.post("/admin/models/quantize", data={
        "backbone": "efficientnet-lite0", "precision": "int8", "csrf_token": token})  # fmt: skip
    deadline = time.monotonic() + 120
    while read_state(web_settings).get("state") in (None, "running"):
        assert time.monotonic() < deadline, read_state(web_settings)
        time.sleep(0.5)
    record = read_state(web_settings)
    assert record["state"] == "failed" and record["variant"] == "efficientnet-lite0:int8"
    assert "no image in the archive has a 'birads' label" in record["error"]
    page = admin_client.get("/admin/models").get_data(as_text=True)
    assert "Last: efficientnet-lite0:int8, <strong>failed</strong>:" in page
    assert "Activate efficientnet-lite0:int8" not in page

    kept = {**record, "state": "done", "kept": True, "summary": "P@5 0.331 -> 0.333: kept"}
    state_path(web_settings).write_text(json.dumps(kept))
    page = admin_client.get("/admin/models").get_data(as_text=True)
    assert "Activate efficientnet-lite0:int8" in page and "P@5 0.331 -&gt; 0.333: kept" in page
