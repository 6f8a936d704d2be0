package cryptsub_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/internal/devvault"
	"github.com/pubcrypt/pubcrypt/internal/envelope"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// body returns a distinct, recognisable plaintext for message i.
func body(i int) []byte {
	return fmt.Appendf(nil, `{"seq":%d,"name":"Customer %05d","card":"4111-1111-1111-%04d","pad":"%s"}`,
		i, i, i%10000, strings.Repeat("x", i%97))
}

// sendAll sends n messages concurrently, as a busy producer does.
func sendAll(t *testing.T, ctx context.Context, top *crypttopic.Topic, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 256)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs <- top.Send(ctx, &pubsub.Message{Body: body(i), Metadata: map[string]string{"seq": fmt.Sprint(i), "source": "test"}})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("send: %v", err)
		}
	}
}

// receiveAll receives n messages, checks each against what was sent, and acks them.
func receiveAll(t *testing.T, ctx context.Context, sub *cryptsub.Subscription, n int) {
	t.Helper()
	seen := make(map[string]bool, n)
	for len(seen) < n {
		m, err := sub.Receive(ctx)
		if err != nil {
			t.Fatalf("receive after %d messages: %v", len(seen), err)
		}
		var i int
		if _, err := fmt.Sscan(m.Metadata["seq"], &i); err != nil {
			t.Fatalf("message without seq metadata: %v", m.Metadata)
		}
		if !bytes.Equal(m.Body, body(i)) {
			t.Fatalf("message %d: body differs after decryption", i)
		}
		if len(m.Metadata) != 2 || m.Metadata["source"] != "test" {
			t.Fatalf("message %d: metadata %v, want the producer's two entries", i, m.Metadata)
		}
		seen[m.Metadata["seq"]] = true
		m.Ack()
	}
}

func TestRoundTrip10000(t *testing.T) {
	const n = 10000
	for _, tc := range []struct {
		name      string
		reuse     keyring.ReusePolicy
		maxCalls  int64 // per side
		wantExact bool
	}{
		{name: "reuse", reuse: keyring.ReusePolicy{}, maxCalls: 10},
		{name: "per-message", reuse: keyring.ReusePolicy{PerMessage: true}, maxCalls: n, wantExact: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topic := "roundtrip_" + strings.ReplaceAll(tc.name, "-", "_")
			b := newKafka(t, topic)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()

			sendVault, recvVault := newVault(t, vaultServer), newVault(t, vaultServer)
			sub, err := cryptsub.Open(ctx, "kafka://g-"+topic+"?topic="+topic+"&offset=oldest", cryptsub.Options{Keyring: recvVault})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Shutdown(context.Background())
			top, err := crypttopic.Open(ctx, "kafka://"+topic, crypttopic.Options{Keyring: sendVault, Reuse: tc.reuse})
			if err != nil {
				t.Fatal(err)
			}
			sendAll(t, ctx, top, n)
			if err := top.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			receiveAll(t, ctx, sub, n)

			sendCalls, recvCalls := sendVault.Calls(), recvVault.Calls()
			t.Logf("%d messages: %d Vault calls on the send side, %d on the receive side", n, sendCalls, recvCalls)
			for side, calls := range map[string]int64{"send": sendCalls, "receive": recvCalls} {
				if calls > tc.maxCalls || (tc.wantExact && calls != int64(n)) {
					t.Errorf("%s side made %d Vault calls for %d messages, want ≤ %d (exact: %t)", side, calls, n, tc.maxCalls, tc.wantExact)
				}
			}

			// What an admin sees: ciphertext and an envelope, none of the plaintext.
			for _, r := range readRaw(t, b, topic, n) {
				assertNoPlaintext(t, r)
			}
		})
	}
}

func assertNoPlaintext(t *testing.T, r *kgo.Record) {
	t.Helper()
	if bytes.Contains(r.Value, []byte("Customer")) || bytes.Contains(r.Value, []byte("4111")) {
		t.Fatalf("raw record at offset %d holds plaintext", r.Offset)
	}
	var hasHeader, hasDEK bool
	for _, h := range r.Headers {
		hasHeader = hasHeader || h.Key == envelope.HeaderKey
		hasDEK = hasDEK || h.Key == envelope.DEKKey
		if h.Key == "seq" {
			continue // producer metadata is left in clear unless named sensitive
		}
	}
	if !hasHeader || !hasDEK {
		t.Fatalf("raw record at offset %d has no envelope: %v", r.Offset, r.Headers)
	}
}

// TestTamperEveryByte flips, one at a time, every byte of the body, of each envelope value
// and of the producer's metadata of a genuine message, puts each variant on the topic
// between genuine messages, and checks that every variant is a typed decryption error
// while every genuine message still decrypts.
func TestTamperEveryByte(t *testing.T) {
	const topic, src = "tampered", "genuine"
	b := newKafka(t, topic, src)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	top, err := crypttopic.Open(ctx, "kafka://"+src, crypttopic.Options{Keyring: newVault(t, vaultServer)})
	if err != nil {
		t.Fatal(err)
	}
	if err := top.Send(ctx, &pubsub.Message{Body: []byte("attack at dawn, card 4111111111111111"), Metadata: map[string]string{"origin": "shop-7"}}); err != nil {
		t.Fatal(err)
	}
	if err := top.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	orig := readRaw(t, b, src, 1)[0]

	clone := func() *kgo.Record {
		r := &kgo.Record{Topic: topic, Value: bytes.Clone(orig.Value)}
		for _, h := range orig.Headers {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: h.Key, Value: bytes.Clone(h.Value)})
		}
		return r
	}
	var records []*kgo.Record
	var variants []string
	add := func(what string, r *kgo.Record) {
		records = append(records, r, clone()) // each tampered variant followed by a genuine copy
		variants = append(variants, what)
	}
	for i := range orig.Value {
		r := clone()
		r.Value[i] ^= 0x01
		add(fmt.Sprintf("body byte %d", i), r)
	}
	for hi, h := range orig.Headers {
		for i := range h.Value {
			r := clone()
			r.Headers[hi].Value[i] ^= 0x01
			add(fmt.Sprintf("%s byte %d", h.Key, i), r)
		}
		for i := range h.Key {
			r := clone()
			k := []byte(r.Headers[hi].Key)
			k[i] ^= 0x01
			r.Headers[hi].Key = string(k)
			add(fmt.Sprintf("name of %s byte %d", h.Key, i), r)
		}
	}
	produceRaw(t, b, records...)
	t.Logf("%d tampered variants, each followed by a genuine copy", len(variants))

	sub, err := cryptsub.Open(ctx, "kafka://g-tamper?topic="+topic+"&offset=oldest", cryptsub.Options{Keyring: newVault(t, vaultServer)})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Shutdown(context.Background())
	for i, what := range variants {
		m, err := sub.Receive(ctx)
		var de *cryptsub.DecryptError
		if !errors.As(err, &de) {
			t.Fatalf("%s: got message %v, err %v; want a *cryptsub.DecryptError", what, m != nil, err)
		}
		if de.Message == nil || !bytes.Equal(de.Message.Body, records[2*i].Value) {
			t.Fatalf("%s: DecryptError does not carry the raw message", what)
		}
		if strings.Contains(err.Error(), "attack at dawn") {
			t.Fatalf("%s: error leaks plaintext: %v", what, err)
		}
		de.Message.Ack()
		m, err = sub.Receive(ctx)
		if err != nil {
			t.Fatalf("genuine message after %s: %v", what, err)
		}
		if string(m.Body) != "attack at dawn, card 4111111111111111" || m.Metadata["origin"] != "shop-7" {
			t.Fatalf("genuine message after %s decrypted wrongly", what)
		}
		m.Ack()
	}
}

// TestVaultStoppedFailsClosed stops the Vault server in the middle of a stream and checks
// that Send then errors and that the raw topic never holds a plaintext message.
func TestVaultStoppedFailsClosed(t *testing.T) {
	const topic = "failclosed"
	b := newKafka(t, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := devvault.Start(ctx, devvault.Options{Keys: []string{transitKey}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()

	// A data key is reused for 10 messages, so the stream needs Vault again soon after it stops.
	top, err := crypttopic.Open(ctx, "kafka://"+topic, crypttopic.Options{
		Keyring: newVault(t, srv), Reuse: keyring.ReusePolicy{MaxMessages: 10}})
	if err != nil {
		t.Fatal(err)
	}
	sent := 0
	for i := range 25 {
		if err := top.Send(ctx, &pubsub.Message{Body: body(i)}); err != nil {
			t.Fatalf("send %d with Vault up: %v", i, err)
		}
		sent++
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	var failed int
	for i := 25; i < 40; i++ {
		err := top.Send(ctx, &pubsub.Message{Body: body(i)})
		if err == nil {
			sent++
			continue
		}
		failed++
		if !errors.Is(err, keyring.ErrUnavailable) {
			t.Errorf("send %d: %v; want keyring.ErrUnavailable", i, err)
		}
		if strings.Contains(err.Error(), srv.Token) {
			t.Fatalf("error leaks the Vault token: %v", err)
		}
	}
	if err := top.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if sent > 30 || failed < 10 {
		t.Fatalf("with Vault stopped, %d sends succeeded and %d failed; want at most the 5 left on the cached key to succeed", sent-25, failed)
	}
	for _, r := range readRaw(t, b, topic, sent) {
		assertNoPlaintext(t, r)
	}
	t.Logf("Vault stopped after 25 messages: %d more sent on the cached key, %d refused, no plaintext on the topic", sent-25, failed)
}

func TestNoEnvelope(t *testing.T) {
	const topic = "plain"
	b := newKafka(t, topic)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	produceRaw(t, b, &kgo.Record{Topic: topic, Value: []byte("legacy plaintext")})

	for _, allow := range []bool{false, true} {
		sub, err := cryptsub.Open(ctx, fmt.Sprintf("kafka://g-plain-%t?topic=%s&offset=oldest", allow, topic),
			cryptsub.Options{Keyring: newVault(t, vaultServer), AllowPlaintext: allow})
		if err != nil {
			t.Fatal(err)
		}
		m, err := sub.Receive(ctx)
		switch {
		case !allow && !errors.Is(err, cryptsub.ErrNoEnvelope):
			t.Errorf("default options: got %v, want ErrNoEnvelope", err)
		case allow && (err != nil || string(m.Body) != "legacy plaintext"):
			t.Errorf("AllowPlaintext: got %v, want the message as it is", err)
		}
		if m != nil {
			m.Ack()
		}
		var de *cryptsub.DecryptError
		if errors.As(err, &de) {
			de.Message.Ack()
		}
		_ = sub.Shutdown(ctx)
	}
}

func TestSensitiveMetadataTravelsEncrypted(t *testing.T) {
	const topic = "files"
	b := newKafka(t, topic)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	top, err := crypttopic.Open(ctx, "kafka://"+topic, crypttopic.Options{
		Keyring: newVault(t, vaultServer), SensitiveMetadata: []string{"filename"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := top.Send(ctx, &pubsub.Message{Body: []byte("contents"), Metadata: map[string]string{"filename": "salaries-2026.xlsx", "kind": "file"}}); err != nil {
		t.Fatal(err)
	}
	_ = top.Shutdown(ctx)
	r := readRaw(t, b, topic, 1)[0]
	for _, h := range r.Headers {
		if h.Key == "filename" || bytes.Contains(h.Value, []byte("salaries")) {
			t.Fatalf("filename visible on the topic: %s=%s", h.Key, h.Value)
		}
	}
	sub, err := cryptsub.Open(ctx, "kafka://g-files?topic="+topic+"&offset=oldest", cryptsub.Options{Keyring: newVault(t, vaultServer)})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Shutdown(context.Background())
	m, err := sub.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m.Ack()
	if m.Metadata["filename"] != "salaries-2026.xlsx" || m.Metadata["kind"] != "file" || string(m.Body) != "contents" {
		t.Fatalf("got %q %v", m.Body, m.Metadata)
	}
}

// TestCheckFailsAtStart: a producer can learn at start, not at its first message, that
// its token is refused or its key missing.
func TestCheckFailsAtStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	good := newVault(t, vaultServer)
	c, err := vaultServer.Client()
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken("not-a-token")
	refused, err := keyring.NewVault(keyring.VaultOptions{Client: c, Key: transitKey})
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := vaultServer.Client()
	missing, err := keyring.NewVault(keyring.VaultOptions{Client: c2, Key: "no-such-key"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		kr   keyring.Keyring
		want error
	}{
		{"good", good, nil},
		{"refused token", refused, keyring.ErrPermissionDenied},
		{"missing key", missing, keyring.ErrKeyNotFound},
	} {
		top, err := crypttopic.Open(ctx, "mem://check-"+strings.ReplaceAll(tc.name, " ", "-"), crypttopic.Options{Keyring: tc.kr})
		if err != nil {
			t.Fatal(err)
		}
		err = top.Check(ctx)
		if (tc.want == nil && err != nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: Check = %v, want %v", tc.name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "not-a-token") {
			t.Errorf("%s: error prints the token: %v", tc.name, err)
		}
		_ = top.Shutdown(ctx)
	}
}
