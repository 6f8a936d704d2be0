#!/usr/bin/env bash
# Builds pubcrypt's Vault secrets-engine plugin (vaultplugin/fpe: FF1 inside Vault, keys
# that never leave it) and prints the path of the binary.
#
# The plugin is its own Go module (the Vault sdk stays out of the main go.mod). The binary
# is cached under a hash of its sources, internal/fpe's and the two go.mod/go.sum, so an
# unchanged tree skips the build (~20-45 s on 2 cores with a warm module cache) and a
# changed one gets a new binary. Its directory holds that one file: `vault server -dev
# -dev-plugin-dir=DIR` registers every binary in DIR, so the directory is what
# internal/devvault hands to Vault.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"

NAME=pubcrypt-fpe
CACHE=${PUBCRYPT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pubcrypt}
# What goes into the binary: the non-test Go files of the plugin and internal/fpe, and the
# module files that choose the versions of everything else.
src=$(ls vaultplugin/fpe/*.go internal/fpe/*.go | grep -v '_test\.go$')
# shellcheck disable=SC2086 # the file names have no spaces
hash=$(cat $src vaultplugin/fpe/go.mod vaultplugin/fpe/go.sum go.mod go.sum | sha256sum | cut -c1-16)
BIN="$CACHE/vault-plugins/$NAME-$hash/$NAME"

if [ -x "$BIN" ]; then
  echo "$BIN"; exit 0
fi
echo "building the Vault plugin $NAME into $BIN" >&2
mkdir -p "$(dirname "$BIN")"
# Built beside the directory, not in it: a half-written file there would be registered too.
tmp="$CACHE/vault-plugins/.$NAME-$hash.tmp"
(cd vaultplugin/fpe && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$tmp" .)
mv "$tmp" "$BIN"
echo "$BIN"
