package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/pubcrypt/pubcrypt/keyring"
)

func runRotate(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("rotate", "Rotates a Vault transit key: new messages use the new version at once for transit\n"+
		"fields and within the data-key reuse age for bodies and envelope fields, without\n"+
		"restarting producers; consumers keep decrypting older versions until an operator\n"+
		"raises the key's min_decryption_version.\n\n"+
		"Usage: pubcrypt rotate [flags] [NAME...]: rotates the transit keys NAME... and those of\n"+
		"--key; with neither, the --vault-key. Flags come before the names.\n\n"+
		"Example: pubcrypt rotate pubcrypt pubcrypt-fpe")
	var vf vaultFlags
	vf.register(fs)
	var names multiFlag
	fs.Var(&names, "key", "transit key to rotate (repeatable, or give the names as arguments; default: the --vault-key)")
	args, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	names = append(names, args...)
	kr, err := vf.vault()
	if err != nil {
		return err
	}
	defer closeKeyring(kr)
	if len(names) == 0 {
		names = multiFlag{vf.key}
	}
	// Each key must exist before any is rotated: rotating a misspelt name would fail
	// half-way, after the keys before it were rotated.
	for _, name := range names {
		if _, err := kr.KeyInfo(ctx, name); err != nil {
			if errors.Is(err, keyring.ErrKeyNotFound) || errors.Is(err, keyring.ErrInvalidInput) {
				return usagef("transit key %q does not exist (mount %q): nothing rotated", name, vf.mount)
			}
			return err
		}
	}
	return rotateKeys(ctx, kr, names, out)
}

func rotateKeys(ctx context.Context, kr *keyring.Vault, names []string, out io.Writer) error {
	for _, name := range names {
		if err := kr.RotateKey(ctx, name); err != nil {
			return err
		}
		info, err := kr.KeyInfo(ctx, name)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "   rotated %q: new messages use version %d; versions %d..%d still decrypt\n",
			name, info.LatestVersion, max(info.MinDecryptionVersion, 1), info.LatestVersion)
	}
	return nil
}

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return fmt.Sprint([]string(*m)) }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
