#!/usr/bin/env bash
# Set up a fresh machine and run the whole test suite (the soak test excepted).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec python3 -m pytest -m "not slow" -p no:cacheprovider -q "$@"
