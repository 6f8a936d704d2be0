#!/usr/bin/env bash
# Installs the outside tools pubcrypt's tests run, when missing:
#
#   kcat     Debian's Kafka command-line client (librdkafka). The end-to-end tests
#            (internal/e2e) read the topics with it, as an admin of the broker would, to
#            prove that no plaintext is there.
#   jq       the JSON processor; cmd/pubcrypt's TestOwnDataThroughJQ pipes
#            `pubcrypt consume --output json` through it, as the README does.
#   java     for Google's Pub/Sub emulator (Debian: default-jre-headless). The emulator
#            itself comes with the Google Cloud CLI (package google-cloud-cli-pubsub-emulator
#            from Google's apt repository); it is installed here only when apt can find it.
#   fauxqs   the SQS/SNS emulator (npm, FAUXQS_VERSION below; 2.x needs Node >= 22.5),
#            installed with npm into ${PUBCRYPT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pubcrypt}/node,
#            where internal/devbrokers looks for it. Needs Node.js >= 20 and npm.
#
# Idempotent and quiet: does nothing when everything is there. Installs with apt (Debian
# 12); as root directly, otherwise through sudo. Runs `apt-get update` only when a package
# cannot be found in the current package lists.
set -euo pipefail

FAUXQS_VERSION=1.9.2

die() {
  echo "install-test-tools: $*" >&2
  exit 1
}

pubsub_emulator_present() {
  local root
  for root in "$(gcloud info --format='value(installation.sdk_root)' 2>/dev/null || true)" \
    /usr/lib/google-cloud-sdk /usr/share/google-cloud-sdk; do
    [ -n "$root" ] && [ -x "$root/platform/pubsub-emulator/bin/cloud-pubsub-emulator" ] && return 0
  done
  return 1
}

# --- apt packages --------------------------------------------------------------------
missing=()
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
command -v jq >/dev/null 2>&1 || missing+=(jq)
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
emulator_pkg=()
if [ -z "${PUBCRYPT_PUBSUB_EMULATOR:-}" ] && ! pubsub_emulator_present; then
  emulator_pkg=(google-cloud-cli-pubsub-emulator)
fi

if [ ${#missing[@]} -gt 0 ] || [ ${#emulator_pkg[@]} -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 ||
    die "apt-get not found; install ${missing[*]} ${emulator_pkg[*]} with your package manager"
  SUDO=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 ||
      die "not root and no sudo; install ${missing[*]} ${emulator_pkg[*]} as root (apt-get install -y ...)"
    SUDO=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt_install() {
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1
  }
  updated=
  install_pkgs() {
    [ $# -gt 0 ] || return 0
    apt_install "$@" && return 0
    if [ -z "$updated" ]; then
      "${SUDO[@]}" apt-get update -qq >/dev/null
      updated=1
      apt_install "$@" && return 0
    fi
    return 1
  }
  if ! install_pkgs "${missing[@]}"; then
    # Once more with output, so the reason shows.
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
      die "could not install ${missing[*]}"
  fi
  for tool in "${missing[@]}"; do
    [ "$tool" = default-jre-headless ] && tool=java
    command -v "$tool" >/dev/null 2>&1 || die "$tool still not on PATH after install"
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "install-test-tools: installed ${missing[*]}" >&2
  fi
  if [ ${#emulator_pkg[@]} -gt 0 ]; then
    install_pkgs "${emulator_pkg[@]}" && pubsub_emulator_present ||
      die "Google Pub/Sub emulator not found and apt cannot install google-cloud-cli-pubsub-emulator:
  add Google's Cloud SDK apt repository (https://cloud.google.com/sdk/docs/install#deb) and rerun,
  or run 'gcloud components install pubsub-emulator', or set PUBCRYPT_PUBSUB_EMULATOR to the launcher"
    echo "install-test-tools: installed google-cloud-cli-pubsub-emulator" >&2
  fi
fi

# --- fauxqs (npm) --------------------------------------------------------------------
cache="${PUBCRYPT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pubcrypt}"
node_dir="$cache/node"
installed=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$node_dir/node_modules/fauxqs/package.json" 2>/dev/null | head -1 || true)
if [ "$installed" != "$FAUXQS_VERSION" ]; then
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 ||
    die "node and npm are needed for fauxqs (Node.js >= 20; Debian 12's nodejs is 18: use NodeSource's 20.x)"
  node_major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$node_major" -ge 20 ] || die "fauxqs $FAUXQS_VERSION needs Node.js >= 20, found $(node --version)"
  mkdir -p "$node_dir"
  [ -f "$node_dir/package.json" ] || echo '{"private": true}' >"$node_dir/package.json"
  npm install --prefix "$node_dir" --save-exact --no-audit --no-fund --ignore-scripts \
    --loglevel=error "fauxqs@$FAUXQS_VERSION" >/dev/null ||
    die "npm install fauxqs@$FAUXQS_VERSION into $node_dir failed"
  echo "install-test-tools: installed fauxqs $FAUXQS_VERSION into $node_dir" >&2
fi
