"""Prometheus metrics at /metrics: request counts, search stage latency, ingestion from the DB,
queue depths from the broker.

Labels carry endpoint names, stages and statuses only, never a patient or image identifier.
Under gunicorn with several workers set PROMETHEUS_MULTIPROC_DIR (multiprocess mode).
With MAMMOSEARCH_METRICS_TOKEN set, a scrape must send `Authorization: Bearer <token>`
(Prometheus: `authorization: {credentials_file: ...}`); unset, /metrics is open, for a
deployment that keeps it off the public network instead (docs/operations.md).
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from flask import Blueprint, Flask, abort, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.wrappers import Response

from mammosearch.config import Settings
from mammosearch.db.models import EmbeddingSpace, ImageEmbedding
from mammosearch.jobs.status import image_status_counts, ingestion_lag
from mammosearch.jobs.work_queue import WorkQueue
from mammosearch.pipeline import claims
from web.access import public

SEARCH_STAGE_SECONDS = Histogram(
    "mammosearch_search_stage_seconds",
    "Time spent in each search stage (embed, index, join, total).",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
HTTP_REQUESTS = Counter(
    "mammosearch_http_requests_total",
    "HTTP requests by endpoint name, method and status code.",
    ["endpoint", "method", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "mammosearch_http_request_seconds",
    "HTTP request latency by endpoint name.",
    ["endpoint"],
)
SEARCH_STAGES = ("embed", "index", "join", "total")

bp = Blueprint("metrics", __name__)


def observe_search_timing(timing_ms: Mapping[str, float]) -> None:
    for stage in SEARCH_STAGES:
        if stage in timing_ms and timing_ms[stage] is not None:
            SEARCH_STAGE_SECONDS.labels(stage=stage).observe(float(timing_ms[stage]) / 1000.0)


class IngestionCollector(Collector):
    """Read on every scrape: images per status, ingestion lag, vectors per space, index bytes."""

    def __init__(
        self, sessions: sessionmaker[Session], index_dir: Path, settings: Settings | None = None
    ) -> None:
        self.sessions = sessions
        self.index_dir = index_dir
        self.settings = settings  # for the indexes' health (none: not exported)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        images = GaugeMetricFamily(
            "mammosearch_images", "Images by pipeline status.", labels=["status"]
        )
        lag = GaugeMetricFamily(
            "mammosearch_ingestion_lag_seconds",
            "Age of the oldest pending image; 0 when none waits.",
        )
        vectors = GaugeMetricFamily(
            "mammosearch_index_vectors",
            "Indexed vectors per embedding space.",
            labels=["space_id", "backbone"],
        )
        with self.sessions() as session:
            for status, count in image_status_counts(session).items():
                if status != "total":
                    images.add_metric([status], count)
            lag.add_metric([], ingestion_lag(session)["oldest_pending_age_s"] or 0.0)
            per_space = session.execute(
                select(EmbeddingSpace.id, EmbeddingSpace.backbone, func.count())
                .join(ImageEmbedding, ImageEmbedding.space_id == EmbeddingSpace.id)
                .where(ImageEmbedding.indexed.is_(True))
                .group_by(EmbeddingSpace.id, EmbeddingSpace.backbone)
            ).all()
            for space_id, backbone, count in per_space:
                vectors.add_metric([str(space_id), backbone], count)
            repairing, missing = self._index_health(session)
            abandoned = GaugeMetricFamily(
                "mammosearch_claims_abandoned",
                "Claimed images nobody holds (their process died); the sweep, or the next"
                " ingest, embed or serve without a broker, hands them out again.",
            )
            lease_s = self.settings.claim_lease_s if self.settings else claims.DEFAULT_LEASE_S
            abandoned.add_metric([], len(claims.abandoned(session, lease_s)))
        yield images
        yield abandoned
        yield lag
        yield vectors
        yield repairing
        yield missing
        yield self._index_bytes()
        yield from self._tuned_search()

    def _index_health(self, session: Session) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        """Per active space and metric: 1 while its index cannot serve all the database lists
        (search answers 503), and how many indexed images it is short of."""
        from mammosearch.pipeline.index_health import serving_health

        labels = ["space_id", "backbone", "metric"]
        repairing = GaugeMetricFamily(
            "mammosearch_index_repairing",
            "1 while the index cannot serve every image the database lists as indexed"
            " (searches answer 503 until it is rebuilt from the database).",
            labels=labels,
        )
        missing = GaugeMetricFamily(
            "mammosearch_index_missing_vectors",
            "Images the database lists as indexed that the index does not serve.",
            labels=labels,
        )
        for health in serving_health(session, self.settings) if self.settings else ():
            keys = [str(health.space_id), health.backbone, health.metric]
            repairing.add_metric(keys, 0 if health.whole else 1)
            missing.add_metric(keys, health.missing)
        return repairing, missing

    def _index_bytes(self) -> GaugeMetricFamily:
        index_bytes = GaugeMetricFamily(
            "mammosearch_index_bytes", "Bytes on disk per index directory.", labels=["index"]
        )
        if self.index_dir.is_dir():
            for index_root in sorted(p for p in self.index_dir.iterdir() if p.is_dir()):
                size = sum(f.stat().st_size for f in index_root.rglob("*") if f.is_file())
                index_bytes.add_metric([index_root.name], size)
        return index_bytes

    def _tuned_search(self) -> Iterator[GaugeMetricFamily]:
        """Per sealed ANN segment: its tuned efSearch / nprobe and the recall@10 it measured,
        and the values tuned for filtered search per share allowed."""
        from mammosearch.index.manifest import read_manifest

        labels = ["index", "metric", "segment"]
        parameter = GaugeMetricFamily(
            "mammosearch_index_search_parameter",
            "efSearch (HNSW) or nprobe (IVF) tuned at sealing for the recall floor.",
            labels=[*labels, "parameter"],
        )
        recall = GaugeMetricFamily(
            "mammosearch_index_tuned_recall_at_10",
            "Recall@10 against exact search measured with the tuned parameter.",
            labels=labels,
        )
        filtered = GaugeMetricFamily(
            "mammosearch_index_filtered_search_parameter",
            "efSearch (HNSW) or nprobe (IVF) tuned at sealing for filtered search, per share"
            " of the segment allowed (absent where exact comparison was the cheaper side).",
            labels=[*labels, "parameter", "fraction"],
        )
        if self.index_dir.is_dir():
            for manifest_path in sorted(self.index_dir.glob("*/*/manifest.json")):
                manifest = read_manifest(manifest_path) or {}
                index_name = manifest_path.parent.parent.name
                for entry in manifest.get("segments", []):
                    tuned = entry.get("search") or {}
                    keys = [index_name, str(manifest.get("metric")), entry["file"]]
                    for name in ("ef_search", "nprobe"):
                        if name in tuned:
                            parameter.add_metric([*keys, name], tuned[name])
                        for band in tuned.get("filtered", ()):
                            if band.get(name) is not None:
                                filtered.add_metric(
                                    [*keys, name, f"{band['fraction']:g}"], band[name]
                                )
                    if "recall@10" in tuned:
                        recall.add_metric(keys, tuned["recall@10"])
        yield parameter
        yield recall
        yield filtered


class QueueDepthCollector(Collector):
    """Read on every scrape: tasks waiting per Celery queue (nothing without a broker)."""

    def __init__(self, queue: WorkQueue) -> None:
        self.queue = queue

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "mammosearch_queue_depth", "Tasks waiting per Celery queue.", labels=["queue"]
        )
        for queue, waiting in self.queue.depths()["queues"].items():
            depth.add_metric([queue], waiting)
        yield depth


def _check_token() -> None:
    """With a metrics token configured, only a scraper that sends it may read /metrics."""
    token = current_app.config.get("METRICS_TOKEN")
    if not token:
        return
    sent = request.headers.get("Authorization", "")
    scheme, _, credentials = sent.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        credentials.strip().encode(), str(token).encode()
    ):
        abort(Response(
            "metrics: send Authorization: Bearer <MAMMOSEARCH_METRICS_TOKEN>\n", status=401,
            mimetype="text/plain", headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        ))  # fmt: skip


@bp.get("/metrics")
@public
def scrape() -> Response:
    from web.configuration import settings, work_queue

    _check_token()

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        process_registry = CollectorRegistry()
        # prometheus_client leaves this constructor unannotated
        multiprocess.MultiProcessCollector(process_registry)  # type: ignore[no-untyped-call]
    else:
        process_registry = REGISTRY
    database_registry = CollectorRegistry(auto_describe=False)
    database_registry.register(
        IngestionCollector(
            current_app.extensions["mammosearch_sessions"], settings().index_dir, settings()
        )
    )
    database_registry.register(QueueDepthCollector(work_queue()))
    body = generate_latest(process_registry) + generate_latest(database_registry)
    return Response(body, mimetype=CONTENT_TYPE_LATEST)


def _start_timer() -> None:
    g.request_started = time.perf_counter()


def _count_request(response: Response) -> Response:
    endpoint = request.endpoint or "unmatched"
    HTTP_REQUESTS.labels(endpoint, request.method, str(response.status_code)).inc()
    started = g.get("request_started")
    if started is not None:
        HTTP_REQUEST_SECONDS.labels(endpoint).observe(time.perf_counter() - started)
    return response


def init_app(app: Flask) -> None:
    # The token may come as a Flask override (tests) or from the settings.
    app.config.setdefault("METRICS_TOKEN", app.extensions["mammosearch_settings"].metrics_token)
    app.before_request(_start_timer)
    app.after_request(_count_request)
    app.register_blueprint(bp)
