// Package conformance is pubcrypt's broker conformance suite, after gocloud's drivertest:
// one set of tests, run through crypttopic and cryptsub against a real Vault, that every
// broker must pass. A broker is added by writing a Harness for it, not new tests.
//
// The suite checks what pubcrypt promises whatever the broker: the body, JSON fields and
// metadata (UTF-8, sensitive entries) come back byte for byte; a message changed on the
// broker is refused as tampered and the next one still decrypts; a plaintext message is
// reported and can be acked; a nacked message is redelivered and decrypts again; and a
// message over the broker's limits is refused before anything is sent.
package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/devvault"
	"github.com/pubcrypt/pubcrypt/internal/purchase"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// Harness gives the suite one broker. newHarness is called once per test, so each test
// gets a topic and subscription of its own; the harness releases them in t.Cleanup.
type Harness interface {
	// Name names the broker in test output.
	Name() string
	// OpenTopic opens the raw (unencrypted) topic of this test and returns it with the
	// gocloud URL scheme of its broker, which selects the broker's limits
	// (crypttopic.Options.Broker). It is called before OpenSubscription.
	OpenTopic(ctx context.Context, t *testing.T) (*pubsub.Topic, string)
	// OpenSubscription opens a subscription that receives every message sent on the
	// topic after this call returns (or before: a broker that keeps messages may
	// deliver older ones too, from the test's own topic only).
	OpenSubscription(ctx context.Context, t *testing.T) *pubsub.Subscription
}

// Keys the suite uses; StartVault creates them.
const (
	TransitKey       = keyring.DefaultKey
	DeterministicKey = keyring.DefaultDeterministicKey
	FPEKey           = keyring.DefaultFPEKey
)

// DemoPolicy is the field policy of the demo, every Vault-backed mode.
const DemoPolicy = "name=transit,address=transit,card_number=fpe(bin,luhn),items[].sku=deterministic"

// StartVault starts a Vault dev server with the suite's keys, for a TestMain. The caller
// stops it.
func StartVault(ctx context.Context) (*devvault.Server, error) {
	srv, err := devvault.Start(ctx, devvault.Options{Keys: []string{TransitKey}})
	if err != nil {
		return nil, err
	}
	if err := srv.CreateFieldKeys(ctx, DeterministicKey, FPEKey); err != nil {
		_ = srv.Stop()
		return nil, err
	}
	return srv, nil
}

// RunConformance runs the suite against the broker newHarness opens, with keys from
// vault (a server from StartVault).
func RunConformance(t *testing.T, vault *devvault.Server, newHarness func(t *testing.T) Harness) {
	tests := []struct {
		name string
		run  func(t *testing.T, c *conn)
	}{
		{"BodyRoundTrip", testBodyRoundTrip},
		{"FieldRoundTrip", testFieldRoundTrip},
		{"MetadataRoundTrip", testMetadataRoundTrip},
		{"Tampered", testTampered},
		{"NoEnvelope", testNoEnvelope},
		{"NackRedelivery", testNackRedelivery},
		{"Budget", testBudget},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			h := newHarness(t)
			c := &conn{h: h, ctx: ctx, vault: vault}
			c.raw, c.scheme = h.OpenTopic(ctx, t)
			c.rawSub = h.OpenSubscription(ctx, t)
			c.sub = c.wrapSub(t)
			tc.run(t, c)
		})
	}
}

// conn is one test's view of the broker.
type conn struct {
	h      Harness
	ctx    context.Context
	vault  *devvault.Server
	scheme string
	raw    *pubsub.Topic
	rawSub *pubsub.Subscription
	sub    *cryptsub.Subscription
}

func (c *conn) keys(t *testing.T) *keyring.Vault {
	t.Helper()
	cl, err := c.vault.Client()
	if err != nil {
		t.Fatal(err)
	}
	v, err := keyring.NewVault(keyring.VaultOptions{Client: cl, Key: TransitKey})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// topic wraps the raw topic; it is not shut down by the test (the harness owns the raw
// topic), so raw sends keep working after it.
func (c *conn) topic(t *testing.T, opts crypttopic.Options) *crypttopic.Topic {
	t.Helper()
	opts.Keyring = c.keys(t)
	opts.Broker = c.scheme
	top, err := crypttopic.New(c.raw, opts)
	if err != nil {
		t.Fatal(err)
	}
	return top
}

func (c *conn) wrapSub(t *testing.T) *cryptsub.Subscription {
	t.Helper()
	sub, err := cryptsub.New(c.rawSub, cryptsub.Options{Keyring: c.keys(t)})
	if err != nil {
		t.Fatal(err)
	}
	return sub
}

// receive returns the next decrypted message or *cryptsub.DecryptError.
func (c *conn) receive(t *testing.T) (*pubsub.Message, *cryptsub.DecryptError) {
	t.Helper()
	m, err := c.sub.Receive(c.ctx)
	var de *cryptsub.DecryptError
	if errors.As(err, &de) {
		return nil, de
	}
	if err != nil {
		t.Fatalf("%s: receive: %v", c.h.Name(), err)
	}
	return m, nil
}

// receiveN receives n decrypted messages keyed by their "n" metadata entry (brokers
// such as Pub/Sub do not keep order) and acks them.
func (c *conn) receiveN(t *testing.T, n int) map[string]*pubsub.Message {
	t.Helper()
	got := make(map[string]*pubsub.Message, n)
	for len(got) < n {
		m, de := c.receive(t)
		if de != nil {
			t.Fatalf("%s: message %d: %v", c.h.Name(), len(got), de)
		}
		m.Ack()
		got[m.Metadata["n"]] = m
	}
	return got
}

func testBodyRoundTrip(t *testing.T, c *conn) {
	top := c.topic(t, crypttopic.Options{})
	bodies := [][]byte{
		[]byte("attack at dawn"),
		{0x00, 0xff, 0xfe, 0x80, 0x01}, // not UTF-8: text-only brokers base64 it
		bytes.Repeat([]byte("0123456789abcdef"), 4096),
	}
	for i, b := range bodies {
		if err := top.Send(c.ctx, &pubsub.Message{Body: b, Metadata: map[string]string{"n": fmt.Sprint(i)}}); err != nil {
			t.Fatalf("%s: send %d: %v", c.h.Name(), i, err)
		}
	}
	got := c.receiveN(t, len(bodies))
	for i, b := range bodies {
		m := got[fmt.Sprint(i)]
		if m == nil || !bytes.Equal(m.Body, b) {
			t.Errorf("%s: message %d: body differs after the round trip", c.h.Name(), i)
		}
		if m != nil && len(m.Metadata) != 1 {
			t.Errorf("%s: message %d: metadata %v, want only the producer's entry", c.h.Name(), i, m.Metadata)
		}
	}
}

func testFieldRoundTrip(t *testing.T, c *conn) {
	policy, err := crypttopic.ParseFieldPolicy(DemoPolicy)
	if err != nil {
		t.Fatal(err)
	}
	top := c.topic(t, crypttopic.Options{Fields: policy})
	gen := purchase.NewGenerator(7)
	const n = 5
	bodies := make([][]byte, n)
	msgs := make([]*pubsub.Message, n)
	for i := range n {
		bodies[i], _ = json.Marshal(gen.Next())
		msgs[i] = &pubsub.Message{Body: bodies[i], Metadata: map[string]string{"n": fmt.Sprint(i)}}
	}
	if err := top.SendBatch(c.ctx, msgs); err != nil {
		t.Fatalf("%s: send batch: %v", c.h.Name(), err)
	}
	got := c.receiveN(t, n)
	for i := range n {
		if m := got[fmt.Sprint(i)]; m == nil || !bytes.Equal(m.Body, bodies[i]) {
			t.Errorf("%s: purchase %d differs after the round trip", c.h.Name(), i)
		}
	}
}

func testMetadataRoundTrip(t *testing.T, c *conn) {
	top := c.topic(t, crypttopic.Options{SensitiveMetadata: []string{"filename"}})
	md := map[string]string{
		"n":        "0",
		"greeting": "grüße, 日本語, emoji 🙂, quotes \" and %",
		"filename": "Q3 salaries – confidential.xlsx",
		"empty":    "",
	}
	if err := top.Send(c.ctx, &pubsub.Message{Body: []byte("body"), Metadata: md}); err != nil {
		t.Fatalf("%s: send: %v", c.h.Name(), err)
	}
	m := c.receiveN(t, 1)["0"]
	if m == nil || !maps.Equal(m.Metadata, md) {
		t.Errorf("%s: metadata after the round trip differs from what was sent", c.h.Name())
	}
}

// sealedCopy sends one genuine message, reads it back undecrypted as the broker delivers
// it, and returns a function making copies of it.
func (c *conn) sealedCopy(t *testing.T) func() *pubsub.Message {
	t.Helper()
	top := c.topic(t, crypttopic.Options{})
	if err := top.Send(c.ctx, &pubsub.Message{Body: []byte("genuine"), Metadata: map[string]string{"origin": "shop-7"}}); err != nil {
		t.Fatalf("%s: send: %v", c.h.Name(), err)
	}
	orig, err := c.rawSub.Receive(c.ctx)
	if err != nil {
		t.Fatalf("%s: raw receive: %v", c.h.Name(), err)
	}
	orig.Ack()
	return func() *pubsub.Message {
		return &pubsub.Message{Body: bytes.Clone(orig.Body), Metadata: maps.Clone(orig.Metadata)}
	}
}

func testTampered(t *testing.T, c *conn) {
	genuine := c.sealedCopy(t)
	body := genuine()
	body.Body[len(body.Body)/2] ^= 0x01
	meta := genuine()
	meta.Metadata["origin"] = "shop-8"
	for _, m := range []*pubsub.Message{body, meta, genuine()} {
		if err := c.raw.Send(c.ctx, m); err != nil {
			t.Fatalf("%s: raw send: %v", c.h.Name(), err)
		}
	}
	var tampered, ok int
	for range 3 {
		m, de := c.receive(t)
		switch {
		case de != nil && errors.Is(de, cryptsub.ErrTampered):
			tampered++
			de.Message.Ack()
		case de != nil:
			t.Fatalf("%s: %v, want ErrTampered", c.h.Name(), de)
		case string(m.Body) != "genuine" || m.Metadata["origin"] != "shop-7":
			t.Fatalf("%s: a tampered message decrypted", c.h.Name())
		default:
			ok++
			m.Ack()
		}
	}
	if tampered != 2 || ok != 1 {
		t.Errorf("%s: %d tampered and %d genuine messages, want 2 and 1", c.h.Name(), tampered, ok)
	}
}

func testNoEnvelope(t *testing.T, c *conn) {
	if err := c.raw.Send(c.ctx, &pubsub.Message{Body: []byte("legacy plaintext"), Metadata: map[string]string{"n": "plain"}}); err != nil {
		t.Fatalf("%s: raw send: %v", c.h.Name(), err)
	}
	top := c.topic(t, crypttopic.Options{})
	if err := top.Send(c.ctx, &pubsub.Message{Body: []byte("sealed"), Metadata: map[string]string{"n": "0"}}); err != nil {
		t.Fatalf("%s: send: %v", c.h.Name(), err)
	}
	var plain, ok int
	for range 2 {
		m, de := c.receive(t)
		switch {
		case de != nil && errors.Is(de, cryptsub.ErrNoEnvelope):
			plain++
			de.Message.Ack()
		case de != nil:
			t.Fatalf("%s: %v, want ErrNoEnvelope", c.h.Name(), de)
		case string(m.Body) != "sealed":
			t.Fatalf("%s: unexpected message", c.h.Name())
		default:
			ok++
			m.Ack()
		}
	}
	if plain != 1 || ok != 1 {
		t.Errorf("%s: %d plaintext and %d sealed messages, want 1 and 1", c.h.Name(), plain, ok)
	}
}

func testNackRedelivery(t *testing.T, c *conn) {
	top := c.topic(t, crypttopic.Options{})
	if err := top.Send(c.ctx, &pubsub.Message{Body: []byte("try again"), Metadata: map[string]string{"n": "0"}}); err != nil {
		t.Fatalf("%s: send: %v", c.h.Name(), err)
	}
	m, de := c.receive(t)
	if de != nil {
		t.Fatalf("%s: %v", c.h.Name(), de)
	}
	if !m.Nackable() {
		m.Ack()
		t.Skipf("%s offers no Nack", c.h.Name())
	}
	m.Nack()
	again := c.receiveN(t, 1)["0"]
	if again == nil || string(again.Body) != "try again" {
		t.Errorf("%s: the nacked message did not come back intact", c.h.Name())
	}
}

// budgetCase is a message that a broker refuses; built from its limits.
type budgetCase struct {
	what string
	msg  *pubsub.Message
}

// maxCheapBytes bounds the messages testBudget builds: limits beyond it (Pub/Sub's
// 10 MB body) are left to the unit tests of broker.Limits.
const maxCheapBytes = 2 << 20

func budgetCases(l broker.Limits) []budgetCase {
	var cs []budgetCase
	if l.MaxValueBytes > 0 {
		cs = append(cs, budgetCase{"metadata value", &pubsub.Message{Body: []byte("x"),
			Metadata: map[string]string{"long": strings.Repeat("v", l.MaxValueBytes+1)}}})
	}
	if l.MaxKeyBytes > 0 {
		cs = append(cs, budgetCase{"metadata key", &pubsub.Message{Body: []byte("x"),
			Metadata: map[string]string{strings.Repeat("k", l.MaxKeyBytes+1): "v"}}})
	}
	if l.MaxMetadataEntries > 0 {
		md := map[string]string{}
		for i := range l.MaxMetadataEntries { // the envelope's entries push it over
			md[fmt.Sprintf("k%d", i)] = "v"
		}
		cs = append(cs, budgetCase{"metadata entries", &pubsub.Message{Body: []byte("x"), Metadata: md}})
	}
	if l.MaxBodyBytes > 0 && l.MaxBodyBytes <= maxCheapBytes {
		cs = append(cs, budgetCase{"body", &pubsub.Message{Body: make([]byte, l.MaxBodyBytes)}})
	}
	if l.MaxTotalBytes > 0 && l.MaxTotalBytes <= maxCheapBytes {
		// Just under the limit in plaintext; the envelope's overhead takes it over.
		cs = append(cs, budgetCase{"total size", &pubsub.Message{Body: make([]byte, l.MaxTotalBytes-16)}})
	}
	return cs
}

func testBudget(t *testing.T, c *conn) {
	l := broker.LimitsFor(c.scheme)
	cases := budgetCases(l)
	if len(cases) == 0 {
		t.Skipf("%s: no limits cheap enough to test", c.h.Name())
	}
	top := c.topic(t, crypttopic.Options{})
	for _, bc := range cases {
		err := top.Send(c.ctx, bc.msg)
		if !errors.Is(err, crypttopic.ErrTooLarge) || !strings.Contains(err.Error(), l.Name) {
			t.Errorf("%s: over-budget %s: got %v, want ErrTooLarge naming %s", c.h.Name(), bc.what, err, l.Name)
		} else {
			t.Logf("%s: over-budget %s refused: %v", c.h.Name(), bc.what, err)
		}
		if err := top.SendBatch(c.ctx, []*pubsub.Message{{Body: []byte("fits"), Metadata: map[string]string{"n": "batch"}}, bc.msg}); !errors.Is(err, crypttopic.ErrTooLarge) {
			t.Errorf("%s: batch with an over-budget %s: got %v, want ErrTooLarge", c.h.Name(), bc.what, err)
		}
	}
	// Nothing refused reached the broker (neither the big messages nor the batches):
	// the first message to arrive is the one sent now.
	if err := top.Send(c.ctx, &pubsub.Message{Body: []byte("fits"), Metadata: map[string]string{"n": "0"}}); err != nil {
		t.Fatalf("%s: send: %v", c.h.Name(), err)
	}
	if m := c.receiveN(t, 1)["0"]; m == nil {
		t.Errorf("%s: a refused message reached the broker", c.h.Name())
	}
}
