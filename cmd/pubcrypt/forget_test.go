package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pubcrypt/pubcrypt/keyring"
)

// TestForget is crypto-shredding through the CLI against the real Vault and Kafka broker:
// encrypt bridges 12 purchases under a policy whose subject is the purchase ID; `pubcrypt
// forget --dry-run` names the subjects' keys and destroys nothing; `pubcrypt forget`
// forgets two of them (one by --subject, one by --from) and prints and logs key names,
// never the IDs; consume then decrypts the 10 others and counts the 2 as shredded
// message faults (skip), and with --on-message-fault=stop exits 4 naming ErrShredded.
func TestForget(t *testing.T) {
	env := startVault(t)
	kafka := startKafka(t, topicPlain, topicEncrypted)
	cliEnv := append(env.env, "KAFKA_BROKERS="+kafka.Addrs[0])
	sent := producePlain(t, kafka.Addrs[0], topicPlain, 21, 12)
	enc := startCLI(t, cliEnv, "encrypt", "--sub", "kafka://enc?topic="+topicPlain+"&offset=oldest", "--topic", "kafka://"+topicEncrypted,
		"--fields", "subject=id; name=envelope,address=envelope,card_number=fpe(bin,luhn)", "--max", "12")
	if code, _ := enc.wait(time.Minute); code != exitOK {
		t.Fatalf("encrypt: exit %d\n%s", code, enc.stderr.String())
	}
	var ids []string
	for id := range sent {
		ids = append(ids, id)
	}
	gone := ids[:2]

	dry := startCLI(t, cliEnv, "forget", "--dry-run", "--subject", gone[0], "--subject", "never-sent")
	if code, _ := dry.wait(time.Minute); code != exitOK || strings.Count(dry.stdout.String(), "exists: forget would destroy it") != 1 ||
		!strings.Contains(dry.stdout.String(), "has no key") {
		t.Fatalf("forget --dry-run: exit %d\n%s%s", code, dry.stdout.String(), dry.stderr.String())
	}

	from := filepath.Join(t.TempDir(), "subjects.txt")
	if err := os.WriteFile(from, []byte("\n"+gone[1]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := startCLI(t, cliEnv, "forget", "--subject", gone[0], "--from", from, "--log-format", "json")
	code, _ := f.wait(time.Minute)
	out := f.stdout.String() + f.stderr.String()
	t.Logf("forget:\n%s", strings.TrimSpace(out))
	if code != exitOK || strings.Count(f.stdout.String(), "version(s) destroyed") != 2 || strings.Count(f.stderr.String(), `"msg":"subject forgotten"`) != 2 {
		t.Fatalf("forget: exit %d\n%s", code, out)
	}
	for _, id := range gone {
		if strings.Contains(out, id) {
			t.Fatalf("forget printed a subject ID:\n%s", out)
		}
	}
	if !strings.Contains(out, keyring.SubjectKeyPrefix) {
		t.Fatalf("forget names no key:\n%s", out)
	}

	c := startCLI(t, cliEnv, "consume", "--sub", "kafka://check?topic="+topicEncrypted+"&offset=oldest", "--max", "12", "--output", "json", "--on-message-fault", "skip")
	if code, _ := c.wait(time.Minute); code != exitOK {
		t.Fatalf("consume: exit %d\n%s", code, c.stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(c.stdout.String()), "\n")
	decrypted := 0
	for _, l := range lines {
		for id, b := range sent {
			if strings.Contains(l, string(b)) {
				decrypted++
				if id == gone[0] || id == gone[1] {
					t.Errorf("a forgotten purchase decrypted: %.200s", l)
				}
			}
		}
	}
	if decrypted != 10 || !strings.Contains(c.stderr.String(), "forgotten") {
		t.Fatalf("consume: %d purchases decrypted, want 10; stderr:\n%s", decrypted, c.stderr.String())
	}
	stop := startCLI(t, cliEnv, "consume", "--sub", "kafka://check-stop?topic="+topicEncrypted+"&offset=oldest", "--max", "12", "--on-message-fault", "stop")
	if code, _ := stop.wait(time.Minute); code != exitMessage || !strings.Contains(stop.stderr.String(), "forgotten") {
		t.Fatalf("consume --on-message-fault=stop: exit %d, want %d naming the erasure\n%s", code, exitMessage, stop.stderr.String())
	}

	// Without the pubcrypt-forget policy, forget is refused and says which policy it needs.
	tok, err := env.vault.CreateToken(context.Background(), "no-forget", `path "transit/hmac/pubcrypt-subjects/sha2-256" { capabilities = ["update"] }`)
	if err != nil {
		t.Fatal(err)
	}
	denied := startCLI(t, append(cliEnv, "VAULT_TOKEN="+tok), "forget", "--subject", ids[3])
	if code, _ := denied.wait(time.Minute); code != exitEnvironment || !strings.Contains(denied.stderr.String(), "pubcrypt-forget") {
		t.Fatalf("forget without the policy: exit %d\n%s", code, denied.stderr.String())
	}
}
