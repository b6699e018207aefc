"""`.env.example` names every setting that config.settings_from_env reads, each with a comment."""

from __future__ import annotations

import re
from pathlib import Path

from mammosearch import config

ROOT = Path(__file__).resolve().parents[2]


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
        Path("/a"), Path("/b"),
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
