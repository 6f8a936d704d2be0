#!/usr/bin/env bash
# Installs the outside tools pubcrypt's end-to-end tests (internal/e2e) run, when missing:
#
#   kcat  Debian's Kafka command-line client (librdkafka). The tests read the topics with
#         it, as an admin of the broker would, to prove that no plaintext is there.
#
# Idempotent and quiet: does nothing when the tools are already on PATH. Installs with apt
# (Debian 12); as root directly, otherwise through sudo. Runs `apt-get update` only when
# the package cannot be found in the current package lists.
set -euo pipefail

missing=()
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-tools: apt-get not found; install ${missing[*]} with your package manager" >&2
  exit 1
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "install-test-tools: not root and no sudo; install ${missing[*]} as root (apt-get install -y ${missing[*]})" >&2
    exit 1
  fi
  SUDO=(sudo)
fi

export DEBIAN_FRONTEND=noninteractive
apt_install() {
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1
}
if ! apt_install; then
  "${SUDO[@]}" apt-get update -qq >/dev/null
  if ! apt_install; then
    # Once more with output, so the reason shows.
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 || {
      echo "install-test-tools: could not install ${missing[*]}" >&2
      exit 1
    }
  fi
fi

for tool in "${missing[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "install-test-tools: $tool still not on PATH after install" >&2; exit 1; }
done
echo "install-test-tools: installed ${missing[*]}" >&2
