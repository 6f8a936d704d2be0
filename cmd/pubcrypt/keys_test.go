package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pubcrypt/pubcrypt/keyring"
)

// TestEncryptChecksKeysAtStart runs `pubcrypt encrypt` with a misspelt or unfit
// --vault-det-key against a real Vault: it must refuse to start with the usage status and
// an error naming the key and why, and must not have created the misspelt key.
func TestEncryptChecksKeysAtStart(t *testing.T) {
	env := startVault(t)
	kafka := startKafka(t, topicPlain, topicEncrypted)
	cliEnv := append(env.env, "KAFKA_BROKERS="+kafka.Addrs[0])
	base := []string{"encrypt", "--sub", "kafka://enc?topic=" + topicPlain + "&offset=oldest", "--topic", "kafka://" + topicEncrypted, "--idle", "1s"}
	for _, c := range []struct {
		name string
		args []string
		says string
	}{
		{"det key misspelt", []string{"--vault-det-key", "typo"}, `--vault-det-key: transit key "typo" does not exist`},
		{"det key not convergent", []string{"--vault-det-key", demoKey}, `--vault-det-key: transit key "` + demoKey + `" is not derived and convergent`},
		{"fpe key misspelt", []string{"--vault-fpe-key", "typo-fpe"}, `--vault-fpe-key: transit key "typo-fpe" does not exist`},
		{"main key misspelt", []string{"--vault-key", "typo-main"}, `--vault-key: transit key "typo-main" does not exist`},
		{"main key derived", []string{"--vault-key", demoDetKey}, `--vault-key: transit key "` + demoDetKey + `" is derived`},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := startCLI(t, cliEnv, append(append([]string{}, base...), c.args...)...)
			code, _ := p.wait(time.Minute)
			if code != exitUsage || !strings.Contains(p.stderr.String(), c.says) {
				t.Fatalf("exit %d, want %d; stderr should say %q:\n%s", code, exitUsage, c.says, p.stderr.String())
			}
		})
	}
	kr := env.keyring(t)
	for _, k := range []string{"typo", "typo-fpe", "typo-main"} {
		if _, err := kr.KeyInfo(context.Background(), k); !errors.Is(err, keyring.ErrKeyNotFound) {
			t.Errorf("key %q after the refused starts: %v, want not found", k, err)
		}
	}

	// A policy without deterministic fields does not need the det key: a misspelt one is
	// not looked at.
	p := startCLI(t, cliEnv, append(base, "--fields", "name=transit", "--vault-det-key", "typo")...)
	if code, _ := p.wait(time.Minute); code != exitOK {
		t.Fatalf("encrypt without deterministic fields: exit %d\n%s", code, p.stderr.String())
	}
}
