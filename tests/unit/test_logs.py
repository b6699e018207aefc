"""Logs carry no patient identifiers, in plain and JSON form."""

from __future__ import annotations

import io
import json
import logging

from mammosearch.config import Settings
from mammosearch.logs import PatientIdentifierFilter, configure_logging, scrub


def test_file_names_uids_and_patient_fields_are_scrubbed() -> None:
    text = scrub("P12_L_CM_CC.jpg rejected; SOP 1.2.840.10008.5.1.4.1.1.2 patient_id=P12")
    assert "P12" not in text and "1.2.840" not in text
    assert "<image-file>" in text and "<dicom-uid>" in text


def test_json_log_lines_are_parseable_and_scrubbed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, getattr(root, "_mammosearch_configured", False))
    try:
        root.handlers.clear()
        root._mammosearch_configured = False  # type: ignore[attr-defined]
        configure_logging(Settings(data_dir=tmp_path, log_json=True), force=True)
        stream = io.StringIO()
        root.handlers[-1].setStream(stream)  # type: ignore[attr-defined]
        logging.getLogger("mammosearch.test").warning(
            "image %s from %s failed", 7, "P3_R_DM_MLO.jpg", extra={"patient_id": "P3"}
        )
        line = json.loads(stream.getvalue().strip().splitlines()[-1])
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        root._mammosearch_configured = saved[2]  # type: ignore[attr-defined]
    assert line["level"] == "WARNING" and "image 7" in line["message"]
    assert "P3" not in json.dumps(line)


def test_exception_text_is_scrubbed() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, None)
    try:
        raise ValueError("P44_L_CM_MLO.jpg: corrupt")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    PatientIdentifierFilter().filter(record)
    assert "P44" not in record.exc_text


def test_extras_such_as_celery_task_data_are_scrubbed() -> None:
    """Celery logs a task's return value as the `data` extra, which JSON lines print in full."""
    record = logging.LogRecord("celery.app.trace", logging.INFO, __file__, 1, "done", None, None)
    record.data = {"return_value": "{'failed': {7: 'P9_R_CM_CC.jpg: cannot decode'}}", "args": [1]}
    PatientIdentifierFilter().filter(record)
    assert "P9_" not in json.dumps(record.data) and record.data["args"] == [1]
