#!/usr/bin/env bash
# Set up a fresh machine and run the pulsetrace demo.
set -euo pipefail
cd "$(dirname "$0")/.."
PULSETRACE_SETUP=minimal bash scripts/setup.sh
exec pulsetrace demo "$@"
