"""`mammosearch report` end to end on a small synthetic archive (real PostgreSQL, real models).

efficientnet-lite0 has real weights here; resnet50 runs with random weights (--allow-random)
so that every multi-backbone figure and table is exercised.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mammosearch.cli import main
from mammosearch.config import Settings, get_settings
from mammosearch.db.models import EmbeddingSpace, EvaluationRun, Image, ImageEmbedding
from mammosearch.db.session import make_session_factory
from mammosearch.evaluate.regression import run_figures
from mammosearch.evaluate.report import archived_backbones, prepare_backbone
from mammosearch.pipeline.process import process_pending
from tests.factories import make_image, make_patient, synthetic_image_bytes

PATIENTS = 10
BIRADS_BY_PATIENT = (1, 2, 4, 5)  # each class held by at least two patients
ARGS = [
    "--backbones", "efficientnet-lite0,resnet50", "--embed-missing", "--allow-random",
    "--k", "1,5,10",
]  # fmt: skip


@pytest.fixture
def archive(pg_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """20 small stored images (10 patients x 2 views), embedded and indexed by lite0."""
    settings = pg_settings.with_overrides(backbone="efficientnet-lite0", embed_batch_size=16)
    monkeypatch.setenv("MAMMOSEARCH_BACKBONE", "efficientnet-lite0")
    get_settings.cache_clear()
    session = make_session_factory(settings.database_url)()
    for number in range(PATIENTS):
        patient = make_patient(session, f"P{number}", None, commit=False)
        for view in ("CC", "MLO"):
            seed = number * 2 + (view == "MLO")
            make_image(
                session, settings, patient, seed, commit=False,
                content=synthetic_image_bytes(seed, size=(64, 80)),
                file_name=f"P{number}_{view}.png", view=view,
                birads=BIRADS_BY_PATIENT[number % 4], pathology=None, findings=None,
            )  # fmt: skip
    session.commit()
    session.close()
    assert process_pending(settings).indexed == PATIENTS * 2
    return settings


def _report(tmp_path: Path, name: str) -> tuple[Path, dict]:
    out_dir = tmp_path / name
    result = CliRunner().invoke(main, ["report", "--out", str(out_dir), *ARGS, "--no-progress"])
    assert result.exit_code == 0, result.output
    return out_dir, json.loads((out_dir / "report.json").read_text())


def test_report_covers_every_backbone_and_metric_and_a_second_run_embeds_nothing(
    archive: Settings, tmp_path: Path
) -> None:
    """Numbers with chance levels, every figure, runs linked to the report, statuses untouched;
    unasked, a backbone the archive holds no vectors of is skipped in one line, not embedded."""
    session: Session = make_session_factory(archive.database_url)()
    names = ["efficientnet-lite0", "efficientnet-lite1", "resnet50"]
    assert archived_backbones(session, archive, names) == ["efficientnet-lite0"]
    section = prepare_backbone(session, archive, "efficientnet-lite1", [1, 2])  # weights here
    assert section.space is None and section.skipped == (
        "no embedding space with vectors in the archive (--embed-missing embeds it for this report)"
    )
    assert session.scalars(select(EmbeddingSpace.backbone)).all() == ["efficientnet-lite0"]
    session.close()

    out_dir, document = _report(tmp_path, "first")
    entries = {entry["backbone"]: entry for entry in document["backbones"]}
    assert entries["efficientnet-lite0"]["embedded_now"] == 0  # the pipeline's vectors
    assert entries["resnet50"]["embedded_now"] == PATIENTS * 2
    assert entries["resnet50"]["untrained"] is True
    assert entries["resnet50"]["embedding_space"]["weights_sha256"].startswith("untrained")
    assert document["dataset"]["images"] == 20 and document["dataset"]["patients"] == 10
    for entry in entries.values():
        assert set(entry["results"]) == {"l2", "cosine"}
        for result in entry["results"].values():
            assert set(result["metrics"]) >= {"precision@10", "recall@5", "ndcg@1", "map"}
            assert result["chance"]["precision@1"] == pytest.approx(4 / 18, abs=0.05)
            assert set(result["search_ms_by_k"]) == {"1", "5", "10"}
            assert sum(map(sum, result["confusion"]["matrix"])) == 20
        assert 0 < entry["projection"]["pca_variance_ratio_sum"] <= 1
    assert {"software", "dataset", "per_query"} <= set(document)
    assert document["software"]["torch"] and document["software"]["faiss"]
    assert len(document["per_query"]) == 4  # one query per BI-RADS class present
    assert len(document["per_query"][0]["results"]) == 4  # 2 backbones x 2 metrics

    pngs = sorted(path.name for path in (out_dir / "figures").glob("*.png"))
    assert len(pngs) == 1 + 2 + 4  # curves, a projection per backbone, a confusion per pair
    assert all(
        path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for path in (out_dir / "figures").iterdir()
    )
    assert list((out_dir / "thumbs").glob("*.png"))
    html = (out_dir / "report.html").read_text()
    for heading in ("Summary", "Per-query results", "Embedding maps", "Neighbours' vote"):
        assert heading in html
    assert "UNTRAINED" in html and "figures/curves.png" in html and "thumbs/" in html

    session = make_session_factory(archive.database_url)()
    runs = session.scalars(select(EvaluationRun).order_by(EvaluationRun.id)).all()
    assert len(runs) == 4 and all(run.report_path == str(out_dir) for run in runs)
    assert all(len(run_figures(run)) == 3 for run in runs)
    assert set(session.scalars(select(Image.status))) == {"indexed"}
    resnet_space = session.scalars(select(EmbeddingSpace).filter_by(backbone="resnet50")).one()
    assert resnet_space.active is False  # a comparison space is not re-evaluated on schedule
    session.close()

    _, second = _report(tmp_path, "second")
    assert [entry["embedded_now"] for entry in second["backbones"]] == [0, 0]
    session = make_session_factory(archive.database_url)()
    assert session.scalar(select(func.count()).select_from(ImageEmbedding)) == 40
    session.close()


def test_a_backbone_without_weights_is_skipped_with_the_reason(
    pg_settings: Settings,
) -> None:
    """Without --allow-random, vgg16 (no weights here) is listed as skipped in one line."""
    session = make_session_factory(pg_settings.database_url)()
    section = prepare_backbone(session, pg_settings, "vgg16", [], allow_random=False, embed=True)
    session.close()
    assert section.space is None
    assert section.skipped.startswith("vgg16: no ImageNet weights") and "\n" not in section.skipped


def test_report_refuses_unknown_backbones_and_an_empty_archive(pg_settings: Settings) -> None:
    """The messages name the input and what to do."""
    runner = CliRunner()
    result = runner.invoke(main, ["report", "--out", "x", "--backbones", "alexnet"])
    assert result.exit_code != 0 and "unknown backbone alexnet" in result.output
    result = runner.invoke(main, ["report", "--out", "x", "--backbones", "efficientnet-lite0"])
    assert result.exit_code != 0 and "no embedded images" in result.output
