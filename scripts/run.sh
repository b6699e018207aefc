#!/usr/bin/env bash
# Set up and run Mammosearch on embedded defaults: SQLite in ./var, tasks in-process,
# indexes in ./var/indexes. Imports a CDD-CESM folder (argument, default
# ../shared/data/cdd-cesm-dev when present), then serves http://127.0.0.1:${PORT:-5000}.
# `serve` also trains the archive's own model in the background once it holds enough
# labelled images, and switches search to it when it wins (MAMMOSEARCH_AUTO_TRAIN=0: off).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
export MAMMOSEARCH_DATA_DIR="${MAMMOSEARCH_DATA_DIR:-$PWD/var}"
ms=.venv/bin/mammosearch
$ms db upgrade
dataset="${1:-../shared/data/cdd-cesm-dev}"
if [ -d "$dataset" ]; then
  $ms ingest cdd-cesm "$dataset"
else
  echo "no CDD-CESM folder at $dataset: starting with an empty archive (pass a folder to import one)"
fi
$ms users bootstrap
$ms status
exec $ms serve --host "${HOST:-127.0.0.1}" --port "${PORT:-5000}"
