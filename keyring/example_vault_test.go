package keyring_test

import (
	"context"
	"errors"
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

// Crypto-shredding: each subject (a customer) gets a Vault key of its own, named by an
// HMAC of its ID; Forget destroys every version of it that protected anything, so the
// subject's data keys, wherever they travelled, never unwrap again (ErrShredded), while
// other subjects' keys are untouched. crypttopic does the naming and the data keys for a
// field policy with a subject ("subject=customer_id; ..."); this is the key side alone.
func ExampleSubjects_Forget() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	vault, err := keyring.NewVault(keyring.VaultOptions{Key: keyring.DefaultKey}) // VAULT_ADDR, VAULT_TOKEN
	if err != nil {
		log.Fatal(err)
	}
	subjects, err := keyring.NewSubjects(vault, keyring.SubjectOptions{})
	if err != nil {
		log.Fatal(err)
	}
	names, err := subjects.KeyNames(ctx, []string{"example-customer-7"})
	if err != nil {
		log.Fatal(err)
	}
	keys, err := subjects.DataKeys(names[0])
	if err != nil {
		log.Fatal(err)
	}
	dk, _, err := keys.Take(ctx, 100)
	if err != nil {
		log.Fatal(err)
	}

	f, err := subjects.Forget(ctx, "example-customer-7")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("versions destroyed:", f.Destroyed)
	_, err = vault.UnwrapDataKey(ctx, dk.KeyID, dk.Wrapped)
	fmt.Println("shredded:", errors.Is(err, keyring.ErrShredded))
	// Output:
	// versions destroyed: 1
	// shredded: true
}
