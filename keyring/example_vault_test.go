package keyring_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/pubcrypt/pubcrypt/keyring"
)

// A data key from Vault Transit: the plaintext encrypts locally and never leaves the
// process; the wrapped form travels beside the data, and only a holder of a token that
// may decrypt with the transit key gets the plaintext back. DataKeys reuses one key for
// many messages (within the limits of its Reuse), UnwrapCache keeps unwrapped keys, so a
// stream costs one Vault call per side.
func ExampleNewVault() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	vault, err := keyring.NewVault(keyring.VaultOptions{Key: keyring.DefaultKey}) // VAULT_ADDR, VAULT_TOKEN
	if err != nil {
		log.Fatal(err)
	}
	dk, err := vault.GenerateDataKey(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("data key:", len(dk.Plaintext), "bytes, wrapped by", dk.KeyID, "version", dk.Version)

	plain, err := vault.UnwrapDataKey(ctx, dk.KeyID, dk.Wrapped)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("unwrapped the same key:", string(plain) == string(dk.Plaintext))
	// Output:
	// data key: 32 bytes, wrapped by pubcrypt version 1
	// unwrapped the same key: true
}
