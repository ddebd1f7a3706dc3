#!/usr/bin/env bash
# Prepares this clone for the demo or the tests, on a fresh Debian 12 / Ubuntu 24.04 machine:
#
#   bash scripts/setup.sh demo    # Redis, PostgreSQL; pulsetrace[demo,instrumentations,health]
#   bash scripts/setup.sh test    # the above, Chromium, wrk; pulsetrace[dev]
#
# Everything Python goes into the virtual environment .venv in the repository, never into the
# system interpreter: Debian 12 and Ubuntu 24.04 mark theirs "externally managed" (PEP 668) and
# pip refuses to install there. Debian packages are installed only when running as root
# (otherwise the missing ones are listed with the command to install them). Safe to run again:
# the virtual environment is reused and the install is skipped while pyproject.toml is unchanged.
#
# PULSETRACE_PYTHON picks the interpreter that creates .venv (default python3, >= 3.11);
# PULSETRACE_EXTRAS overrides the extras; uv, when on PATH or in .venv, speeds the install up
# (PULSETRACE_INSTALLER=pip to use pip anyway).
set -euo pipefail
cd "$(dirname "$0")/.."

purpose="${1:-test}"
case "$purpose" in
  demo) packages=(redis-server postgresql); extras="demo,instrumentations,health" ;;
  test) packages=(redis-server postgresql chromium chromium-driver wrk); extras="dev" ;;
  *) echo "usage: scripts/setup.sh [demo|test]" >&2; exit 2 ;;
esac
extras="${PULSETRACE_EXTRAS:-$extras}"
PY="${PULSETRACE_PYTHON:-python3}"
VENV=.venv
is_root() { [ "$(id -u)" = 0 ]; }
say() { echo "setup: $*" >&2; }
die() { say "$*"; exit 1; }

# -- Debian packages -----------------------------------------------------------------------------
have() {  # is the program behind this Debian package already there?
  case "$1" in
    postgresql) command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 ;;
    redis-server) command -v redis-server >/dev/null 2>&1 ;;
    chromium) command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 ;;
    chromium-driver) command -v chromedriver >/dev/null 2>&1 ;;
    python3-venv) "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1 ;;
    *) command -v "$1" >/dev/null 2>&1 ;;
  esac
}
apt_updated=""
apt_install() {  # as root: install those of the packages this distribution has
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "$apt_updated" ]; then
    apt-get update -qq || say "apt-get update failed; trying with the package lists there are"
    apt_updated=1
  fi
  local available=() pkg
  for pkg in "$@"; do
    if apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [^(]'; then
      available+=("$pkg")
    else
      # Ubuntu ships Chromium only as a snap, which does not run in containers.
      say "no Debian package '$pkg' here: the tests that need it will fail (tests/agent/views/test_servicemap_html.py for Chromium)"
    fi
  done
  if [ ${#available[@]} -eq 0 ]; then return 0; fi
  say "apt-get install ${available[*]}"
  apt-get install -y -qq --no-install-recommends "${available[@]}" >/dev/null
}

missing=()
for pkg in "${packages[@]}"; do
  have "$pkg" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if is_root; then
    apt_install "${missing[@]}"
  else
    say "missing system packages: ${missing[*]} (install them with: sudo apt-get install -y ${missing[*]})"
  fi
fi
# PostgreSQL refuses to run as root: the tests and the demo start it as this system user.
if is_root && ! id postgres >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

# -- the virtual environment ---------------------------------------------------------------------
command -v "$PY" >/dev/null 2>&1 || die "no $PY: install Python >= 3.11 (Debian/Ubuntu: apt-get install -y python3 python3-venv)"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "pulsetrace needs Python >= 3.11, $PY is $("$PY" -c 'import platform; print(platform.python_version())')"

ensure_venv_support() {  # Debian and Ubuntu ship venv's ensurepip separately, in python3-venv
  have python3-venv && return 0
  if is_root; then
    local minor
    minor="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    apt_install python3-venv "python$minor-venv"
  fi
  have python3-venv || die "python3 -m venv is unavailable: install it with: sudo apt-get install -y python3-venv"
}

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  ensure_venv_support
  rm -rf "$VENV"  # none, broken, or too old a Python
  say "creating the virtual environment $VENV ($("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])'))"
  if ! "$PY" -m venv "$VENV"; then
    rm -rf "$VENV"
    die "could not create $VENV with $PY -m venv"
  fi
elif ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  # a venv made without pip (python3-venv was missing, or uv made it): give it one
  ensure_venv_support
  "$VENV/bin/python" -m ensurepip --upgrade --default-pip >/dev/null || die "$VENV has no pip and ensurepip failed"
fi
export VIRTUAL_ENV="$PWD/$VENV" PIP_DISABLE_PIP_VERSION_CHECK=1

# -- the project, editable, with its extras -------------------------------------------------------
# Skipped when the stamp says these extras (pulsetrace[dev] includes the others) were installed from
# this very pyproject.toml and the editable install still points at this clone.
root="$PWD"
stamp="$VENV/.pulsetrace-setup"
digest="$(sha256sum pyproject.toml | cut -d' ' -f1)"
expand_extras() {  # the extras and those they pull in through pulsetrace[...], one a line
  "$VENV/bin/python" - "$1" <<'PY'
import re, sys, tomllib
declared = tomllib.load(open("pyproject.toml", "rb"))["project"].get("optional-dependencies", {})
todo, seen = [e for e in sys.argv[1].split(",") if e], set()
while todo:
    extra = todo.pop()
    if extra not in seen:
        seen.add(extra)
        for req in declared.get(extra, []):
            m = re.fullmatch(r"pulsetrace\[([^\]]+)\]", req.replace(" ", ""))
            todo += m.group(1).split(",") if m else []
print("\n".join(sorted(seen)))
PY
}
up_to_date() {
  [ -f "$stamp" ] && [ "$(head -n1 "$stamp")" = "$digest" ] || return 1
  local extra
  for extra in ${extras//,/ }; do
    tail -n +2 "$stamp" | grep -qxF "$extra" || return 1
  done
  (cd / && "$root/$VENV/bin/python" -c \
    'import sys, pulsetrace; sys.exit(not pulsetrace.__file__.startswith(sys.argv[1]))' "$root/agent/") >/dev/null 2>&1
}
if up_to_date; then
  say "pulsetrace[$extras] already installed in $VENV"
else
  uv=""
  if [ "${PULSETRACE_INSTALLER:-}" != pip ]; then
    uv="$(command -v uv || true)"
    if [ -z "$uv" ] && [ -x "$VENV/bin/uv" ]; then uv="$VENV/bin/uv"; fi
  fi
  if [ -n "$uv" ]; then
    say "installing pulsetrace[$extras] (editable) into $VENV with uv"
    "$uv" pip install --quiet --python "$VENV/bin/python" -e ".[$extras]"
  else
    say "installing pulsetrace[$extras] (editable) into $VENV with $("$VENV/bin/python" -m pip --version | cut -d' ' -f1-2)"
    "$VENV/bin/python" -m pip install --quiet -e ".[$extras]"
  fi
  previous=""
  if [ -f "$stamp" ] && [ "$(head -n1 "$stamp")" = "$digest" ]; then previous="$(tail -n +2 "$stamp")"; fi
  { echo "$digest"; { echo "$previous"; expand_extras "$extras"; } | grep -v '^$' | sort -u; } >"$stamp"
fi
