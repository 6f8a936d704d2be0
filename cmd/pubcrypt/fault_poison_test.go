package main

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/devkafka"
	"github.com/pubcrypt/pubcrypt/internal/devvault"
	"github.com/pubcrypt/pubcrypt/internal/purchase"
	"github.com/pubcrypt/pubcrypt/keyring"
)

const (
	poisonTotal = 1000
	poisonAt    = 500 // offset of the bad message
	poisonName  = "Poison Q. Person"
)

// poisonBodies are source messages the default field policy can never protect.
var poisonBodies = map[string][]byte{
	// A card number given as a JSON number: fpe needs a string of digits.
	"card-as-number": []byte(`{"id":"bad-1","name":"` + poisonName + `","address":"1 Poison Lane","card_number":4111111111111111,"amount":1,"currency":"EUR","items":[]}`),
	// Not JSON at all.
	"not-json": []byte(`name=` + poisonName + `; card=4111 1111 1111 1111`),
}

// produceInOrder sends poisonTotal messages to topic one at a time, so that offsets are
// indexes, with bad (if not nil) at poisonAt; send does the sending.
func produceInOrder(t *testing.T, send func(ctx context.Context, m *pubsub.Message) error, bad func(ctx context.Context) error) map[string][]byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sent := map[string][]byte{}
	gen := purchase.NewGenerator(11)
	for i := range poisonTotal {
		if i == poisonAt {
			if err := bad(ctx); err != nil {
				t.Fatal(err)
			}
			continue
		}
		p := gen.Next()
		body, _ := json.Marshal(p)
		sent[p.ID] = body
		if err := send(ctx, &pubsub.Message{Body: body, Metadata: map[string]string{"order": p.ID}}); err != nil {
			t.Fatal(err)
		}
	}
	return sent
}

// allRecords reads every record of topic (those there within a few seconds).
func allRecords(t *testing.T, kafka *devkafka.Broker, topic string) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	recs, _ := kafka.ReadRaw(ctx, topic, 1<<30)
	return recs
}

// readDeadLetter decrypts the one message of a dead-letter topic.
func readDeadLetter(t *testing.T, kr keyring.Keyring, topic string) *pubsub.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sub, err := cryptsub.Open(ctx, "kafka://check-"+topic+"?topic="+topic+"&offset=oldest", cryptsub.Options{Keyring: kr})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(sub)
	m, err := sub.Receive(ctx)
	if err != nil {
		t.Fatalf("dead letter does not decrypt: %v", err)
	}
	m.Ack()
	return m
}

// checkNoLeak fails if a log or the wire shows the poison message's content.
func checkNoLeak(t *testing.T, what, s string) {
	t.Helper()
	if strings.Contains(s, poisonName) || strings.Contains(s, "4111") {
		t.Fatalf("%s shows the bad message's content:\n%s", what, tail(s))
	}
}

// TestEncryptPoisonMessage: one message in 1,000 that can never be protected used to
// make encrypt exit 1 without acknowledging it, so every restart stopped at the same
// message. With --on-message-fault: dead-letter forwards 999 and puts the 1 on the
// dead-letter topic encrypted whole-body (it decrypts to the original); skip forwards 999
// and prints the count; stop exits 4 naming the message and leaves it unacknowledged.
func TestEncryptPoisonMessage(t *testing.T) {
	fe := startVault(t)
	kr := fe.keyring(t)
	for _, tc := range []struct {
		mode   string
		poison string
	}{
		{"dead-letter", "card-as-number"},
		{"skip", "not-json"},
		{"stop", "card-as-number"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			plain, enc, dl := "plain-"+tc.mode, "enc-"+tc.mode, "dl-"+tc.mode
			kafka := startKafka(t, plain, enc, dl)
			t.Setenv(broker.EnvKafkaBrokers, kafka.Addrs[0])
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			top, err := broker.OpenTopic(ctx, "kafka://"+plain)
			if err != nil {
				t.Fatal(err)
			}
			bad := poisonBodies[tc.poison]
			sent := produceInOrder(t, top.Send, func(ctx context.Context) error {
				return top.Send(ctx, &pubsub.Message{Body: bad, Metadata: map[string]string{"order": "bad-1"}})
			})
			_ = shutdown(top)

			env := append([]string{broker.EnvKafkaBrokers + "=" + kafka.Addrs[0]}, fe.env...)
			args := []string{"encrypt", "--sub", "kafka://pubcrypt-encryptor?topic=" + plain + "&offset=oldest",
				"--topic", "kafka://" + enc, "--max", itoa(poisonTotal), "--idle", "20s", "--on-message-fault", tc.mode}
			if tc.mode == "dead-letter" {
				args = append(args, "--dead-letter", "kafka://"+dl)
			}
			p := startCLI(t, env, args...)
			code, _ := p.wait(2 * time.Minute)
			stdout, stderr := p.stdout.String(), p.stderr.String()
			checkNoLeak(t, "encrypt's output", stdout+stderr)
			t.Logf("exit %d: %s / %s", code, lastLine(stdout), lastLine(stderr))

			forwarded := allRecords(t, kafka, enc)
			if tc.mode == "stop" {
				if code != exitMessage {
					t.Fatalf("exit %d, want %d\n%s", code, exitMessage, tail(stderr))
				}
				if !strings.Contains(stderr, "partition 0 offset 500") || !strings.Contains(stderr, "card_number") {
					t.Fatalf("the error does not name the message and why:\n%s", tail(stderr))
				}
				off, err := kafka.CommittedOffset(ctx, "pubcrypt-encryptor", plain, 0)
				if err != nil {
					t.Fatal(err)
				}
				if off > poisonAt {
					t.Fatalf("committed offset %d: the bad message at %d was acknowledged", off, poisonAt)
				}
				t.Logf("stopped at the bad message; committed offset %d, %d forwarded", off, len(forwarded))
				return
			}
			if code != exitOK {
				t.Fatalf("exit %d\n%s", code, tail(stderr))
			}
			if len(forwarded) != poisonTotal-1 {
				t.Fatalf("%d messages forwarded, want %d", len(forwarded), poisonTotal-1)
			}
			for _, r := range forwarded {
				if _, ok := sent[header(r.Headers, "order")]; !ok {
					t.Fatalf("forwarded an unexpected message %q", header(r.Headers, "order"))
				}
			}
			if !strings.Contains(stderr, "partition 0 offset 500") {
				t.Fatalf("the log does not name the bad message:\n%s", tail(stderr))
			}
			switch tc.mode {
			case "skip":
				if !strings.Contains(lastLine(stdout), "999 message(s) encrypted") || !strings.Contains(lastLine(stdout), ", 1 skipped") {
					t.Fatalf("summary does not count the skipped message: %s", lastLine(stdout))
				}
			case "dead-letter":
				if !strings.Contains(lastLine(stdout), "999 message(s) encrypted") || !strings.Contains(lastLine(stdout), "1 dead-lettered") {
					t.Fatalf("summary does not count the dead letter: %s", lastLine(stdout))
				}
				raw := allRecords(t, kafka, dl)
				if len(raw) != 1 {
					t.Fatalf("%d messages on the dead-letter topic, want 1", len(raw))
				}
				checkNoLeak(t, "the dead-letter topic's body", string(raw[0].Value))
				m := readDeadLetter(t, kr, dl)
				if !bytes.Equal(m.Body, bad) {
					t.Fatalf("dead letter decrypts to %q, want the original", m.Body)
				}
				md := m.Metadata
				if md["order"] != "bad-1" || md["dead-letter-source"] != "topic "+plain+" partition 0 offset 500" ||
					!strings.Contains(md["dead-letter-reason"], "card_number") || md["dead-letter-class"] != "message" ||
					md["dead-letter-by"] != "pubcrypt encrypt" {
					t.Fatalf("dead-letter metadata: %v", md)
				}
				t.Logf("dead letter: reason %q, source %q", md["dead-letter-reason"], md["dead-letter-source"])
			}
		})
	}
}

// TestConsumePoisonMessage: a tampered message among 1,000 on the encrypted topic. With
// dead-letter, consume prints 999 and the dead letter decrypts to the raw message as
// received, envelope entries included (carried under dead-letter-raw-); skip prints 999
// and counts 1; stop (the default) exits 4 naming it.
func TestConsumePoisonMessage(t *testing.T) {
	fe := startVault(t)
	kr := fe.keyring(t)
	for _, mode := range []string{"dead-letter", "skip", "stop"} {
		t.Run(mode, func(t *testing.T) {
			enc, dl, scratch := "enc-"+mode, "dl-"+mode, "scratch-"+mode
			kafka := startKafka(t, enc, dl, scratch)
			t.Setenv(broker.EnvKafkaBrokers, kafka.Addrs[0])
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			top, err := crypttopic.Open(ctx, "kafka://"+enc, crypttopic.Options{Keyring: kr})
			if err != nil {
				t.Fatal(err)
			}
			defer shutdown(top)
			// The bad one: a message encrypted properly, then one byte of its body changed.
			scr, err := crypttopic.Open(ctx, "kafka://"+scratch, crypttopic.Options{Keyring: kr})
			if err != nil {
				t.Fatal(err)
			}
			if err := scr.Send(ctx, &pubsub.Message{Body: []byte(`{"id":"bad-1","name":"` + poisonName + `"}`), Metadata: map[string]string{"order": "bad-1"}}); err != nil {
				t.Fatal(err)
			}
			_ = shutdown(scr)
			rec := allRecords(t, kafka, scratch)[0]
			tampered := bytes.Clone(rec.Value)
			tampered[len(tampered)/2] ^= 1
			rawMD := map[string]string{}
			for _, h := range rec.Headers {
				rawMD[h.Key] = string(h.Value)
			}
			sent := produceInOrder(t, top.Send, func(ctx context.Context) error {
				return kafka.ProduceRaw(ctx, &kgo.Record{Topic: enc, Value: tampered, Headers: rec.Headers})
			})

			env := append([]string{broker.EnvKafkaBrokers + "=" + kafka.Addrs[0]}, fe.env...)
			args := []string{"consume", "--sub", "kafka://pubcrypt-consumer?topic=" + enc + "&offset=oldest",
				"--max", itoa(poisonTotal), "--idle", "20s"}
			if mode != "stop" { // stop is the default
				args = append(args, "--on-message-fault", mode)
			}
			if mode == "dead-letter" {
				args = append(args, "--dead-letter", "kafka://"+dl)
			}
			p := startCLI(t, env, args...)
			code, _ := p.wait(2 * time.Minute)
			stdout, stderr := p.stdout.String(), p.stderr.String()
			t.Logf("exit %d: %s / %s", code, lastLine(stdout), lastLine(stderr))
			checkNoLeak(t, "consume's log", stderr)
			printed := consumedIDs(stdout)
			if mode == "stop" {
				if code != exitMessage || !strings.Contains(stderr, "partition 0 offset 500") {
					t.Fatalf("exit %d, want %d naming the message\n%s", code, exitMessage, tail(stderr))
				}
				if len(printed) != poisonAt {
					t.Fatalf("printed %d before stopping, want %d", len(printed), poisonAt)
				}
				return
			}
			if code != exitOK {
				t.Fatalf("exit %d\n%s", code, tail(stderr))
			}
			if distinct(printed) != poisonTotal-1 {
				t.Fatalf("printed %d distinct messages, want %d", distinct(printed), poisonTotal-1)
			}
			for _, id := range printed {
				if _, ok := sent[id]; !ok {
					t.Fatalf("printed an unexpected message %q", id)
				}
			}
			if mode == "skip" {
				if !strings.Contains(lastLine(stdout), "1 undecryptable skipped") {
					t.Fatalf("summary: %s", lastLine(stdout))
				}
				return
			}
			if !strings.Contains(lastLine(stdout), "1 undecryptable dead-lettered") {
				t.Fatalf("summary: %s", lastLine(stdout))
			}
			m := readDeadLetter(t, kr, dl)
			if !bytes.Equal(m.Body, tampered) {
				t.Fatal("dead letter does not decrypt to the raw message as received")
			}
			if got := rawMetadata(m.Metadata); !maps.Equal(got, rawMD) {
				t.Fatalf("raw metadata from the dead letter:\n%v\nwant\n%v", got, rawMD)
			}
			if !strings.Contains(m.Metadata["dead-letter-reason"], "authentication failed") {
				t.Fatalf("reason: %q", m.Metadata["dead-letter-reason"])
			}
			t.Logf("dead letter: reason %q, source %q, raw envelope entries %d", m.Metadata["dead-letter-reason"], m.Metadata["dead-letter-source"], len(rawMD))
		})
	}
}

// TestDeadLetterTopicMissing: a dead-letter topic that does not exist is an error at
// start (exit 3, naming it), not a stall at the first bad message.
func TestDeadLetterTopicMissing(t *testing.T) {
	fe := startVault(t)
	kafka := startKafka(t, topicPlain, topicEncrypted)
	env := append([]string{broker.EnvKafkaBrokers + "=" + kafka.Addrs[0]}, fe.env...)
	for name, args := range map[string][]string{
		"encrypt": {"encrypt", "--sub", "kafka://pubcrypt-encryptor?topic=" + topicPlain, "--topic", "kafka://" + topicEncrypted, "--dead-letter", "kafka://no-such-topic"},
		"consume": {"consume", "--sub", "kafka://pubcrypt-consumer?topic=" + topicEncrypted, "--dead-letter", "kafka://no-such-topic"},
	} {
		start := time.Now()
		p := startCLI(t, env, args...)
		code, end := p.wait(time.Minute)
		msg := lastLine(p.stderr.String())
		t.Logf("%s: exit %d after %v: %s", name, code, end.Sub(start).Round(time.Millisecond), msg)
		if code != exitEnvironment || !strings.Contains(msg, "--dead-letter") || !strings.Contains(msg, `"no-such-topic"`) {
			t.Fatalf("%s: exit %d, want %d naming the topic: %s", name, code, exitEnvironment, msg)
		}
	}
}

// TestConsumeExpiredTokenAcksNothing: with an expired Vault token, consume
// --skip-undecryptable used to ack every message as "undecryptable" (241 of 241, exit 0),
// and a rerun with a good token in the same group got nothing back. A refused token is a
// fault of the environment: nothing is skipped or acknowledged, the outage is ridden out
// (here bounded by --max-outage: exit 3), and the rerun with a good token gets every
// message.
func TestConsumeExpiredTokenAcksNothing(t *testing.T) {
	const n, group = 60, "pubcrypt-consumer"
	fe := startVault(t)
	kr := fe.keyring(t)
	kafka := startKafka(t, topicEncrypted)
	sent := produceEncrypted(t, kr, kafka.Addrs[0], topicEncrypted, 5, n)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	token, err := fe.vault.CreateTokenWith(ctx, devvault.TokenOptions{Policy: "consumer",
		PolicyHCL: `path "transit/decrypt/pubcrypt" { capabilities = ["update"] }`, TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // expired
	args := []string{"consume", "--sub", "kafka://" + group + "?topic=" + topicEncrypted + "&offset=oldest", "--idle", "20s"}

	expired := []string{broker.EnvKafkaBrokers + "=" + kafka.Addrs[0], "VAULT_ADDR=" + fe.vault.Addr, "VAULT_TOKEN=" + token}
	p := startCLI(t, expired, append(args, "--skip-undecryptable", "--max-outage", "3s")...)
	code, _ := p.wait(time.Minute)
	t.Logf("expired token: exit %d: %s / %s", code, lastLine(p.stdout.String()), lastLine(p.stderr.String()))
	if code != exitEnvironment || !strings.Contains(p.stdout.String(), "0 message(s) decrypted, 0 undecryptable skipped") ||
		!strings.Contains(p.stderr.String(), "permission denied") {
		t.Fatalf("expired token: exit %d, want %d with nothing skipped and the refusal named\nstdout:\n%s\nstderr:\n%s", code, exitEnvironment, tail(p.stdout.String()), tail(p.stderr.String()))
	}
	if off, err := kafka.CommittedOffset(ctx, group, topicEncrypted, 0); err != nil || off > 0 {
		t.Fatalf("committed offset %d, %v after the expired token: messages were acknowledged", off, err)
	}

	p = startCLI(t, append([]string{broker.EnvKafkaBrokers + "=" + kafka.Addrs[0]}, fe.env...), append(args, "--max", itoa(n))...)
	if code, _ := p.wait(2 * time.Minute); code != exitOK {
		t.Fatalf("good token: exit %d\n%s", code, tail(p.stderr.String()))
	}
	got := consumedIDs(p.stdout.String())
	for _, id := range got {
		if _, ok := sent[id]; !ok {
			t.Fatalf("unexpected message %q", id)
		}
	}
	if distinct(got) != n {
		t.Fatalf("the rerun with a good token got %d of %d", distinct(got), n)
	}
	t.Logf("rerun with a good token in the same group: %d of %d", distinct(got), n)
}
