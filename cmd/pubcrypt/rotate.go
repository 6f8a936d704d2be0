package main

import (
	"context"
	"fmt"
	"io"

	"github.com/pubcrypt/pubcrypt/keyring"
)

func runRotate(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("rotate", "Rotates a Vault transit key: new messages use the new version at once for transit\n"+
		"fields and within the data-key reuse age for bodies and envelope fields, without\n"+
		"restarting producers; consumers keep decrypting older versions until an operator\n"+
		"raises the key's min_decryption_version.\n\n"+
		"Example: pubcrypt rotate --key pubcrypt --key pubcrypt-fpe")
	var vf vaultFlags
	vf.register(fs)
	var names multiFlag
	fs.Var(&names, "key", "transit key to rotate (repeatable; default: the --vault-key)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	kr, err := vf.vault()
	if err != nil {
		return err
	}
	if len(names) == 0 {
		names = multiFlag{vf.key}
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
