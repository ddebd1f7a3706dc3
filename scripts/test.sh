#!/usr/bin/env bash
# Set up a fresh machine and run the whole test suite (the soak test excepted).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python3 -m mypy  # strict, on agent/, instrumentation/, healthchecks/ (pyproject.toml)
exec python3 -m pytest -m "not slow" -p no:cacheprovider -q "$@"
