"""`models quantize` started from the Models page: one record of the last run, for the page.

The build and the check are `quantize_archive.quantize_and_check`'s (the CLI's); this keeps
what a person who clicked needs to see afterwards (running, kept or not and why, or the
error) in DATA_DIR/models/quantize.json, replaced atomically.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mammosearch.config import Settings
from mammosearch.durable.atomic_files import read_json_record, write_json_record

log = logging.getLogger(__name__)

PRECISIONS = ("int8", "bf16")
CALIBRATION_IMAGES = 64
CHECK_IMAGES = 2000
"""`mammosearch models quantize`'s defaults."""


def state_path(settings: Settings) -> Path:
    return settings.layout.models_dir / "quantize.json"


def read_state(settings: Settings) -> dict[str, Any]:
    """The last run's record; `{}` before the first."""
    return read_json_record(state_path(settings))


def _write(settings: Settings, record: dict[str, Any]) -> dict[str, Any]:
    return write_json_record(state_path(settings), record)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def run_quantize(settings: Settings, backbone: str, precision: str) -> dict[str, Any]:
    """Build `backbone`'s `precision` variant and check it on this archive; the record says
    whether it was kept (then `BACKBONE:PRECISION` can be activated) or why not."""
    from mammosearch.pipeline.quantize_archive import quantize_and_check

    record: dict[str, Any] = {
        "backbone": backbone, "precision": precision, "variant": f"{backbone}:{precision}",
        "state": "running", "started_at": _now(),
    }  # fmt: skip
    _write(settings, record)
    try:
        _path, check = quantize_and_check(
            settings.with_overrides(backbone=backbone), CALIBRATION_IMAGES, CHECK_IMAGES,
            precision,
        )  # fmt: skip
    except Exception as error:  # noqa: BLE001 - the page must say why, whatever it was
        log.exception("quantizing %s to %s failed", backbone, precision)
        return _write(settings, {**record, "state": "failed", "error": str(error),
                                 "finished_at": _now()})  # fmt: skip
    return _write(settings, {**record, "state": "done", "kept": check.kept,
                             "summary": check.summary(), "finished_at": _now()})  # fmt: skip
