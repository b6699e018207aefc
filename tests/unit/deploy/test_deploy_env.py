"""`.env.example` names every setting that config.settings_from_env reads, each with a comment."""

from __future__ import annotations

import re
from pathlib import Path

from mammosearch import config

ROOT = Path(__file__).resolve().parents[3]


def setting_environment_variables() -> dict[str, str]:
    """Settings field -> the environment variable settings_from_env reads it from."""
    return dict(config.ENVIRONMENT_VARIABLES)


def documented_variables() -> dict[str, str]:
    """Variable -> the comment block just above it in .env.example."""
    documented = {}
    comment_lines: list[str] = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.startswith("#"):
            comment_lines.append(line)
        elif match := re.match(r"^([A-Z][A-Z0-9_]*)=", line):
            documented[match.group(1)] = " ".join(comment_lines)
            # Consecutive variables may share one comment (e.g. two ports).
        else:
            comment_lines = []
    return documented


def test_every_setting_is_read_from_the_environment() -> None:
    """Each Settings field has an environment variable, and settings_from_env reads it."""
    mapping = setting_environment_variables()
    missing = set(config.SETTING_NAMES) - set(mapping)
    assert not missing, f"settings_from_env reads no variable for: {sorted(missing)}"


def test_every_setting_is_named_in_the_env_example_with_a_comment() -> None:
    """Operators find every knob, with what it does, in .env.example."""
    documented = documented_variables()
    mapping = setting_environment_variables()
    absent = sorted(variable for variable in mapping.values() if variable not in documented)
    assert not absent, f".env.example lacks: {absent}"
    uncommented = sorted(variable for variable in mapping.values() if not documented[variable])
    assert not uncommented, f".env.example has no comment above: {uncommented}"


def test_the_env_example_holds_no_real_secret() -> None:
    """The secret key and passwords are blank in the example, so nobody ships them."""
    documented_lines = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if re.match(r"^[A-Z][A-Z0-9_]*=", line)
    )
    for variable in ("MAMMOSEARCH_SECRET_KEY", "POSTGRES_PASSWORD", "ORTHANC_PASSWORD"):
        assert documented_lines[variable] == "", variable


def test_each_setting_is_read_from_its_variable_and_a_bad_value_names_it() -> None:
    """Every variable reaches its field; a value that does not parse names the variable."""
    import pytest

    segments = config.settings_from_env({"MAMMOSEARCH_INDEX_SEGMENT_SIZE": "1_000"})
    assert segments.index_segment_size == 1000
    assert config.settings_from_env({"MAMMOSEARCH_LOG_JSON": "yes"}).log_json is True
    assert config.settings_from_env({"MAMMOSEARCH_WATCH_DIRS": "/a, /b"}).watch_dirs == (
        Path("/a"),
        Path("/b"),
    )
    defaults = config.settings_from_env({})
    assert defaults.database_url.startswith("sqlite:///") and defaults.data_dir.is_absolute()
    broker = config.settings_from_env({"CELERY_BROKER_URL": "redis://h:1/0"})
    assert broker.celery_result_backend == broker.redis_url == "redis://h:1/0"
    not_an_integer = r"^MAMMOSEARCH_INDEX_SEGMENT_SIZE: 'abc' is not an integer$"
    with pytest.raises(config.SettingError, match=not_an_integer):
        config.settings_from_env({"MAMMOSEARCH_INDEX_SEGMENT_SIZE": "abc"})
    not_a_number = r"^MAMMOSEARCH_CLAIM_LEASE_S: 'soon' is not a number$"
    with pytest.raises(config.SettingError, match=not_a_number):
        config.settings_from_env({"MAMMOSEARCH_CLAIM_LEASE_S": "soon"})
    with pytest.raises(config.SettingError, match="MAMMOSEARCH_LOG_JSON: 'maybe'"):
        config.settings_from_env({"MAMMOSEARCH_LOG_JSON": "maybe"})


# Variables the deployment itself reads (compose, the image build, gunicorn, libraries),
# not the product's settings: each with the place that reads it.
DEPLOYMENT_VARIABLES = {
    "DICOM_PORT": "docker-compose.yml",
    "WEB_PORT": "docker-compose.yml",
    "ORTHANC_DICOM_PORT": "docker-compose.yml",
    "ORTHANC_IMAGE": "docker-compose.yml",
    "ORTHANC_PASSWORD": "docker-compose.yml",
    "POSTGRES_PASSWORD": "docker-compose.yml",
    "MAMMOSEARCH_IMAGE": "docker-compose.yml",
    "FLOWER_BASIC_AUTH": "docker-compose.yml",
    "TORCH_VARIANT": "Dockerfile",
    "GUNICORN_WORKERS": "deploy/gunicorn.conf.py",
    "GUNICORN_FORWARDED_ALLOW_IPS": "deploy/gunicorn.conf.py",
    "MAMMOSEARCH_FLASK_PROXY_FIX_HOPS": "web/configuration.py",
    "MAMMOSEARCH_FLASK_SESSION_COOKIE_SECURE": "web/configuration.py",
    "MPLCONFIGDIR": "matplotlib",
    "TORCH_HOME": "torch",
    "XDG_CACHE_HOME": "libraries",
}


def test_every_variable_the_examples_set_is_read_by_something() -> None:
    """The other way round: .env.example, the ConfigMap and the Secret set nothing that no
    setting reads, except the deployment's own variables, each found where it is read."""
    import yaml

    k8s = ROOT / "deploy" / "k8s"
    named = set(documented_variables())
    named |= set(next(yaml.safe_load_all((k8s / "configmap.yaml").read_text()))["data"])
    named |= set(next(yaml.safe_load_all((k8s / "secret.example.yaml").read_text()))["stringData"])
    unread = sorted(named - set(config.ENVIRONMENT_VARIABLES.values()) - set(DEPLOYMENT_VARIABLES))
    assert not unread, f"set but read by no setting: {unread}"
    for variable, reader in DEPLOYMENT_VARIABLES.items():
        if "/" in reader or reader in {"docker-compose.yml", "Dockerfile"}:
            assert variable in (ROOT / reader).read_text(), f"{reader} does not read {variable}"
