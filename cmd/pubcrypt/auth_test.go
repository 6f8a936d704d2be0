package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pubcrypt/pubcrypt/internal/devvault"
)

// bridgePolicy lets a token do what encrypt does with the demo's keys.
const bridgePolicy = `path "transit/*" { capabilities = ["update", "read"] }`

// withoutToken is env without VAULT_TOKEN: the CLI must get its own.
func withoutToken(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "VAULT_TOKEN=") {
			out = append(out, kv)
		}
	}
	return out
}

// TestEncryptLogsInByAppRole runs the encrypt bridge with --vault-auth approle and no
// VAULT_TOKEN, against the real Vault and Kafka broker, with tokens of 3 s at most 6 s:
// messages produced before and after the first token's max TTL are all forwarded, and
// the bridge ends cleanly.
func TestEncryptLogsInByAppRole(t *testing.T) {
	env := startVault(t)
	kafka := startKafka(t, topicPlain, topicEncrypted)
	root, err := env.vault.Client()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := root.Sys().PutPolicyWithContext(ctx, "bridge", bridgePolicy); err != nil {
		t.Fatal(err)
	}
	roleFile, secretFile, err := env.vault.CreateAppRole(ctx, t.TempDir(), devvault.AppRole{Mount: "approle", Name: "bridge", Policy: "bridge", TokenTTL: "3s", TokenMaxTTL: "6s"})
	if err != nil {
		t.Fatal(err)
	}
	secretID, err := os.ReadFile(secretFile)
	if err != nil {
		t.Fatal(err)
	}

	sent := producePlain(t, kafka.Addrs[0], topicPlain, 1, 20)
	p := startCLI(t, append(withoutToken(env.env), "KAFKA_BROKERS="+kafka.Addrs[0]),
		"encrypt", "--sub", "kafka://enc?topic="+topicPlain+"&offset=oldest", "--topic", "kafka://"+topicEncrypted,
		"--fields", "name=transit,address=transit", "--max", "40",
		"--vault-auth", "approle", "--vault-role-id-file", roleFile, "--vault-secret-id-file", secretFile)
	p.waitLines("encrypted ", 20, time.Minute)
	time.Sleep(8 * time.Second) // past the first token's max TTL
	for id, b := range producePlain(t, kafka.Addrs[0], topicPlain, 2, 20) {
		sent[id] = b
	}
	code, _ := p.wait(time.Minute)
	if code != exitOK {
		t.Fatalf("encrypt by AppRole: exit %d\n%s", code, p.stderr.String())
	}
	if ids := encryptedIDs(p.stdout.String()); len(ids) != 40 {
		t.Fatalf("encrypted %d messages, want 40\n%s", len(ids), p.stderr.String())
	}
	if strings.Contains(p.stderr.String(), strings.TrimSpace(string(secretID))) {
		t.Error("stderr holds the secret ID")
	}
}

// TestEncryptStopsOnRevokedStaticToken: a VAULT_TOKEN revoked under a running bridge
// cannot be replaced, so the bridge stops with the environment's exit code and says why,
// rather than holding the messages forever; nothing after the revocation is forwarded.
func TestEncryptStopsOnRevokedStaticToken(t *testing.T) {
	env := startVault(t)
	kafka := startKafka(t, topicPlain, topicEncrypted)
	tok, err := env.vault.CreateTokenWith(context.Background(), devvault.TokenOptions{Policy: "bridge", PolicyHCL: bridgePolicy})
	if err != nil {
		t.Fatal(err)
	}
	producePlain(t, kafka.Addrs[0], topicPlain, 1, 5)
	p := startCLI(t, append(withoutToken(env.env), "VAULT_TOKEN="+tok, "KAFKA_BROKERS="+kafka.Addrs[0]),
		"encrypt", "--sub", "kafka://enc?topic="+topicPlain+"&offset=oldest", "--topic", "kafka://"+topicEncrypted,
		"--fields", "name=transit")
	p.waitLines("encrypted ", 5, time.Minute)
	root, err := env.vault.Client()
	if err != nil {
		t.Fatal(err)
	}
	if err := root.Auth().Token().RevokeTree(tok); err != nil {
		t.Fatal(err)
	}
	producePlain(t, kafka.Addrs[0], topicPlain, 2, 5)
	code, _ := p.wait(time.Minute)
	stderr := p.stderr.String()
	if code != exitEnvironment || !strings.Contains(stderr, "cannot be replaced") {
		t.Fatalf("exit %d, want %d naming the invalid token:\n%s", code, exitEnvironment, stderr)
	}
	if strings.Contains(stderr, tok) {
		t.Error("stderr holds the token")
	}
	if ids := encryptedIDs(p.stdout.String()); len(ids) != 5 {
		t.Errorf("forwarded %d messages, want the 5 from before the revocation", len(ids))
	}
}
