#!/usr/bin/env bash
# Installs everything pulsetrace's demo and tests need on a fresh Debian machine:
# Redis, PostgreSQL and Chromium from Debian's packages (when missing), then the
# project itself with its dev extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need+=(postgresql)
fi
if [ "${PULSETRACE_SETUP:-full}" = "full" ]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v wrk >/dev/null 2>&1 || need+=(wrk)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup: please install: ${need[*]} (needs root: sudo apt-get install -y ${need[*]})" >&2
  fi
fi
# PostgreSQL refuses to run as root: the tests start it as this system user.
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  useradd --system --home /var/lib/postgresql --shell /bin/bash postgres
fi

extras="${PULSETRACE_EXTRAS:-dev}"
python3 -m pip install --quiet --disable-pip-version-check -e ".[${extras}]"
