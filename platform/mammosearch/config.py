"""One settings object, read from the environment (and nothing else).

Each setting is declared once, in `Settings`: its default, and the environment variable it
is read from. A value that does not parse is refused with the variable's name, e.g.
`MAMMOSEARCH_INDEX_SEGMENT_SIZE: 'abc' is not an integer`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from mammosearch.vocabulary import DISTANCE_METRICS, RANKINGS

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}


class SettingError(ValueError):
    """An environment variable holds a value its setting cannot take."""


def _text(raw: str) -> str:
    return raw


def _integer(raw: str) -> int:
    try:
        return int(raw.replace("_", ""))
    except ValueError:
        raise SettingError("is not an integer") from None


def _number(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise SettingError("is not a number") from None


def _flag(raw: str) -> bool:
    word = raw.strip().lower()
    if word in TRUE_WORDS | FALSE_WORDS:
        return word in TRUE_WORDS
    raise SettingError(f"is not one of {sorted(TRUE_WORDS | FALSE_WORDS)}")


def _path(raw: str) -> Path:
    return Path(raw).expanduser()


def _words(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _paths(raw: str) -> tuple[Path, ...]:
    return tuple(Path(part).expanduser() for part in _words(raw))


def _upper_words(raw: str) -> tuple[str, ...]:
    return tuple(word.upper() for word in _words(raw))


def _ranking(raw: str) -> str:
    if raw not in RANKINGS:
        raise SettingError(f"is not one of {list(RANKINGS)}")
    return raw


def _from(variable: str, default: Any, parse: Callable[[str], Any] = _text) -> Any:
    """A setting read from `variable` (unset or empty: `default`), parsed by `parse`."""
    return field(default=default, metadata={"env": variable, "parse": parse})


@dataclass(frozen=True)
class Settings:
    """Every setting of the product; `.env.example` names each environment variable."""

    data_dir: Path = _from("MAMMOSEARCH_DATA_DIR", Path("var"), _path)
    # Empty: SQLite in DATA_DIR/mammosearch.sqlite3 (the embedded default).
    database_url: str = _from("DATABASE_URL", "")
    # None: no broker, tasks run in the calling process.
    celery_broker_url: str | None = _from("CELERY_BROKER_URL", None)
    celery_result_backend: str | None = _from("CELERY_RESULT_BACKEND", None)  # None: broker
    redis_url: str | None = _from("REDIS_URL", None)  # None: the broker, when it is Redis
    backbone: str = _from("MAMMOSEARCH_BACKBONE", "auto")
    weights_path: Path | None = _from("MAMMOSEARCH_WEIGHTS", None, _path)
    allow_random_weights: bool = _from("MAMMOSEARCH_ALLOW_RANDOM_WEIGHTS", False, _flag)
    embed_batch_size: int = _from("MAMMOSEARCH_EMBED_BATCH_SIZE", 32, _integer)
    embed_runtime: str = _from("MAMMOSEARCH_EMBED_RUNTIME", "onnx")
    # What runs an ONNX model: "auto" (int8 on OpenVINO, fp32 on ONNX Runtime), "onnxruntime"
    # or "openvino".
    onnx_engine: str = _from("MAMMOSEARCH_ONNX_ENGINE", "auto")
    index_metrics: tuple[str, ...] = _from("MAMMOSEARCH_INDEX_METRICS", DISTANCE_METRICS, _words)
    # "auto": exact while small, then HNSW32, then IVF-PQ with re-ranking (index/factory_choice.py)
    index_factory: str = _from("MAMMOSEARCH_INDEX_FACTORY", "auto")
    # Vectors gathered in exact Flat deltas before they are merged into the main index.
    index_segment_size: int = _from("MAMMOSEARCH_INDEX_SEGMENT_SIZE", 50_000, _integer)
    # How results are ordered (mammosearch/search/ranking.py): "consensus" puts the ten nearest that
    # agree with their vote first; "similarity" is nearest first. A request may choose.
    ranking: str = _from("MAMMOSEARCH_RANKING", "consensus", _ranking)
    birads_rule: str = _from("MAMMOSEARCH_BIRADS_RULE", "max")
    max_image_pixels: int = _from("MAMMOSEARCH_MAX_IMAGE_PIXELS", 100_000_000, _integer)
    max_upload_bytes: int = _from("MAMMOSEARCH_MAX_UPLOAD_BYTES", 50 * 1024 * 1024, _integer)
    # One file a watch folder may read.
    max_ingest_file_bytes: int = _from(
        "MAMMOSEARCH_MAX_INGEST_FILE_BYTES", 512 * 1024 * 1024, _integer
    )
    # Query pixels all web requests decode at once.
    decode_budget_pixels: int = _from("MAMMOSEARCH_DECODE_BUDGET_PIXELS", 400_000_000, _integer)
    # DICOM Modality values taken.
    accepted_modalities: tuple[str, ...] = _from(
        "MAMMOSEARCH_ACCEPTED_MODALITIES", ("MG",), _upper_words
    )
    # None: a random key kept in DATA_DIR/secret_key.
    secret_key: str | None = _from("MAMMOSEARCH_SECRET_KEY", None)
    # None: /metrics is open; else a scrape must send `Authorization: Bearer <token>`.
    metrics_token: str | None = _from("MAMMOSEARCH_METRICS_TOKEN", None)
    # A browser session ends after this long unused.
    session_idle_minutes: float = _from("MAMMOSEARCH_SESSION_IDLE_MINUTES", 30.0, _number)
    log_json: bool = _from("MAMMOSEARCH_LOG_JSON", False, _flag)
    log_level: str = _from("MAMMOSEARCH_LOG_LEVEL", "INFO")
    evaluation_schedule_s: float = _from("MAMMOSEARCH_EVALUATION_SCHEDULE_S", 86400.0, _number)
    reconcile_schedule_s: float = _from("MAMMOSEARCH_RECONCILE_SCHEDULE_S", 30.0, _number)
    claim_lease_s: float = _from("MAMMOSEARCH_CLAIM_LEASE_S", 30.0, _number)
    task_visibility_timeout_s: float = _from(
        "MAMMOSEARCH_TASK_VISIBILITY_TIMEOUT_S", 3600.0, _number
    )
    watch_dirs: tuple[Path, ...] = _from("MAMMOSEARCH_WATCH_DIRS", (), _paths)
    watch_schedule_s: float = _from("MAMMOSEARCH_WATCH_SCHEDULE_S", 30.0, _number)
    orthanc_url: str | None = _from("MAMMOSEARCH_ORTHANC_URL", None)
    orthanc_schedule_s: float = _from("MAMMOSEARCH_ORTHANC_SCHEDULE_S", 10.0, _number)
    # The archive's DICOMweb root (QIDO-RS/WADO-RS); None: ORTHANC_URL + "/dicom-web".
    dicomweb_url: str | None = _from("MAMMOSEARCH_DICOMWEB_URL", None)
    # A study's page in the PACS viewer (OHIF, Orthanc).
    archive_viewer_url: str | None = _from("MAMMOSEARCH_ARCHIVE_VIEWER_URL", None)
    # Train the archive's own model in the background and switch to it when it wins by more
    # than the fold noise (mammosearch/train/auto.py); 0 turns it off.
    auto_train: bool = _from("MAMMOSEARCH_AUTO_TRAIN", True, _flag)
    auto_train_min_images: int = _from("MAMMOSEARCH_AUTO_TRAIN_MIN_IMAGES", 200, _integer)
    auto_train_min_classes: int = _from("MAMMOSEARCH_AUTO_TRAIN_MIN_CLASSES", 2, _integer)
    # Retrain once the labelled archive has grown by this fraction since the last training.
    auto_train_growth: float = _from("MAMMOSEARCH_AUTO_TRAIN_GROWTH", 0.25, _number)
    # The smallest out-of-fold P@5 gain over the base space that counts as a win (the fold
    # spread counts instead when it is larger).
    auto_train_min_gain: float = _from("MAMMOSEARCH_AUTO_TRAIN_MIN_GAIN", 0.015, _number)
    auto_train_check_s: float = _from("MAMMOSEARCH_AUTO_TRAIN_CHECK_S", 600.0, _number)
    regression_threshold: float = _from("MAMMOSEARCH_REGRESSION_THRESHOLD", 0.05, _number)
    regression_webhook_url: str | None = _from("MAMMOSEARCH_REGRESSION_WEBHOOK_URL", None)

    @property
    def layout(self) -> DataLayout:
        """Where each thing lives under the data directory."""
        return DataLayout(self.data_dir)

    @property
    def images_dir(self) -> Path:
        return self.layout.images_dir

    @property
    def index_dir(self) -> Path:
        return self.layout.index_dir

    @property
    def reports_dir(self) -> Path:
        return self.layout.reports_dir

    @property
    def tasks_in_process(self) -> bool:
        """No broker configured: the pipeline runs in the calling process."""
        return not self.celery_broker_url

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)


# Settings field -> the environment variable it is read from.
ENVIRONMENT_VARIABLES: dict[str, str] = {f.name: f.metadata["env"] for f in fields(Settings)}
SETTING_NAMES = list(ENVIRONMENT_VARIABLES)


def space_index_dir(index_dir: Path, space_id: int) -> Path:
    """One embedding space's folder of indexes (its metrics and its writer lock)."""
    return Path(index_dir) / f"space-{space_id}"


@dataclass(frozen=True)
class DataLayout:
    """The data directory's layout, named once: every path under DATA_DIR is built here."""

    data_dir: Path

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
    def models_dir(self) -> Path:
        """Models and the state of the jobs that make them (training, quantizing)."""
        return self.data_dir / "models"

    @property
    def onnx_dir(self) -> Path:
        """Exported ONNX models and their engine measurements."""
        return self.models_dir / "onnx"

    @property
    def registry_dir(self) -> Path:
        """Registered trained models: registry/<name>/."""
        return self.models_dir / "registry"

    @property
    def trained_dir(self) -> Path:
        """Training runs' output folders: trained/<name>/ (and <name>.work/ while running)."""
        return self.models_dir / "trained"

    def space_dir(self, space_id: int) -> Path:
        return space_index_dir(self.index_dir, space_id)

    def index_root(self, space_id: int, metric: str) -> Path:
        """Where one space's index of one metric keeps its manifest and segments."""
        return self.space_dir(space_id) / metric


def settings_from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from `MAMMOSEARCH_*`, `DATABASE_URL`, `CELERY_*` and `REDIS_URL`.

    Raises SettingError naming the variable and the value when one does not parse.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in fields(Settings):
        raw = environ.get(setting.metadata["env"], "")
        if raw == "":
            continue  # unset or empty: the default
        try:
            values[setting.name] = setting.metadata["parse"](raw)
        except SettingError as error:
            raise SettingError(f"{setting.metadata['env']}: {raw!r} {error}") from None
    data_dir = values.get("data_dir", Settings.data_dir).absolute()
    broker = values.get("celery_broker_url")
    return Settings(
        **{
            **values,
            "data_dir": data_dir,
            "database_url": values.get("database_url")
            or f"sqlite:///{data_dir / 'mammosearch.sqlite3'}",
            "celery_result_backend": values.get("celery_result_backend", broker),
            "redis_url": values.get(
                "redis_url", broker if broker and broker.startswith("redis") else None
            ),
        }
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests call `get_settings.cache_clear()` after changing env."""
    return settings_from_env()
