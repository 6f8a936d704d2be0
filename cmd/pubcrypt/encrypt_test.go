package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/devkafka"
	"github.com/pubcrypt/pubcrypt/internal/devvault"
	"github.com/pubcrypt/pubcrypt/internal/purchase"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// TestEncryptBridgeSurvivesKill runs `pubcrypt encrypt` as a real process against a real
// Vault and Kafka broker, kills it with SIGKILL in the middle of a stream, starts it again,
// and checks that every source message reached the encrypted topic and decrypts to what
// was produced, and that the kill re-sent at most one batch: the bridge commits the
// group's offsets after every batch, so only the batch in flight is sent twice.
func TestEncryptBridgeSurvivesKill(t *testing.T) {
	const n, batch = 3000, 50
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	vault, err := devvault.Start(ctx, devvault.Options{Keys: []string{demoKey}})
	if err != nil {
		t.Fatalf("Vault dev server: %v", err)
	}
	defer vault.Stop()
	if err := vault.CreateFieldKeys(ctx, demoDetKey, demoFPEKey); err != nil {
		t.Fatal(err)
	}
	kafka, err := devkafka.Start(devkafka.Options{Topics: []string{topicPlain, topicEncrypted}})
	if err != nil {
		t.Fatal(err)
	}
	defer kafka.Close()
	t.Setenv(broker.EnvKafkaBrokers, kafka.Addrs[0])
	for _, kv := range vault.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}

	// n plaintext purchases on the source topic.
	plain, err := broker.OpenTopic(ctx, "kafka://"+topicPlain)
	if err != nil {
		t.Fatal(err)
	}
	sent := map[string][]byte{}
	if _, err := producePurchases(ctx, plain, purchase.NewGenerator(5), n, 0, func(p purchase.Purchase) {
		sent[p.ID], _ = json.Marshal(p)
	}); err != nil {
		t.Fatal(err)
	}
	_ = plain.Shutdown(ctx)

	bin := filepath.Join(t.TempDir(), "pubcrypt")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	args := []string{"encrypt", "--sub", "kafka://pubcrypt-encryptor?topic=" + topicPlain + "&offset=oldest",
		"--topic", "kafka://" + topicEncrypted, "--batch", fmt.Sprint(batch)}

	// First run: killed once it has forwarded some batches.
	first := exec.Command(bin, args...)
	stdout, _ := first.StdoutPipe()
	first.Stderr = os.Stderr
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	forwarded := 0
	for forwarded < 400 && lines.Scan() {
		if strings.HasPrefix(lines.Text(), "encrypted ") {
			forwarded++
		}
	}
	_ = first.Process.Signal(syscall.SIGKILL)
	_ = first.Wait()
	t.Logf("first bridge killed with SIGKILL after reporting %d forwarded messages", forwarded)
	if forwarded < 400 {
		t.Fatalf("first bridge stopped early after %d messages", forwarded)
	}

	// Second run: picks up from the committed offsets and stops when the source is idle.
	// The idle window outlasts the consumer-group session timeout (10 s), within which
	// the broker still counts the killed bridge as the partition's owner.
	second := exec.Command(bin, append(args, "--idle", "20s")...)
	var out bytes.Buffer
	second.Stdout, second.Stderr = &out, &out
	if err := second.Run(); err != nil {
		t.Fatalf("second bridge: %v\n%s", err, out.String())
	}
	t.Logf("second bridge: %s", lastLine(out.String()))

	// Every purchase is on the encrypted topic and decrypts to what was produced.
	kr, err := keyring.NewVault(keyring.VaultOptions{Key: demoKey})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := cryptsub.Open(ctx, "kafka://pubcrypt-check?topic="+topicEncrypted+"&offset=oldest", cryptsub.Options{Keyring: kr})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(sub)
	got := map[string]int{}
	total := 0
	for {
		wait := 10 * time.Second
		if len(got) == n {
			wait = 2 * time.Second // the bridges are done: count the duplicates still behind
		}
		rctx, rcancel := context.WithTimeout(ctx, wait)
		m, err := sub.Receive(rctx)
		rcancel()
		if err != nil && len(got) == n {
			break
		}
		if err != nil {
			t.Fatalf("after %d distinct of %d: %v", len(got), n, err)
		}
		m.Ack()
		total++
		id := m.Metadata["order"]
		if !bytes.Equal(m.Body, sent[id]) {
			t.Fatalf("order %q did not decrypt to what was produced", id)
		}
		got[id]++
	}
	t.Logf("all %d purchases arrived encrypted (%d deliveries, %d duplicates from the kill, bound %d)", n, total, total-n, batch)
	if total-n > batch {
		t.Fatalf("the kill re-sent %d messages; the bound is one batch (%d)", total-n, batch)
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return fmt.Sprint(s)
}

// TestEncryptNeverPrintsRecordKeys: gocloud's kafkapubsub names a keyed record by its key
// (LoggableID), and record keys are often customer IDs. encrypt's per-message lines and
// its logs name records by topic, partition and offset instead, so no key reaches the
// terminal or a log, also when a record is refused.
func TestEncryptNeverPrintsRecordKeys(t *testing.T) {
	env := startVault(t)
	kafka := startKafka(t, topicPlain, topicEncrypted)
	cliEnv := append(env.env, "KAFKA_BROKERS="+kafka.Addrs[0])
	gen := purchase.NewGenerator(31)
	var recs []*kgo.Record
	for i := range 5 {
		body, _ := json.Marshal(gen.Next())
		if i == 4 {
			body = []byte("not json")
		}
		recs = append(recs, &kgo.Record{Topic: topicPlain, Key: []byte(fmt.Sprintf("secret-customer-%d", i)), Value: body})
	}
	if err := kafka.ProduceRaw(context.Background(), recs...); err != nil {
		t.Fatal(err)
	}
	p := startCLI(t, cliEnv, "encrypt", "--sub", "kafka://enc?topic="+topicPlain+"&offset=oldest", "--topic", "kafka://"+topicEncrypted,
		"--max", "5", "--on-message-fault", "skip")
	code, _ := p.wait(time.Minute)
	out := p.stdout.String() + p.stderr.String()
	if code != exitOK || strings.Count(p.stdout.String(), "encrypted topic "+topicPlain+" partition 0 offset ") != 4 {
		t.Fatalf("encrypt: exit %d\n%s", code, out)
	}
	if strings.Contains(out, "secret-customer") {
		t.Fatalf("encrypt printed a record key:\n%s", out)
	}
}

// TestEncryptKeepsPerKeyOrder: 10,000 keyed records of 50 customers over 6 partitions go
// through `pubcrypt encrypt` at its default batch (100) on kgo://: the bridge reads each
// partition in order and produces each batch in order, so on the encrypted topic every
// customer's records are in the order they were produced (0 inversions), read back and
// decrypted by cryptsub. The demo's field policy keeps its batched Vault calls. Real Vault,
// kfake.
func TestEncryptKeepsPerKeyOrder(t *testing.T) {
	const n, keys = 10000, 50
	env := startVault(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kafka := keyedSource(ctx, t, 41, n, keys)
	cliEnv := append(env.env, "KAFKA_BROKERS="+kafka.Addrs[0])
	p := startCLI(t, cliEnv, "encrypt", "--sub", "kgo://enc?topic="+topicPlain+"&offset=oldest", "--topic", "kgo://"+topicEncrypted, "--max", fmt.Sprint(n))
	if code, _ := p.wait(2 * time.Minute); code != exitOK {
		t.Fatalf("encrypt: exit %d\n%s", code, tail(p.stderr.String()))
	}
	got := readEncrypted(ctx, t, env, "order-check", topicEncrypted, n)
	t.Logf("%d records of %d customers through encrypt at its default batch: %d order inversions per key", n, keys, got.inversions)
	if got.inversions != 0 || len(got.last) != keys || len(got.seen) != n {
		t.Fatalf("%d inversions, %d customers seen, %d records", got.inversions, len(got.last), len(got.seen))
	}
}
