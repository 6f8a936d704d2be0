package keyring

import "context"

// TransitItem is one value for Vault Transit's encryption as a service, used by field-level
// encryption: all protected fields of a message (or of a batch of messages) go to Vault in
// one batch_input call.
type TransitItem struct {
	// Plaintext is the input of encryption and the output of decryption.
	Plaintext []byte
	// Ciphertext is the output of encryption and the input of decryption ("vault:v3:...").
	Ciphertext string
	// AssociatedData is authenticated but not stored: decryption needs the same bytes
	// (AEAD key types only). Field encryption binds the message ID and field path here.
	AssociatedData []byte
	// Context is the key-derivation context of derived keys (deterministic mode binds the
	// field path here); nil for keys that are not derived.
	Context []byte
	// Err is set by a batch call for an item that failed alone; the other items stand.
	Err error
}

// FieldKeyring is what field-level encryption needs from a key service besides data keys.
type FieldKeyring interface {
	// EncryptBatch encrypts every item (Plaintext → Ciphertext) under the named key in
	// one call. An error means the call failed as a whole; per-item failures are in Err.
	EncryptBatch(ctx context.Context, key string, items []TransitItem) error
	// DecryptBatch decrypts every item (Ciphertext → Plaintext) in one call, as above.
	DecryptBatch(ctx context.Context, key string, items []TransitItem) error
	// FPEKey returns the 32-byte format-preserving-encryption key for the given version of
	// the named key (0: the latest) and the version it is. The key is derived inside the
	// key service from a versioned, rotatable key that never leaves it. A version the key
	// service no longer allows for decryption is refused with ErrVersionTooOld.
	FPEKey(ctx context.Context, key string, version int) ([]byte, int, error)
}

// Transformer is implemented by a FieldKeyring that can also reach Vault Enterprise's
// Transform engine (*Vault does); field mode transform needs it. Both methods send the
// values to the role's encode or decode endpoint in one batch_input request, each item
// with the named transformation ("" lets Vault pick the role's only one), and return one
// result per value. A server without the engine fails with ErrTransformNotAvailable.
type Transformer interface {
	TransformEncode(ctx context.Context, role, transformation string, values []string) ([]string, error)
	TransformDecode(ctx context.Context, role, transformation string, values []string) ([]string, error)
}

// FPEItem is one value for a key service that runs format-preserving encryption itself
// (FPECipher): the FF1 key stays in the key service.
type FPEItem struct {
	// Value is the input: digits and separators (" -./()+"). Result is the output, of the
	// same shape.
	Value, Result string
	// Tweak is the FF1 tweak (field encryption: the rule path).
	Tweak []byte
	// Options are the card options, comma-separated, as the policy writes them: "bin",
	// "last4", "luhn"; "" for none (every digit enciphered).
	Options string
	// Err is set by a batch call for an item that failed alone; the other items stand.
	Err error
}

// FPECipher is implemented by a FieldKeyring that runs FF1 itself, so that the key never
// reaches the caller (*Vault does, with pubcrypt's Vault FPE plugin, vaultplugin/fpe);
// field mode fpe with option vault needs it. Unlike FieldKeyring.FPEKey, encoding and
// decoding are separate calls that the key service authorises separately: a producer
// allowed only to encode cannot decode what it sent.
type FPECipher interface {
	// FPEEncrypt enciphers every item (Value → Result) under the latest version of the
	// named key, in one call, and returns that version, the same for every item. An
	// error means the call failed as a whole; per-item failures are in Err.
	FPEEncrypt(ctx context.Context, key string, items []FPEItem) (version int, err error)
	// FPEDecrypt deciphers every item (Value → Result) under the given version, as above.
	// FPE is not authenticated: the version must be the one FPEEncrypt returned.
	FPEDecrypt(ctx context.Context, key string, version int, items []FPEItem) error
}
