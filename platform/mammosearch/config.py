"""One settings object, read from the environment (and nothing else)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from pathlib import Path


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


@dataclass(frozen=True)
class Settings:
    """Every setting of the product; `.env.example` names each environment variable."""

    data_dir: Path = Path("var")
    database_url: str = ""
    celery_broker_url: str | None = None
    celery_result_backend: str | None = None
    redis_url: str | None = None
    backbone: str = "auto"
    weights_path: Path | None = None
    allow_random_weights: bool = False
    embed_batch_size: int = 32
    embed_runtime: str = "onnx"
    index_metrics: tuple[str, ...] = ("l2", "cosine")
    index_factory: str = "Flat"
    index_segment_size: int = 50_000
    birads_rule: str = "max"
    max_image_pixels: int = 100_000_000
    max_upload_bytes: int = 50 * 1024 * 1024
    max_ingest_file_bytes: int = 512 * 1024 * 1024  # one file a watch folder may read
    decode_budget_pixels: int = 400_000_000  # query pixels all web requests decode at once
    accepted_modalities: tuple[str, ...] = ("MG",)  # DICOM Modality values taken
    secret_key: str | None = None  # None: a random key kept in DATA_DIR/secret_key
    log_json: bool = False
    log_level: str = "INFO"
    evaluation_schedule_s: float = 24 * 3600.0
    reconcile_schedule_s: float = 30.0
    claim_lease_s: float = 30.0
    task_visibility_timeout_s: float = 3600.0
    watch_dirs: tuple[Path, ...] = ()
    watch_schedule_s: float = 30.0
    orthanc_url: str | None = None
    orthanc_schedule_s: float = 10.0
    archive_viewer_url: str | None = None  # a study's page in the PACS viewer (OHIF, Orthanc)
    regression_threshold: float = 0.05
    regression_webhook_url: str | None = None

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "indexes"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @property
    def tasks_in_process(self) -> bool:
        """No broker configured: the pipeline runs in the calling process."""
        return not self.celery_broker_url

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def settings_from_env() -> Settings:
    """Build settings from `MAMMOSEARCH_*`, `DATABASE_URL` and `CELERY_*` variables."""
    data_dir = Path(_env("MAMMOSEARCH_DATA_DIR", "var")).expanduser().absolute()
    database_url = _env("DATABASE_URL") or f"sqlite:///{data_dir / 'mammosearch.sqlite3'}"
    weights = _env("MAMMOSEARCH_WEIGHTS")
    broker = _env("CELERY_BROKER_URL")
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        celery_broker_url=broker,
        celery_result_backend=_env("CELERY_RESULT_BACKEND", broker),
        redis_url=_env("REDIS_URL", broker if broker and broker.startswith("redis") else None),
        backbone=_env("MAMMOSEARCH_BACKBONE", "auto"),
        weights_path=Path(weights) if weights else None,
        allow_random_weights=_flag(_env("MAMMOSEARCH_ALLOW_RANDOM_WEIGHTS")),
        embed_batch_size=int(_env("MAMMOSEARCH_EMBED_BATCH_SIZE", "32")),
        embed_runtime=_env("MAMMOSEARCH_EMBED_RUNTIME", "onnx"),
        index_metrics=_split(_env("MAMMOSEARCH_INDEX_METRICS", "l2,cosine")),
        index_factory=_env("MAMMOSEARCH_INDEX_FACTORY", "Flat"),
        index_segment_size=int(_env("MAMMOSEARCH_INDEX_SEGMENT_SIZE", "50000")),
        birads_rule=_env("MAMMOSEARCH_BIRADS_RULE", "max"),
        max_image_pixels=int(_env("MAMMOSEARCH_MAX_IMAGE_PIXELS", "100000000")),
        max_upload_bytes=int(_env("MAMMOSEARCH_MAX_UPLOAD_BYTES", str(50 * 1024 * 1024))),
        max_ingest_file_bytes=int(
            _env("MAMMOSEARCH_MAX_INGEST_FILE_BYTES", str(512 * 1024 * 1024))
        ),
        decode_budget_pixels=int(_env("MAMMOSEARCH_DECODE_BUDGET_PIXELS", "400000000")),
        accepted_modalities=tuple(
            m.upper() for m in _split(_env("MAMMOSEARCH_ACCEPTED_MODALITIES", "MG"))
        ),
        secret_key=_env("MAMMOSEARCH_SECRET_KEY"),
        log_json=_flag(_env("MAMMOSEARCH_LOG_JSON")),
        log_level=_env("MAMMOSEARCH_LOG_LEVEL", "INFO"),
        evaluation_schedule_s=float(_env("MAMMOSEARCH_EVALUATION_SCHEDULE_S", "86400")),
        reconcile_schedule_s=float(_env("MAMMOSEARCH_RECONCILE_SCHEDULE_S", "30")),
        claim_lease_s=float(_env("MAMMOSEARCH_CLAIM_LEASE_S", "30")),
        task_visibility_timeout_s=float(_env("MAMMOSEARCH_TASK_VISIBILITY_TIMEOUT_S", "3600")),
        watch_dirs=tuple(Path(p) for p in _split(_env("MAMMOSEARCH_WATCH_DIRS"))),
        watch_schedule_s=float(_env("MAMMOSEARCH_WATCH_SCHEDULE_S", "30")),
        orthanc_url=_env("MAMMOSEARCH_ORTHANC_URL"),
        orthanc_schedule_s=float(_env("MAMMOSEARCH_ORTHANC_SCHEDULE_S", "10")),
        archive_viewer_url=_env("MAMMOSEARCH_ARCHIVE_VIEWER_URL"),
        regression_threshold=float(_env("MAMMOSEARCH_REGRESSION_THRESHOLD", "0.05")),
        regression_webhook_url=_env("MAMMOSEARCH_REGRESSION_WEBHOOK_URL"),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests call `get_settings.cache_clear()` after changing env."""
    return settings_from_env()


SETTING_NAMES = [f.name for f in fields(Settings)]
