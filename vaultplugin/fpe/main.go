// Command pubcrypt-fpe is a Vault secrets-engine plugin that performs pubcrypt's
// format-preserving encryption (FF1, NIST SP 800-38G, with the card options bin, last4 and
// luhn of docs/FIELDS.md section 5.4) inside Vault.
//
// Why a plugin: pubcrypt's local fpe mode derives the FF1 key in Vault (transit/hmac) and
// computes FF1 in the application, so every token that may encode may also derive the key
// and decode. Here the key is generated in the plugin's storage and never leaves it, and
// encoding and decoding are separate paths, so a producer policy can allow
// MOUNT/encode/KEY without MOUNT/decode/KEY. Vault's own FPE (Transform) is
// Enterprise-only; this works on any Vault that loads plugins.
//
// Paths (MOUNT is where the plugin is enabled, e.g. vault secrets enable -path=fpe
// pubcrypt-fpe):
//
//	MOUNT/keys/KEY          write: create (idempotent); read: versions, never key bytes
//	MOUNT/keys/KEY/rotate   write: add a version, which encode uses from then on
//	MOUNT/keys/KEY/config   write: min_decryption_version
//	MOUNT/encode/KEY        write: value or batch_input; answers encoded_value, key_version
//	MOUNT/decode/KEY        write: value or batch_input with key_version; decoded_value
//
// An item is {"value", "tweak" (base64, optional), "options" ("bin,last4,luhn", any
// subset, optional), "key_version" (encode: optional, the latest; decode: required)}, as
// Transform's batch_input with a key version added: FPE is not authenticated, so the
// version a value was encoded under must travel with it (pubcrypt's manifest carries it)
// rather than be guessed.
package main

import (
	"os"

	"github.com/hashicorp/vault/sdk/plugin"
)

func main() {
	if err := plugin.ServeMultiplex(&plugin.ServeOpts{BackendFactoryFunc: Factory}); err != nil {
		os.Stderr.WriteString("pubcrypt-fpe: " + err.Error() + "\n")
		os.Exit(1)
	}
}
