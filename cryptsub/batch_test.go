package cryptsub_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
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
