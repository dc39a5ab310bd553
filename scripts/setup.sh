#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine (no Docker needed): Python venv with the pinned
# dependencies, the pinned Kafka broker jars (Maven Central), and for the test suite Chromium.
#   scripts/setup.sh          venv + Kafka jars          (used by `make demo`)
#   scripts/setup.sh --test   also Chromium + driver, and Helm (scripts/helm.sh install, needs go)   (used by `make test`)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1msetup:\033[0m %s\n' "$*"; }
die() { printf 'setup: %s\n' "$*" >&2; exit 2; }

PY=${PYTHON:-python3}
command -v "$PY" >/dev/null || die "python3 not found: install Python 3.11 (apt-get install python3 python3-venv)"
"$PY" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 13) else 1)' \
  || die "Python 3.11 or 3.12 is required, found $("$PY" -V 2>&1)"

apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing $* with apt"
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    die "missing $*: install it (apt-get install $*)"
  fi
}

if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  command -v mvn >/dev/null || apt_install maven
fi

# the venv's own tooling, pinned (a venv starts with whatever pip/setuptools the system Python bundles, old
# ones included); bump both together after `.venv/bin/pip index versions pip` / `... setuptools`
PIP_VERSION=26.3
SETUPTOOLS_VERSION=84.2.1
pin_tools() {
  .venv/bin/python -m pip install -q --disable-pip-version-check "pip==$PIP_VERSION" "setuptools==$SETUPTOOLS_VERSION" >/dev/null
}

# venv, reinstalled when pyproject.toml changes
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || { "$PY" -m venv .venv 2>/dev/null || { apt_install python3-venv; "$PY" -m venv .venv; }; }
  say "installing Python dependencies (pinned in pyproject.toml)"
  pin_tools
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
tools=$(.venv/bin/python -c 'from importlib.metadata import version as v; print(v("pip"), v("setuptools"))' 2>/dev/null || true)
if [ "$tools" != "$PIP_VERSION $SETUPTOOLS_VERSION" ]; then
  say "pinning pip $PIP_VERSION and setuptools $SETUPTOOLS_VERSION in the venv (was: ${tools:-unknown})"
  pin_tools
fi

if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
  say "Kafka broker jars: $(.venv/bin/python -m cloudarb kafka fetch)"
fi

if [ "${1:-}" = "--test" ]; then
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    apt_install chromium chromium-driver || say "chromium unavailable: browser tests will skip"
  fi
  # Helm (pinned, built from the Go module proxy into .cache/bin) for tests/test_helm.py; skipped without go
  if command -v go >/dev/null; then
    scripts/helm.sh install || say "helm build failed: the chart tests will skip"
  else
    say "go not found: the Helm chart tests will skip"
  fi
fi
say "ready"
