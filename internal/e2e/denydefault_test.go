package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/fault"
)

// denyCanaries are values put in fields a deny-by-default policy does not name: a new
// top-level field, a field one level deeper than the policy's author thought of, a case
// variant of a name, a field inside an array element, and a key the path grammar cannot
// even spell. None may reach the broker in clear, nor in base64.
var denyCanaries = []string{
	"canary-email-5f1c@example.org",     // email: new top-level field
	"4000 0566 5566 5556",               // payment.card_number: nested one level deeper
	"Canary-Name-Zanele-Mensah",         // Name: case variant of a name
	"canary-note-in-array-element-9b2e", // items[1].note: inside an array element
	"canary-key-with-space-77aa",        // "home address": a key no path can name
}

// denyBody is purchase i with the canaries in it.
func denyBody(i int) []byte {
	return fmt.Appendf(nil, `{"order_id":"ord-%04d","created_at":"2026-12-03T14:%02d:00Z","email":%q,`+
		`"payment":{"card_number":%q,"amount":%d.95,"currency":"EUR"},"Name":%q,`+
		`"items":[{"sku":"BK-101","qty":1},{"sku":"SP-330","qty":%d,"note":%q}],"home address":%q,"gift":false}`,
		i, i%60, denyCanaries[0], denyCanaries[1], 10+i, denyCanaries[2], i%5+1, denyCanaries[3], denyCanaries[4])
}

// forms returns every way a canary could be written on the wire: as is, its digits
// alone, and its base64 (standard and URL alphabets, with and without padding, at the
// three alignments a value inside a longer base64 text can have).
func forms(s string) [][]byte {
	out := [][]byte{[]byte(s)}
	if d := strings.ReplaceAll(s, " ", ""); d != s {
		out = append(out, []byte(d))
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		for shift := range 3 {
			b := enc.EncodeToString(append(make([]byte, shift), s...))
			// Drop the characters that depend on the prefix and the ragged end.
			start := (shift*4 + 2) / 3
			core := b[start:]
			if len(core) > 4 {
				core = core[:len(core)-4]
			}
			out = append(out, []byte(core))
		}
	}
	return out
}

// assertNoCanary fails if any form of any canary is in a record's value, key or headers.
func assertNoCanary(t *testing.T, topic string, rs []*kgo.Record, canaries []string) {
	t.Helper()
	for i, r := range rs {
		var all [][]byte
		all = append(all, r.Value, r.Key)
		for _, h := range r.Headers {
			all = append(all, []byte(h.Key), h.Value)
		}
		for _, c := range canaries {
			for _, f := range forms(c) {
				for _, b := range all {
					if bytes.Contains(b, f) {
						t.Fatalf("%s: record %d carries canary %q (as %q) on the wire", topic, i, c, f)
					}
				}
			}
		}
	}
}

func header(r *kgo.Record, key string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// receiveAll receives n messages with a consumer that has no policy, only the consumer
// token, and returns their bodies by the "seq" metadata entry.
func receiveAll(t *testing.T, ctx context.Context, topic string, n int) map[string][]byte {
	t.Helper()
	sub, err := cryptsub.Open(ctx, "kafka://deny-"+topic+"?topic="+topic+"&offset=oldest", cryptsub.Options{Keyring: vaultWith(t, consumerToken)})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Shutdown(ctx)
	got := map[string][]byte{}
	for range n {
		m, err := sub.Receive(ctx)
		if err != nil {
			t.Fatalf("%s: receive: %v", topic, err)
		}
		m.Ack()
		got[m.Metadata["seq"]] = m.Body
	}
	return got
}

// TestDenyByDefaultCanaries sends purchases with canaries in fields the policy does not
// name, under two deny-by-default policies (default envelope with an FPE rule for card
// numbers at any depth; default transit), through the real Vault with the producer
// token of terraform/vault and a real Kafka broker. A plain Kafka client reads the raw
// records: no canary is in any value, key or header, in clear or in base64, while the
// kept fields are readable. A consumer with no policy decrypts every body byte for byte.
func TestDenyByDefaultCanaries(t *testing.T) {
	const n = 20
	cases := []struct {
		topic, policy string
		manifest      string // in every manifest
	}{
		{"deny_envelope", "default=envelope; keep=order_id,created_at,items[].sku; **.card_number=fpe(bin,luhn)",
			";r=order_id:k,created_at:k,items[].sku:k,**.card_number:fbc;d=e;t="},
		{"deny_transit", "default=transit; keep=order_id,items[].sku,payment.currency",
			";r=order_id:k,items[].sku:k,payment.currency:k;d=t;t="},
	}
	// The detector itself: it finds every canary in the clear body and in the body's
	// base64, so the absence below means something.
	for _, enc := range []func([]byte) []byte{
		func(b []byte) []byte { return b },
		func(b []byte) []byte { return []byte(base64.StdEncoding.EncodeToString(b)) },
		func(b []byte) []byte { return []byte(base64.RawURLEncoding.EncodeToString(append([]byte("x"), b...))) },
	} {
		for _, c := range denyCanaries {
			found := false
			for _, f := range forms(c) {
				found = found || bytes.Contains(enc(denyBody(0)), f)
			}
			if !found {
				t.Fatalf("the canary detector misses %q", c)
			}
		}
	}
	var topics []string
	for _, tc := range cases {
		topics = append(topics, tc.topic)
	}
	b := newKafka(t, topics...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, tc := range cases {
		t.Run(tc.topic, func(t *testing.T) {
			policy, err := crypttopic.ParseFieldPolicy(tc.policy)
			if err != nil {
				t.Fatal(err)
			}
			top, err := crypttopic.Open(ctx, "kafka://"+tc.topic, crypttopic.Options{
				Keyring: vaultWith(t, producerToken), Fields: policy, FieldKeys: fieldKeys()})
			if err != nil {
				t.Fatal(err)
			}
			var msgs []*pubsub.Message
			for i := range n {
				msgs = append(msgs, &pubsub.Message{Body: denyBody(i), Metadata: map[string]string{"seq": fmt.Sprint(i)}})
			}
			if err := top.SendBatch(ctx, msgs); err != nil {
				t.Fatalf("send: %v", err)
			}
			if err := top.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}

			rs := readRaw(t, b, tc.topic, n)
			assertNoCanary(t, tc.topic, rs, denyCanaries)
			for i, r := range rs {
				man, ok := header(r, "pubcrypt-fields")
				if !ok || !strings.HasPrefix(man, "v2;") || !strings.Contains(man, tc.manifest) {
					t.Fatalf("record %d: manifest %q, want v2 with %q", i, man, tc.manifest)
				}
				// The proof that the raw read sees values: what the policy keeps is there.
				for _, clear := range []string{`"order_id":"ord-`, `"sku":"BK-101"`, `"sku":"SP-330"`, `"home address":"`} {
					if !bytes.Contains(r.Value, []byte(clear)) {
						t.Fatalf("record %d: %q should be readable on the wire: %s", i, clear, r.Value)
					}
				}
			}
			t.Logf("%s: %d records, no canary in clear or base64; first value on the wire:\n%s", tc.topic, n, rs[0].Value)

			got := receiveAll(t, ctx, tc.topic, n)
			for i := range n {
				if want := denyBody(i); !bytes.Equal(got[fmt.Sprint(i)], want) {
					t.Fatalf("message %d decrypted to\n%s\nwant\n%s", i, got[fmt.Sprint(i)], want)
				}
			}
		})
	}
}

// TestUnmatchedBodies: a JSON array body and a JSON string body, which no field policy
// can address, are by default encrypted whole (no manifest, the envelope of FORMAT.md)
// and decrypt byte-equal with a consumer that has no policy; under unmatched=refuse
// Send and SendBatch refuse them as faults of the message (fault.Message,
// crypttopic.ErrUnmatchedBody) and nothing reaches the broker.
func TestUnmatchedBodies(t *testing.T) {
	const (
		bodyTopic    = "unmatched_body"
		refusedTopic = "unmatched_refused"
	)
	b := newKafka(t, bodyTopic, refusedTopic)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	canaries := []string{"canary-array-element-31c4", "canary-in-array-object-8d0e", "canary-json-string-body-e6f2"}
	bodies := [][]byte{
		fmt.Appendf(nil, `[%q,{"name":%q},42]`, canaries[0], canaries[1]),
		fmt.Appendf(nil, ` %q `, canaries[2]),
	}
	open := func(topic, policy string) *crypttopic.Topic {
		p, err := crypttopic.ParseFieldPolicy(policy)
		if err != nil {
			t.Fatal(err)
		}
		top, err := crypttopic.Open(ctx, "kafka://"+topic, crypttopic.Options{Keyring: vaultWith(t, producerToken), Fields: p, FieldKeys: fieldKeys()})
		if err != nil {
			t.Fatal(err)
		}
		return top
	}

	top := open(bodyTopic, "default=envelope; keep=id")
	for i, body := range bodies {
		if err := top.Send(ctx, &pubsub.Message{Body: body, Metadata: map[string]string{"seq": fmt.Sprint(i)}}); err != nil {
			t.Fatalf("send body %d: %v", i, err)
		}
	}
	if err := top.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	rs := readRaw(t, b, bodyTopic, len(bodies))
	assertNoCanary(t, bodyTopic, rs, canaries)
	for i, r := range rs {
		if _, ok := header(r, "pubcrypt-fields"); ok {
			t.Fatalf("record %d: field-protected, want the whole body encrypted", i)
		}
		if h, ok := header(r, "pubcrypt"); !ok || !strings.HasPrefix(h, "v1;alg=A256GCM;") {
			t.Fatalf("record %d: no envelope header (%q)", i, h)
		}
	}
	got := receiveAll(t, ctx, bodyTopic, len(bodies))
	for i, want := range bodies {
		if !bytes.Equal(got[fmt.Sprint(i)], want) {
			t.Fatalf("body %d decrypted to %q, want %q", i, got[fmt.Sprint(i)], want)
		}
	}

	top = open(refusedTopic, "default=envelope; keep=id; unmatched=refuse")
	defer top.Shutdown(ctx)
	for i, body := range bodies {
		err := top.Send(ctx, &pubsub.Message{Body: body})
		if !errors.Is(err, crypttopic.ErrUnmatchedBody) || fault.ClassOf(err) != fault.Message {
			t.Fatalf("send body %d under unmatched=refuse: %v (class %v), want ErrUnmatchedBody of class message", i, err, fault.ClassOf(err))
		}
		for _, c := range canaries {
			if strings.Contains(err.Error(), c) {
				t.Fatalf("the error names the body's content: %v", err)
			}
		}
	}
	batch := []*pubsub.Message{{Body: []byte(`{"id":1,"x":"y"}`)}, {Body: bodies[0]}, {Body: bodies[1]}}
	var be *crypttopic.BatchError
	if err := top.SendBatch(ctx, batch); !errors.As(err, &be) || be.Errs[0] != nil || !errors.Is(be.Errs[1], crypttopic.ErrUnmatchedBody) || !errors.Is(be.Errs[2], crypttopic.ErrUnmatchedBody) {
		t.Fatalf("SendBatch with two unmatched bodies: %v", err)
	}
	// Nothing was sent: the first record of the topic is a marker sent now.
	if err := top.Send(ctx, &pubsub.Message{Body: []byte(`{"id":"marker"}`)}); err != nil {
		t.Fatal(err)
	}
	rs = readRaw(t, b, refusedTopic, 1)
	if rs[0].Offset != 0 || !bytes.Contains(rs[0].Value, []byte(`"id":"marker"`)) {
		t.Fatalf("first record of %s at offset %d is %s, want the marker: a refused message reached the broker", refusedTopic, rs[0].Offset, rs[0].Value)
	}
}
