#!/usr/bin/env bash
# Installs the HashiCorp Vault server used by pubcrypt's tests and demo, and prints its path.
#
# No Vault binary can be installed from the package registries this project reaches, so the
# server is built from the Go module proxy. v1.21.0 is the newest release that builds
# unpatched (v1.21.4's in-tree sdk matches no published tag). A cold build takes ~9 minutes
# on 2 cores, so the binary is cached at a versioned path and the build is skipped when it
# is already there. A `vault` already on PATH at a 1.x version is used as it is.
#
# Vault is BUSL-1.1: built here as a local development and test server, never redistributed.
set -euo pipefail

VERSION=${PUBCRYPT_VAULT_VERSION:-v1.21.0}
CACHE=${PUBCRYPT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pubcrypt}
BIN="$CACHE/vault/$VERSION/vault"

if [ -n "${PUBCRYPT_VAULT_BIN:-}" ] && [ -x "$PUBCRYPT_VAULT_BIN" ]; then
  echo "$PUBCRYPT_VAULT_BIN"; exit 0
fi
if [ -x "$BIN" ]; then
  echo "$BIN"; exit 0
fi
if command -v vault >/dev/null 2>&1 && vault version 2>/dev/null | grep -qE '^Vault v1\.(1[5-9]|[2-9][0-9])\.'; then
  command -v vault; exit 0
fi

echo "building Vault $VERSION from the Go module proxy into $BIN (about 9 minutes on 2 cores, once)" >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
cat > go.mod <<MOD
module pubcrypt.local/vaultbuild

go 1.26

require github.com/hashicorp/vault $VERSION

replace (
	github.com/99designs/keyring => github.com/Jeffail/keyring v1.2.3
	github.com/ma314smith/signedxml v1.1.1 => github.com/moov-io/signedxml v1.1.1
)
MOD
cat > tools.go <<'GO'
//go:build tools

package tools

import _ "github.com/hashicorp/vault"
GO
export GOFLAGS=-mod=mod
go mod tidy -e >&2 2>"$work/tidy.log" || { cat "$work/tidy.log" >&2; exit 1; }
mkdir -p "$(dirname "$BIN")"
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$BIN.tmp" github.com/hashicorp/vault >&2
mv "$BIN.tmp" "$BIN"
"$BIN" version >&2
echo "$BIN"
