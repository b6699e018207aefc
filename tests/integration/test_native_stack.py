"""The compose stack, run natively: ingest through the broker, search over HTTP, JSON logs.

Docker cannot run here, so the deployment is verified with the same processes: each
service's `command` and environment names are read from docker-compose.yml, and only what
names a container (host names, published port, volumes) is replaced by its local equivalent:
the real PostgreSQL (a throw-away database), the real Redis (a DB of its own) and one temp
data dir shared by every process, as the compose volumes are.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import requests
import yaml
from sqlalchemy import select

from bench.processes import REPO_ROOT, flush_redis, free_port, run_cli, worker_env
from mammosearch.db.models import Image
from mammosearch.db.session import session_scope
from tests.conftest import DEV_DATA, create_pg_database, drop_pg_database, needs_dev_data

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.dataset,
    pytest.mark.slow,
    needs_dev_data,
    pytest.mark.timeout(300),  # a safety net above the test's own budget; teardown still runs
]

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
SHEET_NAME = "Radiology manual annotations.xlsx"
IMAGES_FOLDER = "Subtracted images"
REDIS_URL = os.environ.get("MAMMOSEARCH_TEST_REDIS_STACK", "redis://127.0.0.1:6379/14")
LONG_RUNNING = ("web", "embed-worker", "index-writer", "beat")  # after `migrate` exits 0
PATIENTS = 4
IMAGES_PER_PATIENT = 3
K = 5
BUDGET_S = 200.0  # every wait below draws on this one budget
STOP_WAIT_S = 20.0
SEARCH_STAGES = ("embed", "index", "join", "total")
# Written by Celery straight to the console, not through logging (and naming no patient).
CELERY_CONSOLE_LINES = re.compile(r"^worker: (Warm|Cold) shutdown \(MainProcess\)$")
CDD_CESM_FILE_NAME = re.compile(r"\bP\d+_[LR]_(?:CM|DM)_(?:CC|MLO)", re.IGNORECASE)
COMPOSE_DEFAULT = re.compile(r"^\$\{(\w+):-([^}]*)\}$")


@dataclass(frozen=True)
class DevSubset:
    """A small CDD-CESM folder copied from the dev data: sheet rows and images of a few patients."""

    folder: Path
    stems: tuple[str, ...]  # e.g. P10_L_CM_CC
    patient_ids: tuple[str, ...]  # source patient ids, e.g. "10"


@dataclass
class Stack:
    """The long-running processes, each in its own process group, logging to one file each."""

    log_dir: Path
    deadline: float
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        with self.log_path(name).open("ab") as log:
            self.processes[name] = subprocess.Popen(
                argv,
                env=env,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def assert_running(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                tail = self.log_path(name).read_text(errors="replace")[-3000:]
                raise AssertionError(f"{name} exited with {process.returncode}:\n{tail}")

    def wait(self, predicate: Callable[[], bool], what: str, timeout_s: float) -> float:
        """Poll `predicate` (processes must stay up); returns the seconds it took."""
        started = time.monotonic()
        deadline = min(started + timeout_s, self.deadline)
        while True:
            self.assert_running()
            if predicate():
                return time.monotonic() - started
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {time.monotonic() - started:.0f} s: {what}")
            time.sleep(0.25)

    def stop_all(self) -> None:
        """SIGTERM every process group at once, then SIGKILL what is left after STOP_WAIT_S."""
        for process in self.processes.values():
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT_S
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait(timeout=10)
        for process in self.processes.values():  # pool children left behind by a killed parent
            _signal_group(process, signal.SIGKILL)


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def compose_services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]


def native_command(service_name: str, service: dict[str, Any]) -> list[str]:
    """The service's compose `command`, its program resolved in this virtual environment."""
    argv = [str(word) for word in service["command"]]
    program = Path(sys.executable).parent / argv[0]
    assert program.exists(), f"{service_name}: {argv[0]} is not installed in {program.parent}"
    return [str(program), *argv[1:]]


def native_environment(
    service_name: str, service: dict[str, Any], local_values: dict[str, str]
) -> dict[str, str]:
    """Every variable compose sets for the service: its `${NAME:-default}`, or the local value."""
    environment: dict[str, str] = {}
    for name, value in (service.get("environment") or {}).items():
        default = COMPOSE_DEFAULT.match(str(value))
        if default:
            environment[name] = default.group(2)
        else:
            assert name in local_values, (
                f"docker-compose.yml sets {name} for {service_name}: give it a local value here"
            )
            environment[name] = local_values[name]
    return environment


def copy_dev_subset(target: Path) -> DevSubset:
    """The first PATIENTS patients with IMAGES_PER_PATIENT subtracted images: files + sheet rows."""
    sheet = openpyxl.load_workbook(DEV_DATA / SHEET_NAME, read_only=True)
    rows = list(sheet.worksheets[0].iter_rows(values_only=True))
    header, body = rows[0], rows[1:]
    name_col, patient_col = header.index("Image_name"), header.index("Patient_ID")
    first_row_of: dict[str, tuple[Any, ...]] = {}
    for row in body:
        stem = str(row[name_col] or "").strip()
        if stem and (DEV_DATA / IMAGES_FOLDER / f"{stem}.jpg").exists():
            first_row_of.setdefault(stem, row)
    by_patient: dict[int, list[str]] = {}
    for stem, row in first_row_of.items():
        by_patient.setdefault(int(row[patient_col]), []).append(stem)
    chosen = [
        (patient, sorted(stems)[:IMAGES_PER_PATIENT])
        for patient, stems in sorted(by_patient.items())
        if len(stems) >= IMAGES_PER_PATIENT
    ][:PATIENTS]
    assert len(chosen) == PATIENTS, f"{DEV_DATA}: fewer than {PATIENTS} patients with 3 images"
    stems = tuple(stem for _, patient_stems in chosen for stem in patient_stems)

    (target / IMAGES_FOLDER).mkdir(parents=True)
    for stem in stems:
        shutil.copy2(DEV_DATA / IMAGES_FOLDER / f"{stem}.jpg", target / IMAGES_FOLDER)
    reduced = openpyxl.Workbook()
    reduced.active.append(list(header))
    for stem in stems:
        reduced.active.append(list(first_row_of[stem]))
    reduced.save(target / SHEET_NAME)
    return DevSubset(target, stems, tuple(str(patient) for patient, _ in chosen))


@pytest.fixture
def database() -> Iterator[str]:
    """A throw-away PostgreSQL database, left empty: the compose `migrate` command sets it up."""
    name, url = create_pg_database("msstack")
    yield url
    drop_pg_database(name)


@pytest.fixture
def broker() -> Iterator[str]:
    """The stack's own Redis DB, flushed before and after."""
    flush_redis(REDIS_URL)
    yield REDIS_URL
    flush_redis(REDIS_URL)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """Started processes are always stopped, whatever the test did."""
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    started = Stack(log_dir, deadline=time.monotonic() + BUDGET_S)
    try:
        yield started
    finally:
        started.stop_all()


def _json_lines_without_identifiers(stack: Stack, subset: DevSubset) -> dict[str, int]:
    """Every log line of every process is JSON (or a known Celery console line); no identifiers."""
    json_lines: dict[str, int] = {}
    for name in stack.processes:
        text = stack.log_path(name).read_text(errors="replace")
        json_lines[name] = 0
        for line in filter(None, (raw.strip() for raw in text.splitlines())):
            if CELERY_CONSOLE_LINES.match(line):
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise AssertionError(f"{name}: a log line is not JSON: {line[:300]}") from None
            assert isinstance(record, dict) and {"time", "level", "logger", "message"} <= set(
                record
            ), f"{name}: not a log record: {line[:300]}"
            for key in ("patient_id", "patient_name", "source_patient_id"):
                assert record.get(key, "<redacted>") == "<redacted>", f"{name}: {line[:300]}"
            json_lines[name] += 1
        assert json_lines[name], f"{name}: wrote no log line at all"
        leaked = CDD_CESM_FILE_NAME.search(text)
        assert leaked is None, f"{name}: a CDD-CESM file name in the log: {leaked.group(0)}"
        for patient_id in subset.patient_ids:
            mention = re.search(rf"(?i)patient\W{{0,20}}{patient_id}\b", text)
            assert mention is None, f"{name}: a source patient id in the log: {mention.group(0)}"
    return json_lines


def test_compose_services_ingest_index_and_search_natively(
    database: str, broker: str, stack: Stack, tmp_path: Path
) -> None:
    """migrate, web (gunicorn, 2 workers), embed-worker, index-writer and beat, as compose runs
    them: 12 images ingested through the broker become searchable over HTTP; health, readiness
    and metrics answer; every process logs JSON lines without patient identifiers."""
    services = compose_services()
    for name in LONG_RUNNING:  # the start-up order this test reproduces
        depends_on = services[name]["depends_on"]
        assert depends_on["migrate"]["condition"] == "service_completed_successfully", name
    subset = copy_dev_subset(tmp_path / "cdd-cesm-subset")
    data_dir = tmp_path / "data"  # the shared volumes: images, indexes, reports, models
    port = free_port()
    local_values = {
        "DATABASE_URL": database,
        "CELERY_BROKER_URL": broker,
        "CELERY_RESULT_BACKEND": broker,
        "REDIS_URL": broker,
        "MAMMOSEARCH_DATA_DIR": str(data_dir),
        "MAMMOSEARCH_SECRET_KEY": secrets.token_urlsafe(32),
        "TORCH_HOME": str(tmp_path / "models" / "torch"),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
    }
    # What the image (Dockerfile ENV) and an operator's .env add to compose's environment.
    image_and_dotenv = {
        "MAMMOSEARCH_LOG_JSON": "1",
        "PYTHONUNBUFFERED": "1",
        "MAMMOSEARCH_BACKBONE": "efficientnet-lite0",
        "MAMMOSEARCH_RECONCILE_SCHEDULE_S": "5",  # so beat sends a job within the test
        "GUNICORN_BIND": f"127.0.0.1:{port}",  # compose publishes container port 8000 instead
    }

    def env_of(service_name: str) -> dict[str, str]:
        env = worker_env(database, data_dir, broker, **image_and_dotenv)
        env.update(native_environment(service_name, services[service_name], local_values))
        return env

    cli_env = env_of("migrate")
    migrate = subprocess.run(
        native_command("migrate", services["migrate"]),
        env=cli_env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, f"migrate failed:\n{migrate.stdout}\n{migrate.stderr}"
    admin = subprocess.run(
        [
            str(Path(sys.executable).parent / "mammosearch"),
            "users",
            "create",
            "stack-admin",
            "--role",
            "admin",
            "--password-stdin",
        ],
        input="a long enough password 42\n",
        env=cli_env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert admin.returncode == 0, admin.stderr
    token = run_cli(cli_env, "users", "token", "stack-admin", timeout_s=60).strip()

    for name in LONG_RUNNING:
        stack.start(name, native_command(name, services[name]), env_of(name))
    base_url = f"http://127.0.0.1:{port}"
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token}"

    def answers(path: str) -> bool:
        try:
            return http.get(base_url + path, timeout=10).status_code == 200
        except requests.RequestException:  # refused while booting, or slow on a loaded host
            return False

    def logged(name: str, phrase: str) -> Callable[[], bool]:
        return lambda: phrase in stack.log_path(name).read_text(errors="replace")

    boot_s = stack.wait(lambda: answers("/healthz"), "web /healthz", timeout_s=120)
    for name in ("embed-worker", "index-writer"):
        stack.wait(logged(name, " ready."), f"{name} ready", timeout_s=120)

    ingest_started = time.monotonic()
    ingest_output = run_cli(
        cli_env, "ingest", "cdd-cesm", str(subset.folder), "--no-progress", timeout_s=120
    )
    assert f"enqueued {len(subset.stems)} images" in ingest_output, ingest_output

    def all_indexed() -> bool:
        status = http.get(f"{base_url}/api/v1/status", timeout=60)
        assert status.status_code == 200, status.text
        return status.json()["images"]["indexed"] == len(subset.stems)

    stack.wait(all_indexed, f"{len(subset.stems)} images indexed", timeout_s=150)
    indexed_s = time.monotonic() - ingest_started
    with session_scope(database) as session:
        image_ids = {
            name.rsplit(".", 1)[0]: image_id
            for image_id, name in session.execute(select(Image.id, Image.source_file_name))
        }
    assert set(image_ids) == set(subset.stems)

    def search(**request: Any) -> tuple[dict[str, Any], float]:
        started = time.monotonic()
        response = http.post(f"{base_url}/api/v1/search", timeout=120, **request)
        elapsed_s = time.monotonic() - started
        assert response.status_code == 200, response.text
        return response.json(), elapsed_s

    query_id = image_ids[subset.stems[0]]
    by_id, first_id_s = search(json={"image_id": query_id, "k": K})
    searchable_s = time.monotonic() - ingest_started
    id_latencies_s = [first_id_s] + [
        search(json={"image_id": query_id, "k": K})[1] for _ in range(3)
    ]
    upload_path = subset.folder / IMAGES_FOLDER / f"{subset.stems[-1]}.jpg"
    upload_latencies_s = []
    for _ in range(3):
        with upload_path.open("rb") as upload:
            # An archived file is recognised by its sha256 and its patient left out by default;
            # kept here (exclude_same_patient=0), the file's own image must rank first.
            by_upload, elapsed_s = search(
                files={"image": ("query.jpg", upload, "image/jpeg")},
                data={"k": str(K), "exclude_same_patient": "0"},
            )
        upload_latencies_s.append(elapsed_s)
    with upload_path.open("rb") as upload:
        recognised, _ = search(
            files={"image": ("query.jpg", upload, "image/jpeg")}, data={"k": "3"}
        )
    archived_as = recognised["query"]["archived_as"]
    assert archived_as["image_id"] == image_ids[subset.stems[-1]]
    assert archived_as["patient_id"] not in {hit["patient_id"] for hit in recognised["results"]}

    for body in (by_id, by_upload):
        assert len(body["results"]) == K, body
        for hit in body["results"]:
            assert hit["image_id"] in image_ids.values()
            assert hit["patient_id"] in subset.patient_ids  # joined to the metadata
            assert hit["side"] in {"L", "R"} and hit["view"] in {"CC", "MLO"}
            assert hit["birads"] is not None
    assert query_id not in {hit["image_id"] for hit in by_id["results"]}  # never itself
    assert by_upload["results"][0]["image_id"] == image_ids[subset.stems[-1]]

    stack.wait(lambda: answers("/healthz"), "web /healthz after the searches", timeout_s=60)
    ready = http.get(f"{base_url}/readyz", timeout=60)
    assert ready.status_code == 200, ready.text
    assert {"database", "broker", "index_dir"} <= set(ready.json()["checks"])
    metrics = http.get(f"{base_url}/metrics", timeout=60).text
    for stage in SEARCH_STAGES:
        assert f'mammosearch_search_stage_seconds_count{{stage="{stage}"}}' in metrics, stage
    for queue in ("ingest", "embed", "index", "evaluate", "train"):
        assert f'mammosearch_queue_depth{{queue="{queue}"}}' in metrics, queue
    assert f'mammosearch_images{{status="indexed"}} {len(subset.stems)}.0' in metrics
    assert re.search(rf"mammosearch_index_vectors{{[^}}]*}} {len(subset.stems)}\.0", metrics)
    assert re.search(r'mammosearch_index_bytes\{index="space-\d+"\} [1-9]', metrics)

    stack.wait(
        logged("embed-worker", "mammosearch.reconcile"), "beat's reconcile job run", timeout_s=30
    )
    stack.stop_all()
    json_lines = _json_lines_without_identifiers(stack, subset)
    print(
        f"\nweb up in {boot_s:.1f} s; {len(subset.stems)} images: ingest -> all indexed "
        f"{indexed_s:.1f} s, -> first search answered {searchable_s:.1f} s"
        f"\nsearch by image_id (s): {', '.join(f'{s:.3f}' for s in id_latencies_s)}"
        f"\nsearch by upload (s): {', '.join(f'{s:.3f}' for s in upload_latencies_s)}"
        f"\nserver timing of the last upload (ms): {by_upload['timing_ms']}"
        f"\nJSON log lines: {json_lines}"
    )
