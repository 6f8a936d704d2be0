package keyring

import (
	"net/http"
	"strings"
	"time"

	"github.com/pubcrypt/pubcrypt/internal/telemetry"
)

// recordVaultRequest records one HTTP request to Vault (countingTransport.RoundTrip):
// its kind and result only, never its path, key name or body.
func recordVaultRequest(r *http.Request, resp *http.Response, err error, start time.Time) {
	status := 0
	if resp != nil {
		status = resp.StatusCode
	}
	telemetry.VaultRequest(r.Context(), vaultOp(r.URL.Path), telemetry.VaultResultOf(status, err), time.Since(start))
}

// vaultOp names the kind of a Vault request from its path, /v1/MOUNT/OP/...: the
// segment after the first that names a transit operation (a mount may hold slashes; a
// key may be named like an operation, but it comes after one), or auth, token, sys.
func vaultOp(path string) telemetry.VaultOp {
	rest, ok := strings.CutPrefix(path, "/v1/")
	if !ok {
		return telemetry.VaultOther
	}
	seg, rest, _ := strings.Cut(rest, "/")
	switch seg {
	case "auth":
		if strings.HasPrefix(rest, "token/") {
			return telemetry.VaultToken
		}
		return telemetry.VaultAuth
	case "sys":
		return telemetry.VaultSys
	}
	for rest != "" {
		seg, rest, _ = strings.Cut(rest, "/")
		switch seg {
		case "datakey":
			return telemetry.VaultDataKey
		case "encrypt":
			return telemetry.VaultEncrypt
		case "decrypt":
			return telemetry.VaultDecrypt
		case "rewrap":
			return telemetry.VaultRewrap
		case "hmac":
			return telemetry.VaultHMAC
		case "keys":
			return telemetry.VaultKeys
		}
	}
	return telemetry.VaultOther
}
