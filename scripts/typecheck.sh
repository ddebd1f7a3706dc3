#!/usr/bin/env bash
# mypy --strict on the `pulsetrace` namespace. The repository keeps agent/, instrumentation/ and
# healthchecks/ as separate folders that the install maps into one package; mypy does not follow
# that mapping, so it checks a tree of symbolic links laid out the way the package is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
tree=build/typecheck/pulsetrace
rm -rf build/typecheck
mkdir -p "$tree"
for entry in agent/*; do
  ln -s "$PWD/$entry" "$tree/$(basename "$entry")"
done
ln -s "$PWD/instrumentation" "$tree/instrumentation"
ln -s "$PWD/healthchecks" "$tree/healthchecks"
exec "$PY" -m mypy "$@"
