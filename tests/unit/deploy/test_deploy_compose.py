"""docker-compose.yml: valid against the Compose Specification, and wired the safe way round."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml
from check_jsonschema.builtin_schemas import get_builtin_schema

ROOT = Path(__file__).resolve().parents[3]
COMPOSE_FILES = [ROOT / "docker-compose.yml", ROOT / "deploy" / "docker-compose.gpu.yml"]
APPLICATION_SERVICES = [
    "web",
    "embed-worker",
    "index-writer",
    "evaluate-worker",
    "train-worker",
    "beat",
]


@pytest.fixture(scope="module")
def compose() -> dict:
    """The parsed root compose file (anchors and merge keys resolved)."""
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    """The compose services by name."""
    return compose["services"]


@pytest.mark.parametrize("compose_path", COMPOSE_FILES, ids=lambda path: path.name)
def test_compose_file_matches_the_compose_specification(compose_path: Path) -> None:
    """Both compose files validate against check-jsonschema's vendored compose-spec."""
    schema = get_builtin_schema("vendor.compose-spec")
    validator = jsonschema.Draft202012Validator(schema)
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(yaml.safe_load(compose_path.read_text()))
    ]
    assert not errors, f"{compose_path.name}:\n" + "\n".join(errors)


def test_the_core_stack_is_complete(services: dict) -> None:
    """Database, broker, migration, web, workers, index writer and beat all exist."""
    assert {"db", "redis", "migrate", *APPLICATION_SERVICES} <= set(services)


@pytest.mark.parametrize("service_name", APPLICATION_SERVICES)
def test_application_services_wait_for_the_migration_and_a_healthy_database(
    services: dict, service_name: str
) -> None:
    """No app process starts before the schema is current and the database answers."""
    depends_on = services[service_name]["depends_on"]
    assert depends_on["migrate"]["condition"] == "service_completed_successfully"
    assert depends_on["db"]["condition"] == "service_healthy"
    assert depends_on["redis"]["condition"] == "service_healthy"


def test_the_migration_runs_once_after_the_database_is_healthy(services: dict) -> None:
    """migrate is one-shot (never restarted) and waits for a healthy db only."""
    migrate = services["migrate"]
    assert migrate["command"] == ["mammosearch", "db", "upgrade"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"db": {"condition": "service_healthy"}}


def test_index_writer_and_beat_run_exactly_once(services: dict) -> None:
    """Two index writers would race on the manifest; two beats would run jobs twice."""
    assert services["index-writer"]["deploy"]["replicas"] == 1
    assert services["index-writer"]["command"][-2:] == ["--concurrency", "1"]
    assert services["beat"]["deploy"]["replicas"] == 1


def test_images_indexes_and_database_live_on_named_volumes(compose: dict) -> None:
    """Data survives `docker compose down`: every store is a named volume."""
    services = compose["services"]
    named_volumes = set(compose["volumes"])
    app_mounts = {mount.split(":")[1]: mount.split(":")[0] for mount in services["web"]["volumes"]}
    assert app_mounts["/var/lib/mammosearch/images"] in named_volumes
    assert app_mounts["/var/lib/mammosearch/indexes"] in named_volumes
    db_source, db_target = services["db"]["volumes"][0].split(":")[:2]
    assert db_source in named_volumes and db_target == "/var/lib/postgresql/data"
    for service_name in APPLICATION_SERVICES:
        assert services[service_name]["volumes"] == services["web"]["volumes"], service_name


@pytest.mark.parametrize(
    "service_name", ["db", "redis", "web", "embed-worker", "index-writer", "evaluate-worker"]
)
def test_long_running_services_have_health_checks_and_restart(
    services: dict, service_name: str
) -> None:
    """Health checks gate dependants; restart brings a crashed process back."""
    service = services[service_name]
    assert service["healthcheck"]["test"], service_name
    assert service["restart"] == "unless-stopped"


def test_web_health_check_uses_the_liveness_endpoint(services: dict) -> None:
    """The container is healthy when /healthz answers (the image has no curl)."""
    assert any("/healthz" in part for part in services["web"]["healthcheck"]["test"])


@pytest.mark.parametrize(
    ("service_name", "profile"),
    [("orthanc", "archive"), ("flower", "monitoring"), ("dicom-listener", "dicom")],
)
def test_optional_services_are_behind_profiles(
    services: dict, service_name: str, profile: str
) -> None:
    """Orthanc, Flower and the DICOM listener start only when their profile is asked for."""
    assert services[service_name]["profiles"] == [profile]


def test_secrets_are_required_not_defaulted(compose: dict) -> None:
    """Compose refuses to start without a database password and a Flask secret key."""
    text = (ROOT / "docker-compose.yml").read_text()
    assert "${POSTGRES_PASSWORD:?" in text
    assert "${MAMMOSEARCH_SECRET_KEY:?" in text


def test_redis_keeps_an_append_only_file_on_its_volume(services: dict) -> None:
    """AOF is the deployment default: queued work survives a Redis restart."""
    redis_service = services["redis"]
    command = redis_service["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data") for volume in redis_service["volumes"])
