"""`mammosearch report` on the real CDD-CESM dev archive: lite0 in full, the rest skipped."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from mammosearch.config import Settings
from mammosearch.db.models import EvaluationRun, Image
from mammosearch.db.session import make_session_factory
from mammosearch.embed import BACKBONES
from mammosearch.evaluate.report import write_report
from tests.conftest import needs_dev_data


@needs_dev_data
def test_report_on_the_dev_archive_has_every_section_for_the_available_backbone(
    dev_archive: Settings, tmp_path: Path, no_weights_offline: Path
) -> None:
    """lite0 (the archive's space) is evaluated; the others, which the archive holds no
    vectors of, say so in one line and are not embedded (a report reads the archive)."""
    session = make_session_factory(dev_archive.database_url)()
    statuses_before = dict(session.execute(select(Image.id, Image.status)).all())
    names = list(BACKBONES)  # lite1 and lite2 have weights too: still not embedded
    outcome = write_report(session, dev_archive, tmp_path / "report", names)
    document = json.loads(outcome.json_path.read_text())
    entries = {entry["backbone"]: entry for entry in document["backbones"]}
    assert entries["efficientnet-lite0"]["status"] == "evaluated"
    assert entries["efficientnet-lite0"]["embedded_now"] == 0
    for name in set(BACKBONES) - {"efficientnet-lite0"}:
        assert entries[name]["status"] == "skipped"
        assert "no embedding space with vectors" in entries[name]["skipped_reason"]
        assert "\n" not in entries[name]["skipped_reason"]
    lite0 = entries["efficientnet-lite0"]
    assert document["dataset"]["images"] == 503
    for metric in ("l2", "cosine"):
        result = lite0["results"][metric]
        # Better than chance: the paper's claim, on 503 real images, patient-excluded.
        assert result["metrics"]["precision@10"] > result["chance"]["precision@10"]
        assert result["confusion"]["accuracy"] is not None
    assert len(document["per_query"]) >= 5
    figures = {path.name for path in (outcome.out_dir / "figures").glob("*.png")}
    assert "curves.png" in figures and len(figures) == 4
    runs = session.scalars(
        select(EvaluationRun).where(EvaluationRun.report_path == str(outcome.out_dir))
    ).all()
    assert len(runs) == 2
    assert dict(session.execute(select(Image.id, Image.status)).all()) == statuses_before
    session.close()
