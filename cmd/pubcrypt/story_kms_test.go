package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pubcrypt/pubcrypt/internal/devkms"
	"github.com/pubcrypt/pubcrypt/internal/purchase"
)

// TestSeedStoryAWSKMS replays the seed story on SQS/SNS (fauxqs) with the data keys
// wrapped by an AWS KMS key (the local-kms emulator) instead of Vault: the same commands
// as TestSeedStoryByURL, changing only URLs (--kek). No Vault runs. The field policy uses
// the envelope mode, the one that needs nothing of the key service but data keys
// (transit, deterministic and fpe are Vault's); there is no `pubcrypt rotate` step, since
// KMS rotates a key's material behind the same key ID.
func TestSeedStoryAWSKMS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, k := range []string{"VAULT_ADDR", "VAULT_TOKEN"} {
		t.Setenv(k, "") // nothing here may need Vault
	}
	kms, err := devkms.Start(ctx, devkms.Options{})
	if err != nil {
		t.Fatalf("local-kms: %v", err)
	}
	t.Cleanup(func() { _ = kms.Stop() })
	var u storyURLs
	for _, sb := range storyBrokers {
		if sb.name == "awssqs-sns-fauxqs" {
			u = sb.start(t) // sets AWS_ACCESS_KEY_ID etc. for fauxqs, which takes any
		}
	}
	if u.plainTopic == "" {
		t.Fatal("no awssqs-sns-fauxqs story broker")
	}
	for _, kv := range kms.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	key, err := kms.CreateKey(ctx, "pubcrypt seed story")
	if err != nil {
		t.Fatal(err)
	}
	kek := kms.KeeperURL(key.ID)
	run := func(cmd func(context.Context, []string, io.Writer) error, args ...string) string {
		t.Helper()
		var out bytes.Buffer
		if err := cmd(ctx, args, &out); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out.String())
		}
		return out.String()
	}
	const fields = "name=envelope,address=envelope,card_number=envelope"

	for _, seed := range []string{"1", "2"} {
		run(runProduce, "--topic", u.plainTopic, "--count", "10", "--seed", seed, "--quiet")
		run(runEncrypt, "--kek", kek, "--fields", fields, "--sub", u.plainSub, "--topic", u.encTopic, "--max", "10", "--idle", "30s")
	}
	peeked := run(runPeek, "--sub", u.encPeekSub, "--max", "20", "--wait", "10s")
	if !strings.Contains(peeked, "20 message(s)") {
		t.Fatalf("admin view: want 20 messages:\n%s", peeked)
	}
	for _, seed := range []uint64{1, 2} {
		gen := purchase.NewGenerator(seed)
		for range 10 {
			p := gen.Next()
			if strings.Contains(peeked, p.Name) || strings.Contains(peeked, p.CardNumber) {
				t.Fatalf("admin view shows %s's name or card number:\n%s", p.ID, peeked)
			}
		}
	}
	consumed := run(runConsume, "--kek", kek, "--sub", u.encSub, "--max", "20", "--idle", "30s")
	for _, seed := range []uint64{1, 2} {
		gen := purchase.NewGenerator(seed)
		for range 10 {
			p := gen.Next()
			if !strings.Contains(consumed, p.Name) || !strings.Contains(consumed, p.CardNumber) {
				t.Fatalf("consumer output lacks %s's name or card number:\n%s", p.ID, consumed)
			}
		}
	}
	if got := strings.Count(consumed, "[awskms-"); got != 20 {
		t.Fatalf("want 20 messages under the AWS KMS key, got %d:\n%s", got, consumed)
	}
	t.Logf("consumer, first line: %s", strings.SplitN(consumed, "\n", 2)[0])

	// The field modes that need Vault are refused at start, before any message is read.
	var out bytes.Buffer
	err = runEncrypt(ctx, []string{"--kek", kek, "--sub", u.plainSub, "--topic", u.encTopic, "--max", "1", "--idle", "5s"}, &out)
	if err == nil || !strings.Contains(err.Error(), "mode transit needs a key service that implements keyring.FieldKeyring") {
		t.Fatalf("encrypt --kek with the default (transit) policy: %v, want a clear error at start", err)
	}

	src, dst := t.TempDir(), t.TempDir()
	data := make([]byte, 1<<20+17)
	_, _ = rand.Read(data)
	if err := os.WriteFile(filepath.Join(src, "ledger.bin"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	run(runSendFiles, "--kek", kek, "--dir", src, "--topic", u.largeTopic)
	run(runReceiveFiles, "--kek", kek, "--dir", dst, "--sub", u.largeSub, "--max-files", "1", "--idle", "20s")
	back, err := os.ReadFile(filepath.Join(dst, "ledger.bin"))
	if err != nil || !bytes.Equal(back, data) {
		t.Fatalf("the file did not arrive intact: %v", err)
	}
	t.Logf("SQS/SNS + AWS KMS: 20 purchases through the bridge (fields under envelope mode), consumed, and a 1 MiB file, by URL only, no Vault")
}
