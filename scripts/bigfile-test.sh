#!/usr/bin/env bash
# Sends a 200 MiB file through send-files → Kafka → receive-files with the default broker
# message limit and checks that it arrives byte-identical and that neither side's peak
# resident memory exceeds 64 MiB (measured by /usr/bin/time -v). The broker and Vault run
# in a third process (`pubcrypt dev`), which is not measured.
# Usage: scripts/bigfile-test.sh [size in MiB, default 200]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
size_mib=${1:-200}
limit_kb=$((64 * 1024))

[ -x /usr/bin/time ] || { echo "bigfile-test: /usr/bin/time is missing (apt-get install -y time)" >&2; exit 1; }
PUBCRYPT_VAULT_BIN="$(scripts/install-vault.sh)"
export PUBCRYPT_VAULT_BIN

work=$(mktemp -d)
dev_pid=""
cleanup() { [ -n "$dev_pid" ] && kill "$dev_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
go build -o "$work/pubcrypt" ./cmd/pubcrypt
mkdir -p "$work/source" "$work/destination"

"$work/pubcrypt" dev --env-file "$work/env" >"$work/dev.log" 2>&1 &
dev_pid=$!
for _ in $(seq 100); do [ -s "$work/env" ] && break; sleep 0.2; done
[ -s "$work/env" ] || { echo "bigfile-test: pubcrypt dev did not start:"; cat "$work/dev.log"; exit 1; } >&2
# shellcheck disable=SC1091
. "$work/env"

head -c "$((size_mib * 1024 * 1024))" /dev/urandom >"$work/source/big.bin"

rss() { sed -n 's/.*Maximum resident set size (kbytes): //p' "$1"; }
/usr/bin/time -v -o "$work/send.time" "$work/pubcrypt" send-files --dir "$work/source" >"$work/send.out"
/usr/bin/time -v -o "$work/recv.time" "$work/pubcrypt" receive-files --dir "$work/destination" --max-files 1 >"$work/recv.out"
cat "$work/send.out" "$work/recv.out"

cmp "$work/source/big.bin" "$work/destination/big.bin"
send_kb=$(rss "$work/send.time") recv_kb=$(rss "$work/recv.time")
echo "${size_mib} MiB file arrived byte-identical; peak RSS: send-files ${send_kb} kB, receive-files ${recv_kb} kB (limit ${limit_kb} kB)"
[ "$send_kb" -le "$limit_kb" ] && [ "$recv_kb" -le "$limit_kb" ] || { echo "bigfile-test: peak RSS above 64 MiB" >&2; exit 1; }
echo "bigfile-test: 1 passed, 0 failed"
