// Package keyring is where pubcrypt gets its keys. A Keyring wraps and unwraps data keys
// under a key-encryption key that never leaves the key service: Vault's Transit engine
// (Vault), or any gocloud.dev/secrets keeper opened by URL — AWS KMS, Google Cloud KMS,
// Azure Key Vault, Vault through gocloud, a local key (Keeper). The interface names no
// service. The data key is what encrypts messages, locally, with AES-256-GCM: the key
// service sees one request per data key, not one per message.
//
// The send side asks DataKeys for the current key; DataKeys replaces it when a limit the
// user set is reached (age, messages, bytes), or hands out a fresh key per message. The
// receive side asks an UnwrapCache, which keeps recently unwrapped keys so that a stream
// under one data key costs one call to the key service, and collapses concurrent misses
// for the same wrapped key into one call.
//
// Field-level encryption in its modes other than envelope needs more of the key service
// than data keys, a capability a keyring has or has not: *Vault also implements
// FieldKeyring (Transit encryption as a service in batches, deterministic
// encryption under derived convergent keys, format-preserving-encryption keys derived
// inside Vault), and Transform adapts Vault Enterprise's Transform engine.
//
// Errors from a Keyring are *Error values that name the operation and the key, never the
// key material, the token or the plaintext; errors.Is matches them against ErrUnavailable,
// ErrPermissionDenied, ErrKeyNotFound, ErrVersionTooOld, ErrInvalidWrappedKey, ErrDecrypt,
// ErrValueRefused, ErrInvalidInput and ErrTransformNotAvailable.
//
// Each kind has a fault class (package fault), which *Error reports: ErrVersionTooOld,
// ErrInvalidWrappedKey, ErrDecrypt and ErrValueRefused are faults of the message (the
// same message never passes); ErrUnavailable, ErrPermissionDenied, ErrKeyNotFound,
// ErrInvalidInput and ErrTransformNotAvailable are faults of the environment (the message
// passes once Vault, the token, the key or the configuration is mended), and so is an
// *Error without a kind. Vault's answers are sorted by what they mean, not by their HTTP
// status: Vault answers a request it refuses for its size (a value over its JSON limits)
// with HTTP 500, which is ErrValueRefused, not ErrUnavailable.
package keyring

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"sync"

	"github.com/pubcrypt/pubcrypt/fault"
)

// DataKeySize is the size in bytes of every data key: AES-256.
const DataKeySize = 32

// Keyring wraps and unwraps data keys under a key-encryption key held by a key service.
type Keyring interface {
	// GenerateDataKey returns a fresh random data key of DataKeySize bytes, in plaintext
	// and wrapped by the keyring's current key-encryption key.
	GenerateDataKey(ctx context.Context) (*DataKey, error)
	// UnwrapDataKey returns the plaintext of a data key that GenerateDataKey wrapped under
	// the key-encryption key named keyID.
	UnwrapDataKey(ctx context.Context, keyID, wrapped string) ([]byte, error)
}

// WrappedVersioner is implemented by a Keyring whose wrapped keys name the version of the
// key-encryption key that wrapped them (Vault's "vault:vN:..."); UnwrapCache and the
// receivers report it in DataKey.Version. A keyring without it reports 0 (unknown).
type WrappedVersioner interface {
	WrappedVersion(wrapped string) int
}

// DataKey is a data key in both forms. Plaintext must never be logged or persisted.
type DataKey struct {
	// Plaintext is the raw key, DataKeySize bytes.
	Plaintext []byte
	// Wrapped is the key encrypted by the key service, printable ASCII (for Vault:
	// "vault:v3:..."). It travels beside the data.
	Wrapped string
	// KeyID names the key-encryption key that wrapped it (for Vault: the transit key name).
	KeyID string
	// Version is the version of the key-encryption key that wrapped it, 0 if unknown.
	Version int

	once sync.Once
	aead cipher.AEAD
	err  error
}

// AEAD returns AES-256-GCM under the data key, built once per key so that a reused key
// pays the key schedule once.
func (k *DataKey) AEAD() (cipher.AEAD, error) {
	k.once.Do(func() {
		if len(k.Plaintext) != DataKeySize {
			k.err = fmt.Errorf("keyring: data key for %q has %d bytes, want %d", k.KeyID, len(k.Plaintext), DataKeySize)
			return
		}
		block, err := aes.NewCipher(k.Plaintext)
		if err != nil {
			k.err = err
			return
		}
		k.aead, k.err = cipher.NewGCM(block)
	})
	return k.aead, k.err
}

// Error kinds, matched with errors.Is. Each carries its fault class.
var (
	// ErrUnavailable: the key service could not be reached or answered with a server
	// error. Environment.
	ErrUnavailable = fault.New(fault.Environment, "key service unavailable")
	// ErrPermissionDenied: the key service refused the credentials for this operation
	// (Vault: a token expired, revoked, wrong, or without the policy). Environment: the
	// message passes under a good token.
	ErrPermissionDenied = fault.New(fault.Environment, "permission denied by key service")
	// ErrKeyNotFound: the named key-encryption key does not exist. Environment: a key
	// missing from the key service (deleted, not yet created, another mount) is mended
	// there.
	ErrKeyNotFound = fault.New(fault.Environment, "key-encryption key not found")
	// ErrVersionTooOld: the wrapped key is under a key version the key service no longer
	// allows for decryption (Vault: below min_decryption_version). Message.
	ErrVersionTooOld = fault.New(fault.Message, "key version no longer allowed for decryption")
	// ErrInvalidWrappedKey: the wrapped key is malformed or does not authenticate.
	// Message.
	ErrInvalidWrappedKey = fault.New(fault.Message, "invalid wrapped data key")
)

// ErrTokenInvalid is in the chain of an ErrPermissionDenied from the Vault keyring when
// Vault called its token invalid (expired or revoked) and the keyring has no way to get
// another: a static token (VaultAuth's zero value). A long-running program should stop
// and say so rather than wait: no retry will pass until someone gives it a new token, or
// it logs in (VaultAuth) instead.
var ErrTokenInvalid = errors.New("the vault token is invalid (expired or revoked) and cannot be replaced: give a new token, or log in with an auth method that renews it")

// Error is the error a Keyring returns. It names the operation and the key, and wraps
// one of the Err* kinds above plus the service's own error (with secrets removed).
type Error struct {
	Op      string // "generate data key", "unwrap data key", ...
	KeyID   string
	Version int   // key version involved, 0 if unknown
	Kind    error // one of the Err* values
	Err     error // underlying cause, safe to print
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("keyring: %s with key %q", e.Op, e.KeyID)
	if e.Version > 0 {
		msg += fmt.Sprintf(" version %d", e.Version)
	}
	if e.Kind != nil {
		msg += ": " + e.Kind.Error()
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// FaultClass is the class of e's Kind (see the Err* values); an *Error without a Kind is
// of class fault.Environment, so that an answer nobody recognised can delay a message
// but never have it acknowledged.
func (e *Error) FaultClass() fault.Class {
	if c := fault.ClassOf(e.Kind); c == fault.Message {
		return c
	}
	return fault.Environment
}

func (e *Error) Unwrap() []error {
	var errs []error
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}
