#!/usr/bin/env bash
# Create .venv at the repository root and install the project (idempotent: a stamp of
# pyproject.toml skips the install when nothing changed).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
stamp=".venv/.mammosearch-installed${extras:+-$extras}"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "installing mammosearch${extras:+[$extras]} into .venv (torch is large: a few minutes the first time)"
  # torch first and pinned: pip resolves it from this machine's local wheel store.
  .venv/bin/pip install -q "torch==2.14.1" "torchvision==0.29.1"
  .venv/bin/pip install -q -e ".${extras:+[$extras]}"
  echo "$want" > "$stamp"
fi
