package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestReencryptAfterTwoRotations is the runbook of the README against the real Vault and
// Kafka broker: an encrypted topic holds field-level messages (the encrypt bridge with
// the demo's policy: transit, deterministic and FPE fields) and whole-body ones, all
// under version 1 of every key; each key is rotated twice; `pubcrypt reencrypt` copies
// the topic and its count check passes; min_decryption_version is raised to 3; the copy
// decrypts fully while the old topic is refused for its retired version.
func TestReencryptAfterTwoRotations(t *testing.T) {
	env := startVault(t)
	const copyTopic = "purchases_v3"
	kafka := startKafka(t, topicPlain, topicEncrypted, copyTopic)
	cliEnv := append(env.env, "KAFKA_BROKERS="+kafka.Addrs[0])
	sent := producePlain(t, kafka.Addrs[0], topicPlain, 5, 30)
	enc := startCLI(t, cliEnv, "encrypt", "--sub", "kafka://enc?topic="+topicPlain+"&offset=oldest", "--topic", "kafka://"+topicEncrypted, "--max", "30")
	if code, _ := enc.wait(time.Minute); code != exitOK {
		t.Fatalf("encrypt: exit %d\n%s", code, enc.stderr.String())
	}
	for id, b := range produceEncrypted(t, env.keyring(t), kafka.Addrs[0], topicEncrypted, 6, 10) {
		sent[id] = b
	}
	ctx := context.Background()
	for _, k := range []string{demoKey, demoDetKey, demoFPEKey} {
		for range 2 {
			if err := env.vault.RotateKey(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
	}

	re := startCLI(t, cliEnv, "reencrypt", "--sub", "kafka://reenc?topic="+topicEncrypted+"&offset=oldest", "--topic", "kafka://"+copyTopic, "--idle", "3s")
	code, _ := re.wait(2 * time.Minute)
	stdout := re.stdout.String()
	t.Logf("reencrypt: %s", strings.TrimSpace(stdout))
	if code != exitOK || !strings.Contains(stdout, "40 message(s) re-encrypted") || !strings.Contains(stdout, "v1: 40") ||
		!strings.Contains(stdout, "count check: group reenc has handled every record") {
		t.Fatalf("reencrypt: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, re.stderr.String())
	}

	for _, k := range []string{demoKey, demoDetKey, demoFPEKey} {
		if err := env.vault.SetMinDecryptionVersion(ctx, k, 3); err != nil {
			t.Fatal(err)
		}
	}
	c := startCLI(t, cliEnv, "consume", "--sub", "kafka://check?topic="+copyTopic+"&offset=oldest", "--max", "40", "--output", "json")
	if code, _ := c.wait(time.Minute); code != exitOK {
		t.Fatalf("consume the copy: exit %d\n%s", code, c.stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(c.stdout.String()), "\n")
	if len(lines) != 40 {
		t.Fatalf("the copy: %d messages decrypted, want 40", len(lines))
	}
	for _, l := range lines {
		if !strings.Contains(l, `"key_version":3`) {
			t.Fatalf("the copy holds a message not under version 3: %.300s", l)
		}
	}
	found := 0
	for id, b := range sent {
		for _, l := range lines {
			if strings.Contains(l, string(b)) {
				found++
				break
			}
		}
		_ = id
	}
	if found != len(sent) {
		t.Errorf("%d of the %d bodies sent found byte-equal in the copy", found, len(sent))
	}
	old := startCLI(t, cliEnv, "consume", "--sub", "kafka://check-old?topic="+topicEncrypted+"&offset=oldest", "--max", "1")
	code, _ = old.wait(time.Minute)
	if code != exitMessage || !strings.Contains(old.stderr.String(), "no longer allowed") {
		t.Fatalf("consume the old topic after min_decryption_version=3: exit %d, want %d naming the retired version\n%s", code, exitMessage, old.stderr.String())
	}
}
