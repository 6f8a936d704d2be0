package keyring

import (
	"context"
	"errors"
	"fmt"

	"github.com/pubcrypt/pubcrypt/fault"
)

// KeyUse is what a program will do with a transit key, and so what the key must be.
type KeyUse int

const (
	// UseDataKeys: wrap data keys and encrypt transit fields. The key must encrypt and
	// must not be derived (data keys and transit fields are made without a context).
	UseDataKeys KeyUse = iota
	// UseDeterministic: deterministic fields. The key must be derived and convergent,
	// or equal values would not give equal ciphertexts.
	UseDeterministic
	// UseFPE: the key FF1 keys are derived from (an HMAC of it); it must exist.
	UseFPE
)

func (u KeyUse) String() string {
	switch u {
	case UseDataKeys:
		return "data keys and transit fields"
	case UseDeterministic:
		return "deterministic fields"
	case UseFPE:
		return "format-preserving fields"
	}
	return fmt.Sprintf("KeyUse(%d)", int(u))
}

// ErrKeyUnfit: a transit key exists but is not of the kind its use needs (a
// deterministic key that is not derived and convergent, a signing key asked for data
// keys). Environment: it is mended in Vault or in the configuration, not in a message.
var ErrKeyUnfit = fault.New(fault.Environment, "transit key unfit for its use")

// KeyCheckError is CheckKey's verdict on a key that is missing or unfit. Kind is
// ErrKeyNotFound or ErrKeyUnfit.
type KeyCheckError struct {
	Key    string
	Mount  string
	Use    KeyUse
	Kind   error
	Reason string // "does not exist", "is not derived and convergent", ...
}

func (e *KeyCheckError) Error() string {
	return fmt.Sprintf("transit key %q %s (mount %q; needed for %s)", e.Key, e.Reason, e.Mount, e.Use)
}

func (e *KeyCheckError) Unwrap() error { return e.Kind }

// FaultClass is fault.Environment.
func (e *KeyCheckError) FaultClass() fault.Class { return fault.Environment }

// CheckKey reads the configuration of the transit key name (MOUNT/keys/NAME, capability
// "read") and checks that it exists and suits use. Vault's transit engine creates a key
// on the first encrypt to a name that does not exist, when the token may: without this
// check a typo in a key name silently makes a new random key, and "deterministic" values
// that differ every time.
//
// A key that is missing or unfit gives a *KeyCheckError (errors.Is ErrKeyNotFound or
// ErrKeyUnfit); a Vault that cannot be asked, the *Error of KeyInfo (ErrUnavailable,
// ErrPermissionDenied, ...).
func (v *Vault) CheckKey(ctx context.Context, name string, use KeyUse) error {
	info, err := v.KeyInfo(ctx, name)
	unfit := func(reason string) error {
		return &KeyCheckError{Key: name, Mount: v.mount, Use: use, Kind: ErrKeyUnfit, Reason: reason}
	}
	switch {
	case errors.Is(err, ErrKeyNotFound):
		return &KeyCheckError{Key: name, Mount: v.mount, Use: use, Kind: ErrKeyNotFound, Reason: "does not exist"}
	case errors.Is(err, ErrInvalidInput):
		return &KeyCheckError{Key: name, Mount: v.mount, Use: use, Kind: ErrKeyNotFound, Reason: "is not a valid transit key name (letters, digits, _ . -)"}
	case err != nil:
		return err
	}
	switch use {
	case UseDataKeys:
		if !info.SupportsEncryption {
			return unfit(fmt.Sprintf("is of type %s, which does not encrypt", info.Type))
		}
		if info.Derived {
			return unfit("is derived: data keys and transit fields need a key that is not")
		}
	case UseDeterministic:
		if !info.Derived || !info.Convergent {
			return unfit("is not derived and convergent (create it with derived=true convergent_encryption=true)")
		}
	case UseFPE:
	default:
		return fmt.Errorf("keyring: check key %q: unknown use %d", name, int(use))
	}
	return nil
}
