#!/usr/bin/env bash
# Do the dependencies resolve with the pips our users actually have, not just the newest?
#
#   bash scripts/check_resolution.sh            # pip 24.0 (what the python:3.11/3.12 images ship)
#   bash scripts/check_resolution.sh 23.2.1 24.0
#
# pip before 25.1 (resolvelib 1.0) can give up with ResolutionImpossible where a newer pip
# finds a solution: it happened with open OpenTelemetry ranges, when the newest patch train lacked
# one instrumentation package. For each pip version: a throwaway virtual environment, the wheel
# built by that pip, then `pip install --dry-run --ignore-installed` of the wheel with the extras
# users install and with [dev]. Nothing is installed anywhere. Exit status 1 when one fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PULSETRACE_PYTHON:-python3}"
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(24.0)
# the README's and the Dockerfile's installs, every user extra at once, and the development set
extra_sets=("" "instrumentations" "instrumentations,aws,grpc" "instrumentations,grpc,aws,health,demo" "dev")

work="$(mktemp -d "${TMPDIR:-/tmp}/pulsetrace-resolve.XXXXXX")"
trap 'rm -rf "$work"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

status=0
for version in "${versions[@]}"; do
  venv="$work/pip-$version"
  "$PY" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet "pip==$version"
  "$venv/bin/python" -m pip wheel --quiet --no-deps --wheel-dir "$venv/wheel" . >"$venv/wheel.log" 2>&1 \
    || { echo "pip $version: building the wheel failed:" >&2; tail -20 "$venv/wheel.log" >&2; exit 1; }
  wheel="$(ls "$venv"/wheel/pulsetrace-*.whl)"
  for extras in "${extra_sets[@]}"; do
    spec="$wheel${extras:+[$extras]}"
    label="pulsetrace${extras:+[$extras]}"
    start=$SECONDS
    if "$venv/bin/python" -m pip install --dry-run --ignore-installed --quiet --report "$venv/report.json" \
        "$spec" >"$venv/resolve.log" 2>&1; then
      count="$("$venv/bin/python" -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["install"]))' \
        "$venv/report.json")"
      echo "pip $version: $label resolves ($count distributions, $((SECONDS - start)) s)"
    else
      echo "pip $version: $label does NOT resolve:" >&2
      grep -v "is ignored: it is neither a file nor a directory" "$venv/resolve.log" | tail -25 >&2
      status=1
    fi
  done
done
exit $status
