#!/usr/bin/env bash
# Create .venv at the repository root and install the project (idempotent: a stamp of
# pyproject.toml skips the install when nothing changed).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
pip_install() {
  # This machine's pip configuration names local package folders that may be absent; pip
  # warns about each one on every call. Hide those lines, keep everything else.
  set +o pipefail
  .venv/bin/pip install -q "$@" 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; }
  local status=${PIPESTATUS[0]}
  set -o pipefail
  return "$status"
}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
  pip_install --upgrade pip
fi
stamp=".venv/.mammosearch-installed${extras:+-$extras}"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "installing mammosearch${extras:+[$extras]} into .venv (torch is large: a few minutes the first time)"
  # torch first and pinned: pip resolves it from this machine's local wheel store.
  pip_install "torch==2.14.1" "torchvision==0.29.1"
  pip_install -e ".${extras:+[$extras]}"
  echo "$want" > "$stamp"
fi
