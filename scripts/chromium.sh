#!/usr/bin/env bash
# The browser tests' Chromium: Debian's `chromium` package, installed from Debian when missing and
# this runs as root with apt-get (as scripts/services.sh does for PostgreSQL). Idempotent; never fails
# the caller: without it, the browser tests say why they cannot run.
set -u
if command -v chromium >/dev/null 2>&1 || [ -x /usr/lib/chromium/chromium ]; then
  echo "chromium: present ($(chromium --version 2>/dev/null | head -n1))"
elif [ "${MOMENTUM_NO_CHROMIUM_INSTALL:-}" = 1 ]; then
  echo "chromium: absent (MOMENTUM_NO_CHROMIUM_INSTALL=1); the browser tests cannot run"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  mkdir -p var/log
  echo "chromium: installing Debian's chromium package for the browser tests"
  if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >var/log/apt-chromium.log 2>&1; then
    echo "chromium: installed"
  else
    echo "chromium: apt-get install chromium failed (see var/log/apt-chromium.log); the browser tests cannot run" >&2
  fi
else
  echo "chromium: absent (apt-get install chromium as root); the browser tests cannot run"
fi
exit 0
