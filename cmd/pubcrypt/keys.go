package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// keyCheck is one transit key a command will use, and the flag that named it.
type keyCheck struct {
	flag, name string
	use        keyring.KeyUse
}

// keysFor returns the transit keys a command that protects with policy will use: the
// --vault-key always (data keys, transit fields), the deterministic and FPE keys only
// when a rule of the policy needs them.
func (v *vaultFlags) keysFor(policy crypttopic.FieldPolicy) []keyCheck {
	ks := []keyCheck{{"vault-key", v.key, keyring.UseDataKeys}}
	det, fpe := false, false
	for _, r := range policy {
		switch r.Mode {
		case crypttopic.Deterministic:
			det = true
		case crypttopic.FPE:
			// fpe(vault) keys live in the FPE plugin, which creates none on use: a
			// misspelt name fails the first send, so there is no transit key to check.
			fpe = fpe || !r.InVault
		}
	}
	if det {
		ks = append(ks, keyCheck{"vault-det-key", v.detKey, keyring.UseDeterministic})
	}
	if fpe {
		ks = append(ks, keyCheck{"vault-fpe-key", v.fpeKey, keyring.UseFPE})
	}
	return ks
}

// checkKeys checks, before anything is read or sent, that every key in ks exists in
// Vault and suits its use (keyring.CheckKey): Vault's transit engine creates a random
// key on the first encrypt to a misspelt name, so a typo would otherwise pass silently.
// A key missing or unfit is a usage error naming the flag, the key and why. With --kek
// the data keys come from elsewhere and nothing is checked here.
//
// A token that may not read the --vault-key's configuration (terraform/vault's producer
// policy does not grant it) is no verdict: the data key the commands ask for at start
// proves that key. The deterministic and FPE keys have no such proof, and the field
// modes read their configuration anyway, so a refusal there is an error.
func checkKeys(ctx context.Context, kr keyring.Keyring, ks []keyCheck) error {
	v, ok := kr.(*keyring.Vault)
	if !ok {
		return nil
	}
	for _, k := range ks {
		err := v.CheckKey(ctx, k.name, k.use)
		var ce *keyring.KeyCheckError
		switch {
		case err == nil:
		case errors.As(err, &ce):
			return usagef("--%s: %w", k.flag, err)
		case errors.Is(err, keyring.ErrPermissionDenied):
			if k.use != keyring.UseDataKeys {
				return fmt.Errorf("--%s: the token may not read the configuration of transit key %q (it needs \"read\" on MOUNT/keys/%s): %w", k.flag, k.name, k.name, err)
			}
		default:
			return fmt.Errorf("--%s: check transit key %q: %w", k.flag, k.name, err)
		}
	}
	return nil
}
