#!/usr/bin/env bash
# Set up and run the whole test suite (real PostgreSQL, Redis, Celery, Orthanc, Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-packages.sh
bash scripts/services.sh
bash scripts/setup-venv.sh test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Types: strict on platform/mammosearch, web/ and workers/ ([tool.mypy] in pyproject.toml).
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
