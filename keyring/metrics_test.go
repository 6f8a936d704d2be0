package keyring

import (
	"testing"

	"github.com/pubcrypt/pubcrypt/internal/telemetry"
)

func TestVaultOp(t *testing.T) {
	for _, c := range []struct {
		path string
		want telemetry.VaultOp
	}{
		{"/v1/transit/datakey/plaintext/pubcrypt", telemetry.VaultDataKey},
		{"/v1/transit/decrypt/pubcrypt", telemetry.VaultDecrypt},
		{"/v1/transit/encrypt/pubcrypt-det", telemetry.VaultEncrypt},
		{"/v1/transit/rewrap/pubcrypt", telemetry.VaultRewrap},
		{"/v1/transit/keys/pubcrypt/rotate", telemetry.VaultKeys},
		{"/v1/transit/hmac/pubcrypt-fpe/sha2-256", telemetry.VaultHMAC},
		{"/v1/transit/keys/decrypt", telemetry.VaultKeys}, // a key named like an op
		{"/v1/team/a/transit/datakey/wrapped/k", telemetry.VaultDataKey},
		{"/v1/encrypt/decrypt/k", telemetry.VaultDecrypt}, // a mount named like an op
		{"/v1/auth/approle/login", telemetry.VaultAuth},
		{"/v1/auth/token/renew-self", telemetry.VaultToken},
		{"/v1/sys/health", telemetry.VaultSys},
		{"/v1/secret/data/x", telemetry.VaultOther},
		{"/other", telemetry.VaultOther},
	} {
		if got := vaultOp(c.path); got != c.want {
			t.Errorf("vaultOp(%q) = %d, want %d", c.path, got, c.want)
		}
	}
}
