#!/usr/bin/env bash
# The README's first command: set this clone up (Redis, PostgreSQL, the virtual environment .venv
# with pulsetrace[demo,instrumentations,health]) and run `pulsetrace demo` from .venv.
#   bash scripts/demo.sh [--duration 30s] ...     (arguments go to `pulsetrace demo`)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh demo
export VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/pulsetrace demo "$@"
