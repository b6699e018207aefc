"""Runs compared with the run before them: flags, webhook, figures, acknowledgement."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from mammosearch.config import Settings
from mammosearch.db.models import EmbeddingSpace, EvaluationRun
from mammosearch.evaluate.regression import (
    acknowledge_run,
    check_regression,
    compare_runs,
    previous_run,
    run_figures,
    unacknowledged_flagged_runs,
)
from tests.factories import make_space


class WebhookServer:
    """A real HTTP server on 127.0.0.1 that records the JSON bodies POSTed to it."""

    def __init__(self, status: int = 200) -> None:
        received: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.received = received
        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[WebhookServer]:
    """A local webhook receiver, shut down after the test."""
    server = WebhookServer()
    yield server
    server.close()


def pretrained_space(session: Session, backbone: str = "efficientnet-lite0") -> EmbeddingSpace:
    """A pretrained 4-d space of `backbone` (no vectors: the runs carry the figures)."""
    return make_space(
        session, backbone, 4, weights_sha256=backbone.ljust(64, "0"), weights_source="test",
        pretrained=True,
    )  # fmt: skip


def make_run(
    session: Session, space: EmbeddingSpace, precision: float, metric: str = "cosine",
    status: str = "done", **changes: Any,
) -> EvaluationRun:  # fmt: skip
    run = EvaluationRun(
        space_id=space.id, trigger="schedule", status=status, protocol="patient-excluded",
        label="birads", metric=metric,
        metrics={"precision@10": precision, "ndcg@10": 0.5, "map": 0.4, "search_ms_median": 0.1},
        **changes,
    )  # fmt: skip
    session.add(run)
    session.commit()
    return run


def test_previous_run_is_the_newest_earlier_finished_run_of_the_same_setup(
    session: Session,
) -> None:
    """Other metrics, spaces, failed runs and later runs are never 'the previous run'."""
    space, other_space = pretrained_space(session), pretrained_space(session, "resnet50")
    first = make_run(session, space, 0.5)
    make_run(session, space, 0.6, metric="l2")
    make_run(session, other_space, 0.6)
    make_run(session, space, 0.6, status="failed")
    current = make_run(session, space, 0.4)
    make_run(session, space, 0.9)
    assert previous_run(session, current) == first
    assert previous_run(session, first) is None


def test_compare_runs_flags_only_watched_metrics_that_dropped_beyond_the_threshold(
    session: Session,
) -> None:
    """A drop of 0.1 in precision@10 regresses at 0.05; timing never does."""
    space = pretrained_space(session)
    before = make_run(session, space, 0.6)
    after = make_run(session, space, 0.5)
    after.metrics = {**after.metrics, "ndcg@10": 0.47, "search_ms_median": 9.0}
    rows = {row["metric"]: row for row in compare_runs(after, before, threshold=0.05)}
    assert rows["precision@10"]["delta"] == pytest.approx(-0.1)
    assert rows["precision@10"]["regressed"] is True
    assert rows["ndcg@10"]["regressed"] is False  # -0.03 is within the threshold
    assert rows["search_ms_median"]["regressed"] is False
    assert all(row["previous"] is None for row in compare_runs(after, None))


def test_a_regression_flags_the_run_and_posts_the_webhook(
    session: Session, settings: Settings, webhook: WebhookServer
) -> None:
    """The run gets flagged with a reason naming the metric; the webhook gets the details."""
    settings = settings.with_overrides(regression_webhook_url=webhook.url)
    space = pretrained_space(session)
    before = make_run(session, space, 0.6)
    after = make_run(session, space, 0.45)
    check_regression(session, settings, after)
    session.refresh(after)
    assert after.flagged is True
    assert "precision@10 0.600 -> 0.450" in after.flag_reason
    assert f"run #{before.id}" in after.flag_reason
    assert len(webhook.received) == 1
    payload = webhook.received[0]
    assert payload["run_id"] == after.id and payload["previous_run_id"] == before.id
    assert [row["metric"] for row in payload["regressions"]] == ["precision@10"]


def test_no_drop_no_flag_and_a_failing_webhook_is_only_logged(
    session: Session, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A stable run stays unflagged; an unreachable webhook does not raise."""
    server = WebhookServer(status=500)
    settings = settings.with_overrides(regression_webhook_url=server.url)
    try:
        space = pretrained_space(session)
        make_run(session, space, 0.6)
        stable = make_run(session, space, 0.58)
        check_regression(session, settings, stable)
        assert stable.flagged is False and server.received == []
        dropped = make_run(session, space, 0.3)
        check_regression(session, settings, dropped)
        assert dropped.flagged is True and len(server.received) == 1
        assert "regression webhook" in caplog.text
    finally:
        server.close()


def test_flagged_runs_stay_on_the_banner_until_acknowledged(session: Session) -> None:
    """Acknowledging one flagged run (an audit event) removes it from the banner list only."""
    space = pretrained_space(session)
    first = make_run(session, space, 0.3, flagged=True, flag_reason="drop")
    second = make_run(session, space, 0.2, flagged=True, flag_reason="drop")
    make_run(session, space, 0.9)
    assert unacknowledged_flagged_runs(session) == [second, first]
    acknowledge_run(session, second, None)
    assert unacknowledged_flagged_runs(session) == [first]


def test_run_figures_lists_the_runs_own_pngs_inside_its_report_dir(
    session: Session, tmp_path: Path
) -> None:
    """Named figures that exist are returned; missing or escaping paths are not."""
    figures = tmp_path / "report" / "figures"
    figures.mkdir(parents=True)
    (figures / "curves.png").write_bytes(b"png")
    (figures / "other.png").write_bytes(b"png")
    (tmp_path / "secret.png").write_bytes(b"png")
    space = pretrained_space(session)
    run = make_run(
        session, space, 0.5, report_path=str(tmp_path / "report"),
        config={"report_figures": ["figures/curves.png", "figures/gone.png", "../secret.png"]},
    )  # fmt: skip
    assert run_figures(run) == [figures / "curves.png"]
    run.config = {}
    assert run_figures(run) == [figures / "curves.png", figures / "other.png"]
    assert run_figures(make_run(session, space, 0.5)) == []
