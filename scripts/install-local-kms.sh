#!/usr/bin/env bash
# Installs local-kms, the AWS KMS emulator pubcrypt's tests run the awskms:// keyring
# against, and prints its path.
#
# It is a Go program (github.com/nsmithuk/local-kms, MIT), built from the Go module proxy
# with `go install` (~11 s on 2 cores) into a versioned cache path; the build is skipped
# when the binary is already there. The proxy lists no tagged version, so the pseudo-version
# is pinned here. local-kms listens on all interfaces (it has no bind option): the tests
# talk to it only on 127.0.0.1 (see internal/devkms).
set -euo pipefail

VERSION=${PUBCRYPT_LOCAL_KMS_VERSION:-v0.0.0-20260228092603-2a5e92d09ab6}
CACHE=${PUBCRYPT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pubcrypt}
DIR="$CACHE/local-kms/$VERSION"
BIN="$DIR/local-kms"

if [ -n "${PUBCRYPT_LOCAL_KMS_BIN:-}" ] && [ -x "$PUBCRYPT_LOCAL_KMS_BIN" ]; then
  echo "$PUBCRYPT_LOCAL_KMS_BIN"; exit 0
fi
if [ -x "$BIN" ]; then
  echo "$BIN"; exit 0
fi
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"

echo "building local-kms $VERSION from the Go module proxy into $BIN (about 11 s, once)" >&2
# Into a temporary directory first, so that an interrupted build never leaves a binary
# at the path that says it is done. GOFLAGS from the caller (-mod=...) do not apply to
# `go install pkg@version`, which runs outside any module.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
GOFLAGS= GOBIN="$work" CGO_ENABLED=0 go install -trimpath -ldflags='-s -w' \
  "github.com/nsmithuk/local-kms@$VERSION" >&2
mkdir -p "$DIR"
mv "$work/local-kms" "$BIN"
echo "$BIN"
