package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/pubcrypt/pubcrypt/keyring"
)

func runForget(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("forget", "Crypto-shreds subjects: destroys, in Vault, every version of the key of each subject\n"+
		"that protected a message, so that its messages (on the broker, in backups, in lakes)\n"+
		"fail with ErrShredded for good while other subjects decrypt. For messages sent under a\n"+
		"field policy with a subject option (subject=customer_id). Irreversible. Needs a token\n"+
		"with terraform/vault's pubcrypt-forget policy. The subject IDs are printed nowhere:\n"+
		"output and the audit log (stderr) name the key.\n\n"+
		"Usage: pubcrypt forget [flags] --subject ID... | --from FILE (one ID per line, - for stdin)\n\n"+
		"Example: pubcrypt forget --subject cust-0042")
	var vf vaultFlags
	vf.register(fs)
	var subjects multiFlag
	fs.Var(&subjects, "subject", "subject ID to forget (repeatable)")
	from := fs.String("from", "", "file of subject IDs to forget, one per line (- for stdin)")
	namingKey := fs.String("naming-key", keyring.DefaultSubjectNamingKey, "transit key whose HMAC names subject keys")
	dryRun := fs.Bool("dry-run", false, "name each subject's key and say whether it exists; destroy nothing")
	logFormat := fs.String("log-format", "text", "audit log format on stderr: text or json")
	args, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(args) > 0 {
		return usagef("unexpected arguments %q: give subjects with --subject or --from", args)
	}
	if *from != "" {
		ids, err := readSubjects(*from)
		if err != nil {
			return err
		}
		subjects = append(subjects, ids...)
	}
	if len(subjects) == 0 {
		return usagef("no subject: give --subject ID or --from FILE")
	}
	for i, s := range subjects {
		if s == "" {
			return usagef("subject %d is empty", i+1)
		}
	}
	// Info: the audit events ("subject forgotten") are the point of the log here.
	if err := setLogger(*logFormat, slog.LevelInfo); err != nil {
		return err
	}
	kr, err := vf.vault()
	if err != nil {
		return err
	}
	defer closeKeyring(kr)
	sk, err := keyring.NewSubjects(kr, keyring.SubjectOptions{NamingKey: *namingKey})
	if err != nil {
		return err
	}
	for i, s := range subjects {
		if *dryRun {
			key, exists, err := sk.Lookup(ctx, s)
			if err != nil {
				return fmt.Errorf("subject %d of %d: %w", i+1, len(subjects), err)
			}
			state := "has no key: nothing of it was encrypted"
			if exists {
				state = "exists: forget would destroy it"
			}
			fmt.Fprintf(out, "   subject %d of %d: key %s %s\n", i+1, len(subjects), key, state)
			continue
		}
		f, err := sk.Forget(ctx, s)
		if err != nil {
			if errors.Is(err, keyring.ErrPermissionDenied) {
				return fmt.Errorf("subject %d of %d: %w (forgetting needs the pubcrypt-forget policy of terraform/vault; %d forgotten before it)", i+1, len(subjects), err, i)
			}
			return fmt.Errorf("subject %d of %d: %w (%d forgotten before it)", i+1, len(subjects), err, i)
		}
		if f.Destroyed == 0 {
			fmt.Fprintf(out, "   subject %d of %d: key %s: none existed, nothing of it was encrypted\n", i+1, len(subjects), f.Key)
			continue
		}
		fmt.Fprintf(out, "   forgot subject %d of %d: key %s: %d version(s) destroyed; its messages now fail with ErrShredded\n", i+1, len(subjects), f.Key, f.Destroyed)
	}
	return nil
}

// readSubjects reads one subject ID per line; blank lines are skipped.
func readSubjects(path string) ([]string, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, usagef("--from: %v", err)
		}
		defer f.Close()
		r = f
	}
	var ids []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if s := strings.TrimSpace(sc.Text()); s != "" {
			ids = append(ids, s)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("--from: %w", err)
	}
	return ids, nil
}
