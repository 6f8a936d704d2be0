package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/internal/devkafka"
	"github.com/pubcrypt/pubcrypt/internal/netfault"
	"github.com/pubcrypt/pubcrypt/internal/purchase"
)

// keyedPurchases are n purchases of keys customers as Kafka records on topic, keyed by
// customer, each with its customer number and its sequence number in the body.
func keyedPurchases(topic string, seed uint64, n, keys int) []*kgo.Record {
	gen := purchase.NewGenerator(seed)
	recs := make([]*kgo.Record, n)
	for i := range recs {
		var doc map[string]any
		raw, _ := json.Marshal(gen.Next())
		_ = json.Unmarshal(raw, &doc)
		doc["customer"], doc["seq"] = i%keys, i
		body, _ := json.Marshal(doc)
		recs[i] = &kgo.Record{Topic: topic, Key: []byte(fmt.Sprintf("c%02d", i%keys)), Value: body}
	}
	return recs
}

// orderCheck counts what a consumer of keyedPurchases saw: each sequence number's
// deliveries, and the records that came after a later one of their customer.
type orderCheck struct {
	seen       map[int]int // seq → times received
	last       map[int]int // customer → last seq
	inversions int
}

func (c *orderCheck) add(t *testing.T, body []byte) {
	t.Helper()
	if c.seen == nil {
		c.seen, c.last = map[int]int{}, map[int]int{}
	}
	var doc struct{ Customer, Seq int }
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	if prev, ok := c.last[doc.Customer]; ok && doc.Seq < prev {
		c.inversions++
	}
	c.last[doc.Customer] = doc.Seq
	c.seen[doc.Seq]++
}

// requireOnceInOrder fails unless c saw each of n records once, every key in order; it
// logs what it saw first, after what.
func (c *orderCheck) requireOnceInOrder(t *testing.T, n int, what string) {
	t.Helper()
	t.Logf("read_committed%s: %d distinct of %d, %d duplicates, %d order inversions per key",
		what, len(c.seen), n, c.duplicates(), c.inversions)
	if len(c.seen) != n || c.duplicates() != 0 || c.inversions != 0 {
		t.Fatalf("want exactly %d records in order, once each", n)
	}
}

func (c *orderCheck) duplicates() int {
	d := 0
	for _, k := range c.seen {
		d += k - 1
	}
	return d
}

// readEncrypted decrypts topic from its start with cryptsub on kgo:// (read_committed, the
// default) until n distinct records came and then nothing for a few seconds.
func readEncrypted(ctx context.Context, t *testing.T, env *faultEnv, group, topic string, n int) *orderCheck {
	t.Helper()
	sub, err := cryptsub.Open(ctx, "kgo://"+group+"?topic="+topic+"&offset=oldest&key_name=key", cryptsub.Options{Keyring: env.keyring(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Shutdown(context.Background())
	c := &orderCheck{}
	for {
		wait := 30 * time.Second
		if len(c.seen) >= n {
			wait = 3 * time.Second // all there: count what else comes (duplicates)
		}
		rctx, cancel := context.WithTimeout(ctx, wait)
		msgs, _, errs := sub.ReceiveBatch(rctx, 1000)
		cancel()
		if msgs[0] == nil { // nothing within wait
			if len(c.seen) >= n || ctx.Err() != nil {
				return c
			}
			t.Fatalf("%d distinct of %d records, then nothing for %v", len(c.seen), n, wait)
		}
		for i, m := range msgs {
			if errs[i] != nil {
				t.Fatalf("receive: %v", errs[i])
			}
			m.Ack()
			c.add(t, m.Body)
		}
	}
}

// countRecords counts the records of topic a client of isolation level iso sees (with
// read_uncommitted, those of aborted transactions too).
func countRecords(ctx context.Context, t *testing.T, kafka *devkafka.Broker, topic string, iso kgo.IsolationLevel) int {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafka.Addrs...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(iso))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	n := 0
	for {
		wait := 3 * time.Second // after the last record: nothing more is coming
		if n == 0 {
			wait = 30 * time.Second // a loaded machine may take a while for the first fetch
		}
		pctx, cancel := context.WithTimeout(ctx, wait)
		fs := cl.PollFetches(pctx)
		cancel()
		k := fs.NumRecords()
		if k == 0 && errors.Is(pctx.Err(), context.DeadlineExceeded) {
			return n
		}
		n += k
	}
}

// keyedSource starts a 6-partition kfake with the plain and encrypted topics, puts
// keyedPurchases(seed, n, keys) on the plain one, and points KAFKA_BROKERS at it.
func keyedSource(ctx context.Context, t *testing.T, seed uint64, n, keys int) *devkafka.Broker {
	t.Helper()
	kafka, err := devkafka.Start(devkafka.Options{Topics: []string{topicPlain, topicEncrypted}, Partitions: 6})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kafka.Close)
	t.Setenv("KAFKA_BROKERS", kafka.Addrs[0])
	if err := kafka.ProduceRaw(ctx, keyedPurchases(topicPlain, seed, n, keys)...); err != nil {
		t.Fatal(err)
	}
	return kafka
}

// TestEncryptExactlyOnceSurvivesKills: 3,000 keyed records on 6 partitions through
// `pubcrypt encrypt --exactly-once`, the bridge SIGKILLed twice mid-stream and started
// again under its transactional ID. A read_committed consumer of the encrypted topic
// decrypts exactly 3,000, no duplicate, every key in order, although the killed bridges
// had written records of transactions they never committed. Real Vault, kfake.
func TestEncryptExactlyOnceSurvivesKills(t *testing.T) {
	const n, keys = 3000, 50
	env := startVault(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	kafka := keyedSource(ctx, t, 43, n, keys)
	cliEnv := append(env.env, "KAFKA_BROKERS="+kafka.Addrs[0])
	args := []string{"encrypt", "--exactly-once", "--transactional-id", "bridge-1",
		"--sub", "kgo://enc?topic=" + topicPlain + "&offset=oldest", "--topic", "kgo://" + topicEncrypted}

	printed := 0
	for _, killAt := range []int{400, 1400} {
		p := startCLI(t, cliEnv, args...)
		printed += len(p.waitLines("encrypted ", killAt-printed, 2*time.Minute))
		open := killMidTransaction(ctx, t, kafka, p, topicEncrypted)
		t.Logf("bridge SIGKILLed after %d records reported committed in all, with %d records of its open transaction written", printed, open)
	}
	last := startCLI(t, cliEnv, append(args, "--idle", "20s")...)
	if code, _ := last.wait(3 * time.Minute); code != exitOK {
		t.Fatalf("last bridge: exit %d\n%s", code, tail(last.stderr.String()))
	}
	t.Logf("last bridge: %s", lastLine(last.stdout.String()))

	got := readEncrypted(ctx, t, env, "eos-check", topicEncrypted, n)
	written := countRecords(ctx, t, kafka, topicEncrypted, kgo.ReadUncommitted())
	t.Logf("read_committed: %d distinct of %d, %d duplicates, %d order inversions per key; "+
		"records written to the topic (read_uncommitted, aborted included): %d",
		len(got.seen), n, got.duplicates(), got.inversions, written)
	if len(got.seen) != n || got.duplicates() != 0 || got.inversions != 0 {
		t.Fatalf("want exactly %d records in order, once each", n)
	}
	if written <= n {
		t.Fatalf("%d records written: the kills aborted no transaction that had written records", written)
	}
	if !strings.Contains(last.stdout.String(), "(exactly once, transactional ID bridge-1)") {
		t.Fatalf("the summary does not say exactly once:\n%s", lastLine(last.stdout.String()))
	}
}

// killMidTransaction SIGKILLs p once topic holds records of an open transaction (its
// high watermark is past its last stable offset), and returns how many.
func killMidTransaction(ctx context.Context, t *testing.T, kafka *devkafka.Broker, p *proc, topic string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafka.Addrs...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		end, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		stable, err := adm.ListCommittedOffsets(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		var open int64
		end.Each(func(o kadm.ListedOffset) {
			if s, ok := stable.Lookup(o.Topic, o.Partition); ok {
				open += o.Offset - s.Offset
			}
		})
		if open > 0 {
			_, _ = p.signal(syscall.SIGKILL, 30*time.Second)
			return open
		}
	}
	t.Fatal("no open transaction with records seen within a minute")
	return 0
}

// TestEncryptThreeBridges: three `pubcrypt encrypt --exactly-once` instances in one
// consumer group share a 6-partition topic of 6,000 keyed records; one is SIGKILLed once
// a third of the records are committed, and the other two take its partitions over. A
// read_committed consumer decrypts every record once, every key in order; each
// instance's share is logged. Real Vault, kfake.
func TestEncryptThreeBridges(t *testing.T) {
	const n, keys = 6000, 50
	env := startVault(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	kafka := keyedSource(ctx, t, 47, n, keys)
	cliEnv := append(env.env, "KAFKA_BROKERS="+kafka.Addrs[0])
	var (
		mu     sync.Mutex
		shares = map[string]int{}
		total  int
		third  = make(chan struct{})
		wg     sync.WaitGroup
	)
	procs := map[string]*proc{}
	for _, id := range []string{"a", "b", "c"} {
		// The survivors wait out the killed member's session (10 s) and open
		// transaction (10 s) before its partitions are theirs: --idle outlasts both.
		p := startCLI(t, cliEnv, "encrypt", "--exactly-once", "--transactional-id", "bridge-"+id, "--idle", "30s",
			"--sub", "kgo://enc?topic="+topicPlain+"&offset=oldest", "--topic", "kgo://"+topicEncrypted)
		procs[id] = p
		wg.Add(1)
		go func() {
			defer wg.Done()
			for l := range p.lines {
				if !strings.HasPrefix(l, "encrypted ") {
					continue
				}
				mu.Lock()
				shares[id]++
				total++
				if total == n/3 {
					close(third)
				}
				mu.Unlock()
			}
		}()
	}
	select {
	case <-third:
	case <-ctx.Done():
		t.Fatal("a third of the records were not committed in time")
	}
	_, code := procs["c"].signal(syscall.SIGKILL, 30*time.Second)
	mu.Lock()
	atKill := shares["c"]
	mu.Unlock()
	t.Logf("bridge c SIGKILLed (exit %d) after %d of its records committed", code, atKill)
	for _, id := range []string{"a", "b"} {
		if code, _ := procs[id].wait(3 * time.Minute); code != exitOK {
			t.Fatalf("bridge %s: exit %d\n%s", id, code, tail(procs[id].stderr.String()))
		}
	}
	wg.Wait()
	t.Logf("shares (records each instance committed): a %d, b %d, c %d (killed); total %d of %d",
		shares["a"], shares["b"], shares["c"], total, n)
	for _, id := range []string{"a", "b"} {
		if shares[id] == 0 {
			t.Fatalf("bridge %s committed nothing: the group did not share the partitions", id)
		}
	}

	got := readEncrypted(ctx, t, env, "three-check", topicEncrypted, n)
	got.requireOnceInOrder(t, n, "")
}

// TestEncryptExactlyOnceRidesOutVaultCut: Vault cut off for 6 s in the middle of an
// exactly-once bridge's stream. The batches it cannot protect are aborted (nothing of
// them committed) and read again once Vault answers; a read_committed consumer decrypts
// the 3,000 records once each. Real Vault behind a cut-able proxy, kfake.
func TestEncryptExactlyOnceRidesOutVaultCut(t *testing.T) {
	const n, keys = 3000, 50
	fe := startVault(t)
	vaultProxy, err := netfault.Listen(strings.TrimPrefix(fe.vault.Addr, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer vaultProxy.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	kafka := keyedSource(ctx, t, 53, n, keys)
	env := []string{"KAFKA_BROKERS=" + kafka.Addrs[0], "VAULT_ADDR=http://" + vaultProxy.Addr(), "VAULT_TOKEN=" + fe.vault.Token}
	p := startCLI(t, env, "encrypt", "--exactly-once", "--transactional-id", "bridge-v", "--idle", "20s",
		"--sub", "kgo://enc?topic="+topicPlain+"&offset=oldest", "--topic", "kgo://"+topicEncrypted)
	p.waitLines("encrypted ", 500, 2*time.Minute)
	vaultProxy.Cut()
	time.Sleep(6 * time.Second)
	vaultProxy.Pass()
	if code, _ := p.wait(3 * time.Minute); code != exitOK {
		t.Fatalf("bridge: exit %d\n%s", code, tail(p.stderr.String()))
	}
	t.Logf("bridge: %s", lastLine(p.stdout.String()))
	if !strings.Contains(p.stderr.String(), "outage") {
		t.Fatalf("the bridge did not report the outage:\n%s", tail(p.stderr.String()))
	}
	got := readEncrypted(ctx, t, fe, "vault-check", topicEncrypted, n)
	got.requireOnceInOrder(t, n, " after a 6 s Vault cut")
}

// TestEncryptExactlyOnceFencesTwin: a second bridge started under the first one's
// transactional ID takes over: the first stops with exit status 3 naming the ID (it does
// not open again, which would fence the second in turn), and the records still arrive
// once each. Real Vault, kfake.
func TestEncryptExactlyOnceFencesTwin(t *testing.T) {
	const n, keys = 3000, 50
	env := startVault(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	kafka := keyedSource(ctx, t, 59, n, keys)
	cliEnv := append(env.env, "KAFKA_BROKERS="+kafka.Addrs[0])
	args := []string{"encrypt", "--exactly-once", "--transactional-id", "twin", "--idle", "30s",
		"--sub", "kgo://enc?topic=" + topicPlain + "&offset=oldest", "--topic", "kgo://" + topicEncrypted}
	first := startCLI(t, cliEnv, args...)
	first.waitLines("encrypted ", 300, 2*time.Minute)
	second := startCLI(t, cliEnv, args...)
	code, _ := first.wait(2 * time.Minute)
	t.Logf("first bridge: exit %d: %s", code, lastLine(first.stderr.String()))
	if code != exitEnvironment || !strings.Contains(first.stderr.String(), `transactional ID "twin"`) {
		t.Fatalf("first bridge: exit %d, want %d naming the ID\n%s", code, exitEnvironment, tail(first.stderr.String()))
	}
	if code, _ := second.wait(3 * time.Minute); code != exitOK {
		t.Fatalf("second bridge: exit %d\n%s", code, tail(second.stderr.String()))
	}
	got := readEncrypted(ctx, t, env, "twin-check", topicEncrypted, n)
	got.requireOnceInOrder(t, n, "")
}

// TestEncryptExactlyOnceDeadLetters: under --exactly-once the dead letters of a batch are
// written in its transaction, on the same client. 40 records of which 4 are not JSON:
// 36 encrypted and 4 dead-lettered, read committed, each once. Real Vault, kfake.
func TestEncryptExactlyOnceDeadLetters(t *testing.T) {
	const n = 40
	env := startVault(t)
	kafka := startKafka(t, topicPlain, topicEncrypted, "purchases_dead_letter")
	cliEnv := append(env.env, "KAFKA_BROKERS="+kafka.Addrs[0])
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	recs := keyedPurchases(topicPlain, 61, n, 5)
	for i := 5; i < n; i += 10 {
		recs[i].Value = []byte("not json")
	}
	if err := kafka.ProduceRaw(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	p := startCLI(t, cliEnv, "encrypt", "--exactly-once", "--transactional-id", "dl", "--max", fmt.Sprint(n),
		"--on-message-fault", "dead-letter", "--dead-letter", "kgo://purchases_dead_letter",
		"--sub", "kgo://enc?topic="+topicPlain+"&offset=oldest", "--topic", "kgo://"+topicEncrypted)
	if code, _ := p.wait(time.Minute); code != exitOK {
		t.Fatalf("encrypt: exit %d\n%s", code, tail(p.stderr.String()))
	}
	summary := lastLine(p.stdout.String())
	t.Logf("encrypt: %s", summary)
	if !strings.Contains(summary, "36 message(s) encrypted") || !strings.Contains(summary, "4 dead-lettered") {
		t.Fatalf("summary: %s", summary)
	}
	enc := countRecords(ctx, t, kafka, topicEncrypted, kgo.ReadCommitted())
	dl := countRecords(ctx, t, kafka, "purchases_dead_letter", kgo.ReadCommitted())
	t.Logf("read committed: %d encrypted, %d dead letters", enc, dl)
	if enc != 36 || dl != 4 {
		t.Fatalf("read committed: %d encrypted, %d dead letters; want 36 and 4", enc, dl)
	}
}
