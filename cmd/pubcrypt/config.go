package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/keyring"
)

// vaultFlags select the transit keys; the server and token come from Vault's own
// environment variables.
type vaultFlags struct {
	mount, key, detKey, fpeKey string
}

func (v *vaultFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&v.mount, "vault-mount", "transit", "path of Vault's transit secrets engine")
	fs.StringVar(&v.key, "vault-key", "pubcrypt", "transit key that wraps data keys and encrypts transit fields")
	fs.StringVar(&v.detKey, "vault-det-key", "pubcrypt-det", "derived convergent transit key for deterministic fields")
	fs.StringVar(&v.fpeKey, "vault-fpe-key", "pubcrypt-fpe", "transit key from which format-preserving-encryption keys are derived")
}

// keyring returns the Vault keyring, refusing early when Vault's variables are missing so
// that the user gets one line to fix rather than a connection error later.
func (v *vaultFlags) keyring() (*keyring.Vault, error) {
	if os.Getenv("VAULT_ADDR") == "" {
		return nil, errors.New("VAULT_ADDR is not set: export VAULT_ADDR=https://vault.example:8200 (and VAULT_TOKEN)")
	}
	if os.Getenv("VAULT_TOKEN") == "" {
		return nil, errors.New("VAULT_TOKEN is not set: export a Vault token allowed to use the transit keys")
	}
	return keyring.NewVault(keyring.VaultOptions{Mount: v.mount, Key: v.key})
}

// stopFlags bound how long a reading command runs.
type stopFlags struct {
	max  int
	idle time.Duration
}

func (s *stopFlags) register(fs *flag.FlagSet, defMax int, defIdle time.Duration) {
	fs.IntVar(&s.max, "max", defMax, "stop after this many messages (0: no limit)")
	fs.DurationVar(&s.idle, "idle", defIdle, "stop when no message arrives for this long (0: wait forever)")
}

// errIdle ends a reading loop that waited --idle for a message.
var errIdle = errors.New("idle")

// receive waits for the next message, up to s.idle.
func (s *stopFlags) receive(ctx context.Context, recv func(context.Context) (*pubsub.Message, error)) (*pubsub.Message, error) {
	if s.idle <= 0 {
		return recv(ctx)
	}
	rctx, cancel := context.WithTimeout(ctx, s.idle)
	defer cancel()
	m, err := recv(rctx)
	if err != nil && ctx.Err() == nil && rctx.Err() != nil {
		return nil, errIdle
	}
	return m, err
}

func (s *stopFlags) done(n int) bool { return s.max > 0 && n >= s.max }

func requireFlag(fs *flag.FlagSet, name, value string) error {
	if value == "" {
		return fmt.Errorf("--%s is required (see pubcrypt %s -h)", name, fs.Name()[len("pubcrypt "):])
	}
	return nil
}

// shutdownTimeout bounds how long a command waits, when it ends, for sends still being
// retried: a broker that cannot be reached must not keep the command alive past its end.
const shutdownTimeout = 10 * time.Second

// shutdown flushes and closes a topic or subscription within shutdownTimeout.
func shutdown(s interface{ Shutdown(context.Context) error }) error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	return s.Shutdown(ctx)
}
