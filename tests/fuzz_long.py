"""The fuzz tests with large budgets: the readers (bytes, mutated files, sheets) and the API.

    PYTHONPATH=platform:. .venv/bin/python -m tests.fuzz_long --examples 2000 \
        --api-examples 300 [--seed 1] [--only readers|sheet|api]

The same properties as tests/unit/ingest/test_reader_fuzz.py and tests/unit/web/test_api_fuzz.py,
but every example's outcome is counted instead of stopping at the first failure. Prints one line
per target (examples, accepted/2xx, rejected/4xx, failures) and the first failures in full;
exits 1 when any example failed. Random unless --seed is given (readers and sheet).
It lives with the tests, not in bench/: it runs their properties and measures no target.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, seed, settings

from tests.fuzz_inputs import BYTE_READERS, parse_fuzz_sheet, read_or_reject, sheet_rows

SHOWN_FAILURES = 3


class Tally:
    """Outcomes of one target: counts per outcome, and the first few failures' tracebacks."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.counts: collections.Counter[str] = collections.Counter()
        self.failures: list[str] = []
        self.started = time.perf_counter()
        self.seconds = 0.0

    def done(self) -> Tally:
        self.seconds = time.perf_counter() - self.started
        return self

    def add(self, outcome: str, failure: BaseException | None = None) -> None:
        self.counts[outcome] += 1
        if failure is not None:
            self.counts["failures"] += 1
            if len(self.failures) < SHOWN_FAILURES:
                self.failures.append("".join(traceback.format_exception(failure))[-3000:])

    def line(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "examples": sum(n for name, n in self.counts.items() if name != "failures"),
            **dict(sorted(self.counts.items())),
            "failures": self.counts["failures"],
            "seconds": round(self.seconds, 1),
        }


def budget(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


def fuzz_reader(reader: str, examples: int, random_seed: int | None) -> Tally:
    tally = Tally(reader)

    @budget(examples)
    @given(content=BYTE_READERS[reader][2]())
    def read(content: bytes) -> None:
        try:
            tally.add(read_or_reject(reader, content))
        except BaseException as failure:  # noqa: BLE001 - counted (a decoder's panic too)
            if isinstance(failure, KeyboardInterrupt):
                raise
            tally.add("failed", failure)

    (seed(random_seed)(read) if random_seed is not None else read)()
    return tally.done()


def fuzz_readers(examples: int, random_seed: int | None) -> list[Tally]:
    return [fuzz_reader(reader, examples, random_seed) for reader in sorted(BYTE_READERS)]


def fuzz_sheet(examples: int, random_seed: int | None) -> list[Tally]:
    tally = Tally("parse_annotation_sheet")
    with tempfile.TemporaryDirectory() as folder:

        @budget(examples)
        @given(rows=sheet_rows())
        def read(rows: list[list[object]]) -> None:
            try:
                result = parse_fuzz_sheet(Path(folder) / "fuzz.xlsx", rows)
                tally.add("with problems" if result.problems else "clean")
            except BaseException as failure:  # noqa: BLE001
                if isinstance(failure, KeyboardInterrupt):
                    raise
                tally.add("failed", failure)

        (seed(random_seed)(read) if random_seed is not None else read)()
    return [tally.done()]


def fuzz_api(examples: int) -> list[Tally]:
    """Every operation of /api/v1/openapi.json against the six-image synthetic archive
    (always random: --seed is for the readers)."""
    import schemathesis

    from mammosearch.access.users import create_api_token
    from mammosearch.db import migrate
    from mammosearch.db.session import make_session_factory
    from mammosearch.pipeline.process import process_pending
    from tests.factories import make_image, make_patient, make_user
    from tests.unit.web.test_api_fuzz import OPERATIONS, fuzz_operation
    from tests.unit.web_support import app_config, make_settings
    from web import create_app

    root = Path(tempfile.mkdtemp(prefix="bench-fuzz-"))
    database_url = f"sqlite:///{root / 'mammosearch.sqlite3'}"
    migrate.upgrade(database_url)
    current = make_settings(root / "data", database_url)
    session = make_session_factory(database_url)()
    patient_a, patient_b = make_patient(session, "A"), make_patient(session, "B")
    for image_seed in range(6):
        patient = patient_a if image_seed < 3 else patient_b
        make_image(session, current, patient, seed=image_seed, birads=2 + 2 * (image_seed // 3))
    token = create_api_token(session, make_user(session, "fuzzer", "admin"))
    session.commit()
    session.close()
    process_pending(current)
    app = create_app(app_config(current))
    api_schema = schemathesis.openapi.from_wsgi(
        "/api/v1/openapi.json", app, headers={"Authorization": f"Bearer {token}"}
    )
    tallies = []
    for path, method in OPERATIONS:
        tally = Tally(f"{method} {path}")

        def record(failure: BaseException | None, tally: Tally = tally) -> None:
            tally.add("ok" if failure is None else "failed", failure)

        fuzz_operation(api_schema, path, method, token, examples, record=record, derandomize=False)
        tallies.append(tally.done())
    return tallies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=2000, help="per reader and the sheet")
    parser.add_argument("--api-examples", type=int, default=300, help="per API operation")
    parser.add_argument(
        "--seed", type=int, default=None, help="repeat a readers/sheet run (default: random)"
    )
    parser.add_argument("--only", choices=["readers", "sheet", "api"], default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # pydicom and Pillow warn on most damaged inputs
    import logging

    logging.disable(logging.WARNING)  # ... and log them; the counts are what is reported
    tallies: list[Tally] = []
    if args.only in (None, "readers"):
        tallies += fuzz_readers(args.examples, args.seed)
    if args.only in (None, "sheet"):
        tallies += fuzz_sheet(args.examples, args.seed)
    if args.only in (None, "api"):
        tallies += fuzz_api(args.api_examples)
    for tally in tallies:
        print(json.dumps(tally.line()))
    failed = [tally for tally in tallies if tally.failures]
    for tally in failed:
        for failure in tally.failures:
            print(f"--- {tally.target} ---\n{failure}", file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
