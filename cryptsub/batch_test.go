package cryptsub_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"gocloud.dev/pubsub"
	"gocloud.dev/pubsub/mempubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/netfault"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// TestReceiveBatchTransitFields sends 500 purchases with transit fields through Kafka and
// a real Vault, copies them to a second topic with one message tampered in the middle,
// and receives that topic with ReceiveBatch(100): every other body comes back byte for
// byte, the tampered one as its *DecryptError, and the receive side costs at most 0.05
// Vault calls per message.
func TestReceiveBatchTransitFields(t *testing.T) {
	const src, topic, n, bad = "batch_genuine", "batch_received", 500, 250
	b := newKafka(t, src, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	policy, err := crypttopic.ParseFieldPolicy("name=transit,address=transit,card_number=transit")
	if err != nil {
		t.Fatal(err)
	}
	top, err := crypttopic.Open(ctx, "kafka://"+src, crypttopic.Options{Keyring: newVault(t, vaultServer), Fields: policy})
	if err != nil {
		t.Fatal(err)
	}
	ps, bodies := purchases(21, n)
	sendBatches(t, ctx, top, ps, bodies, 100)
	if err := top.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	byOrder := map[string]int{}
	for i, p := range ps {
		byOrder[p.ID] = i
	}

	raw := readRaw(t, b, src, n)
	records := make([]*kgo.Record, len(raw))
	for i, r := range raw {
		c := &kgo.Record{Topic: topic, Value: bytes.Clone(r.Value)}
		for _, h := range r.Headers {
			c.Headers = append(c.Headers, kgo.RecordHeader{Key: h.Key, Value: bytes.Clone(h.Value)})
		}
		records[i] = c
	}
	records[bad].Value[len(records[bad].Value)/2] ^= 0x01
	tampered := header(records[bad], "order")
	produceRaw(t, b, records...)

	recv := newVault(t, vaultServer)
	sub, err := cryptsub.Open(ctx, "kafka://g-batch?topic="+topic+"&offset=oldest", cryptsub.Options{Keyring: recv})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Shutdown(context.Background())

	got, batches, refused := 0, 0, 0
	seen := map[string]bool{}
	for got < n {
		msgs, infos, errs := sub.ReceiveBatch(ctx, 100)
		if len(msgs) != len(infos) || len(msgs) != len(errs) || len(msgs) == 0 || len(msgs) > 100 {
			t.Fatalf("ReceiveBatch returned %d messages, %d infos, %d errors", len(msgs), len(infos), len(errs))
		}
		batches++
		for i, m := range msgs {
			if m == nil {
				t.Fatalf("subscription error after %d messages: %v", got, errs[i])
			}
			got++
			m.Ack()
			if errs[i] != nil {
				var de *cryptsub.DecryptError
				if !errors.As(errs[i], &de) || de.Message != m || !errors.Is(errs[i], cryptsub.ErrTampered) {
					t.Fatalf("message %s: %v, want a DecryptError wrapping ErrTampered carrying the message", m.LoggableID, errs[i])
				}
				if id := m.Metadata["order"]; id != tampered {
					t.Fatalf("message %s failed, but only %s was tampered with: %v", id, tampered, errs[i])
				}
				refused++
				continue
			}
			id := m.Metadata["order"]
			k, ok := byOrder[id]
			if !ok || seen[id] {
				t.Fatalf("unexpected or repeated message %q", id)
			}
			seen[id] = true
			if !infos[i].Fields || !infos[i].Encrypted || !bytes.Equal(m.Body, bodies[k]) {
				t.Fatalf("purchase %s: decrypted body differs from what was sent (info %+v)\n got %s\nwant %s", id, infos[i], m.Body, bodies[k])
			}
		}
	}
	if refused != 1 || len(seen) != n-1 {
		t.Fatalf("%d refused, %d decrypted; want 1 and %d", refused, len(seen), n-1)
	}
	perMsg := float64(recv.Calls()) / n
	t.Logf("ReceiveBatch(100) of %d transit-field messages: %d batches, %d Vault calls on the receive side, %.3f per message", n, batches, recv.Calls(), perMsg)
	if perMsg > 0.05 {
		t.Fatalf("%.3f receive-side Vault calls per message, want ≤ 0.05", perMsg)
	}
}

// TestReceiveBatchVaultDownAsksOnce: with Vault down, ReceiveBatch asked it once for each
// message of the batch in turn, to unwrap its data key (about a second each with Vault
// refusing connections, a whole timeout each with Vault silent), so a consumer learned of
// the outage only after up to a hundred of them. Found by the fault suite (Vault killed or
// silent under consume: no outage logged within a minute). Now the first fault of the
// environment ends the asking: the other messages of the batch are opened under cached
// keys or get the same fault, and none is a fault of the message. Whole bodies and
// protected fields alike.
func TestReceiveBatchVaultDownAsksOnce(t *testing.T) {
	policy, err := crypttopic.ParseFieldPolicy("name=transit,card_number=envelope")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		fields crypttopic.FieldPolicy
		body   string
	}{
		{"whole body", nil, `{"name":"Ada %d","card_number":"4111111111111111"}`},
		{"fields", policy, `{"name":"Ada %d","card_number":"4111111111111111"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 100
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			mt := mempubsub.NewTopic()
			ms := mempubsub.NewSubscription(mt, time.Minute)
			defer ms.Shutdown(ctx)
			// A data key of its own per message: every message needs Vault, none is cached.
			top, err := crypttopic.New(mt, crypttopic.Options{Keyring: newVault(t, vaultServer), Fields: tc.fields,
				FieldKeys: crypttopic.FieldKeys{Deterministic: detKey, FPE: fpeKey}, Reuse: keyring.ReusePolicy{PerMessage: true}})
			if err != nil {
				t.Fatal(err)
			}
			var msgs []*pubsub.Message
			for i := range n {
				msgs = append(msgs, &pubsub.Message{Body: []byte(fmt.Sprintf(tc.body, i))})
			}
			if err := top.SendBatch(ctx, msgs); err != nil {
				t.Fatal(err)
			}

			// The receiver's Vault refuses every connection.
			proxy, err := netfault.Listen(strings.TrimPrefix(vaultServer.Addr, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer proxy.Close()
			proxy.Cut()
			c, err := vaultServer.Client()
			if err != nil {
				t.Fatal(err)
			}
			if err := c.SetAddress("http://" + proxy.Addr()); err != nil {
				t.Fatal(err)
			}
			down, err := keyring.NewVault(keyring.VaultOptions{Client: c, Key: transitKey})
			if err != nil {
				t.Fatal(err)
			}
			sub, err := cryptsub.New(ms, cryptsub.Options{Keyring: down})
			if err != nil {
				t.Fatal(err)
			}
			got, _, errs := sub.ReceiveBatch(ctx, n)
			defer func() {
				for _, m := range got {
					m.Nack() // never acked: a fault of the environment
				}
			}()
			if len(got) != n {
				t.Fatalf("ReceiveBatch returned %d messages, want the %d sent at once", len(got), n)
			}
			for i, err := range errs {
				var de *cryptsub.DecryptError
				if !errors.As(err, &de) || de.Class() != fault.Environment {
					t.Fatalf("message %d: %v, want a *DecryptError of class environment", i, err)
				}
			}
			// One request and the client's one retry, not one per message.
			t.Logf("%d messages, Vault down: %d requests to Vault", n, down.Calls())
			if calls := down.Calls(); calls > 2 {
				t.Fatalf("ReceiveBatch sent %d requests to a Vault that is down, for %d messages; want one (and its retry)", calls, n)
			}
		})
	}
}
