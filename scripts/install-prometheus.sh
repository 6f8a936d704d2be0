#!/usr/bin/env bash
# Installs Debian's Prometheus server (package prometheus, 2.42.0 on Debian 12) when it is
# missing and prints the path of its binary. cmd/pubcrypt's TestPrometheusScrape runs it on
# 127.0.0.1 against a running bridge and runs promtool (same package) on a scrape.
#
# Idempotent: does nothing but print the path when the binary is there
# (PUBCRYPT_PROMETHEUS_BIN, else prometheus on PATH). Installs with apt as root, otherwise
# through sudo; runs `apt-get update` only when the package cannot be found. The package
# may enable a prometheus service (all interfaces, port 9090): the tests never use it, so
# it is stopped and disabled if it runs.
set -euo pipefail

die() {
  echo "install-prometheus: $*" >&2
  exit 1
}

if [ -n "${PUBCRYPT_PROMETHEUS_BIN:-}" ]; then
  [ -x "$PUBCRYPT_PROMETHEUS_BIN" ] || die "PUBCRYPT_PROMETHEUS_BIN=$PUBCRYPT_PROMETHEUS_BIN is not an executable"
  echo "$PUBCRYPT_PROMETHEUS_BIN"
  exit 0
fi
if bin=$(command -v prometheus 2>/dev/null) && command -v promtool >/dev/null 2>&1; then
  echo "$bin"
  exit 0
fi

command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install prometheus (with promtool) with your package manager"
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || die "not root and no sudo; install prometheus as root (apt-get install -y prometheus)"
  SUDO=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
apt_install() {
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1
}
if ! apt_install; then
  "${SUDO[@]}" apt-get update -qq >/dev/null
  apt_install || "${SUDO[@]}" apt-get install -y -q --no-install-recommends prometheus >&2 ||
    die "could not install prometheus"
fi
echo "install-prometheus: installed prometheus" >&2

# The tests start their own server on loopback; a packaged service is not theirs to keep.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  "${SUDO[@]}" systemctl disable --now prometheus >/dev/null 2>&1 || true
elif [ -x /etc/init.d/prometheus ]; then
  "${SUDO[@]}" /etc/init.d/prometheus stop >/dev/null 2>&1 || true
  command -v update-rc.d >/dev/null 2>&1 && "${SUDO[@]}" update-rc.d prometheus disable >/dev/null 2>&1 || true
fi

bin=$(command -v prometheus 2>/dev/null) || die "prometheus still not on PATH after install"
command -v promtool >/dev/null 2>&1 || die "promtool still not on PATH after install"
echo "$bin"
