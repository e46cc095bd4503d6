#!/usr/bin/env bash
# The two entry points of the README, for a fresh machine:
#   ./run.sh book [--profile smoke|cpu|paper] [--chapters …] [--workers N]   set up, execute every chapter, build _build/html
#   ./run.sh test [pytest args]                                set up, run the test suite
# Both create the virtual environment .venv in the repository on first use and reuse it afterwards
# (reinstalling only when pyproject.toml or the lock file changes).  They install the exact versions of
# requirements-lock.txt (Python 3.11, Linux x86_64, the CPU machines) when it is there, else the
# ranges of pyproject.toml.  For maintainers:
#   ./run.sh lock                                              refresh requirements-lock.txt from pyproject.toml
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
VENV=.venv
LOCK=requirements-lock.txt
LOCKED=$( [ -f "$LOCK" ] && echo "$LOCK" || true )
STAMP="$VENV/.installed-$(cat pyproject.toml $LOCKED | sha256sum | cut -c1-16)"

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "[run.sh] creating $VENV with $($PY --version)"
    "$PY" -m venv "$VENV"
  fi
  if [ ! -f "$STAMP" ]; then
    echo "[run.sh] installing ncmse and its dependencies into $VENV (torch is large: a few minutes)"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    if [ -n "$LOCKED" ]; then
      "$VENV/bin/python" -m pip install --quiet -r "$LOCK"
      "$VENV/bin/python" -m pip install --quiet --no-deps -e .
    else
      "$VENV/bin/python" -m pip install --quiet -e '.[dev]'
    fi
    rm -f "$VENV"/.installed-*
    touch "$STAMP"
  fi
  # Offline data shipped beside the checkout (tests, CI); users download into data/ instead.
  if [ -z "${NCMSE_DATA_ROOT:-}" ] && [ -d ../shared/data ]; then
    export NCMSE_DATA_ROOT="$(cd ../shared/data && pwd)"
  fi
}

# The browser test (tests/test_site.py) drives Debian's Chromium; install it when it is missing.
ensure_chromium() {
  if command -v chromium >/dev/null 2>&1 || [ -n "${NCMSE_CHROMIUM:-}" ] || [ "${NCMSE_SKIP_BROWSER:-}" = 1 ]; then
    return
  fi
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[run.sh] installing Debian's chromium for the browser test"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "[run.sh] chromium is missing: install it (apt-get install chromium) or set NCMSE_SKIP_BROWSER=1" >&2
  fi
}

# requirements-lock.txt: every package of pyproject.toml with all its extras, pinned, resolved by pip-tools
# through pip's configured indexes for this venv's Python (3.11 for the committed lock).
lock() {
  setup
  "$VENV/bin/python" -m pip install --quiet 'pip-tools>=7.4,<8'
  CUSTOM_COMPILE_COMMAND="./run.sh lock" "$VENV/bin/pip-compile" --quiet --upgrade --all-extras --strip-extras \
    --no-emit-index-url --no-emit-find-links --output-file "$LOCK" pyproject.toml
  echo "[run.sh] wrote $LOCK for $("$VENV/bin/python" --version); ./run.sh test checks it against pyproject.toml"
}

cmd=${1:-}
shift || true
case "$cmd" in
  book) setup; exec "$VENV/bin/python" -m ncmse book "$@" ;;
  test) setup; ensure_chromium; exec "$VENV/bin/python" -m pytest "$@" ;;
  lock) lock ;;
  *) echo "usage: ./run.sh book [--profile smoke|cpu|paper] [--chapters ENTRY …] [--workers N] | ./run.sh test [pytest args] | ./run.sh lock" >&2; exit 2 ;;
esac
