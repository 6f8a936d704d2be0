package encurl_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/encurl"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// appBody is message i of the application.
func appBody(i int) []byte {
	return fmt.Appendf(nil, `{"n":%d,"name":"Customer %05d","card_number":"4111111111111111"}`, i, i)
}

// app is an application written only against gocloud: it knows nothing of pubcrypt.
func app(ctx context.Context, topicURL, subURL string) error {
	top, err := pubsub.OpenTopic(ctx, topicURL)
	if err != nil {
		return err
	}
	defer top.Shutdown(ctx)
	sub, err := pubsub.OpenSubscription(ctx, subURL)
	if err != nil {
		return err
	}
	defer sub.Shutdown(ctx)
	const n = 100
	for i := range n {
		if err := top.Send(ctx, &pubsub.Message{Body: appBody(i), Metadata: map[string]string{"n": fmt.Sprint(i)}}); err != nil {
			return fmt.Errorf("send %d: %w", i, err)
		}
	}
	seen := make(map[int]bool)
	for len(seen) < n {
		m, err := sub.Receive(ctx)
		if err != nil {
			return fmt.Errorf("receive after %d: %w", len(seen), err)
		}
		m.Ack()
		var i int
		if _, err := fmt.Sscan(m.Metadata["n"], &i); err != nil {
			return fmt.Errorf("message without n: %v", m.Metadata)
		}
		if !bytes.Equal(m.Body, appBody(i)) {
			return fmt.Errorf("message %d: body %q", i, m.Body)
		}
		seen[i] = true
	}
	return nil
}

func open(t *testing.T, ctx context.Context, topicURL string) *pubsub.Topic {
	t.Helper()
	top, err := pubsub.OpenTopic(ctx, topicURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = top.Shutdown(context.Background()) })
	return top
}

func subscribe(t *testing.T, ctx context.Context, subURL string) *pubsub.Subscription {
	t.Helper()
	sub, err := pubsub.OpenSubscription(ctx, subURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Shutdown(context.Background()) })
	return sub
}

func receive(t *testing.T, ctx context.Context, sub *pubsub.Subscription, n int) []*pubsub.Message {
	t.Helper()
	var out []*pubsub.Message
	for len(out) < n {
		m, err := sub.Receive(ctx)
		if err != nil {
			t.Fatalf("receive after %d of %d: %v", len(out), n, err)
		}
		m.Ack()
		out = append(out, m)
	}
	return out
}

func TestAppUnchanged(t *testing.T) {
	for _, tc := range []struct {
		name, topic, sub, rawTopic, rawSub string
	}{
		{name: "mem", topic: "mem://app1", sub: "mem://app1"},
		{name: "enc+mem", topic: "enc+mem://app2", sub: "enc+mem://app2", rawTopic: "mem://app2", rawSub: "mem://app2"},
		{name: "kafka", topic: "kafka://app-plain", sub: "kafka://g?topic=app-plain&offset=oldest"},
		{name: "enc+kafka", topic: "enc+kafka://app-enc", sub: "enc+kafka://g?topic=app-enc&offset=oldest", rawSub: "kafka://admin?topic=app-enc&offset=oldest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var raw *pubsub.Subscription
			if tc.rawTopic != "" {
				open(t, ctx, tc.rawTopic) // a mem topic must exist before its subscriptions
			}
			if tc.rawSub != "" {
				raw = subscribe(t, ctx, tc.rawSub)
			}
			if err := app(ctx, tc.topic, tc.sub); err != nil {
				t.Fatalf("app: %v", err)
			}
			if raw == nil {
				return
			}
			for _, m := range receive(t, ctx, raw, 100) {
				if bytes.Contains(m.Body, []byte("Customer")) || bytes.Contains(m.Body, []byte("4111")) {
					t.Fatalf("raw message %s holds plaintext: %q", m.LoggableID, m.Body)
				}
				if m.Metadata["pubcrypt"] == "" || m.Metadata["pubcrypt-dek"] == "" {
					t.Fatalf("raw message %s has no envelope: %v", m.LoggableID, m.Metadata)
				}
			}
		})
	}
}

func TestUndecryptableGoesToDLQ(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	enc := subscribe(t, ctx, "enc+kafka://billing?topic=orders&offset=oldest&dlq="+url.QueryEscape("kafka://orders-dlq"))
	encTop := open(t, ctx, "enc+kafka://orders")
	plainTop := open(t, ctx, "kafka://orders")
	raw := subscribe(t, ctx, "kafka://admin?topic=orders&offset=oldest")

	if err := encTop.Send(ctx, &pubsub.Message{Body: []byte("good 1")}); err != nil {
		t.Fatal(err)
	}
	sealed := receive(t, ctx, raw, 1)[0]
	tampered := append([]byte(nil), sealed.Body...)
	tampered[len(tampered)-1] ^= 1
	if err := plainTop.Send(ctx, &pubsub.Message{Body: tampered, Metadata: sealed.Metadata}); err != nil {
		t.Fatal(err)
	}
	plain := []byte(`{"card_number":"4111111111111111"}`)
	if err := plainTop.Send(ctx, &pubsub.Message{Body: plain, Metadata: map[string]string{"kind": "injected"}}); err != nil {
		t.Fatal(err)
	}
	if err := encTop.Send(ctx, &pubsub.Message{Body: []byte("good 2")}); err != nil {
		t.Fatal(err)
	}

	got := receive(t, ctx, enc, 2)
	if string(got[0].Body) != "good 1" || string(got[1].Body) != "good 2" {
		t.Fatalf("enc+ subscription delivered %q, %q; want the two good messages", got[0].Body, got[1].Body)
	}

	dead := receive(t, ctx, subscribe(t, ctx, "kafka://ops?topic=orders-dlq&offset=oldest"), 2)
	want := []struct {
		body   []byte
		reason string
	}{{tampered, "tampered"}, {plain, "not encrypted"}}
	for i, w := range want {
		m := dead[i]
		if !bytes.Equal(m.Body, w.body) {
			t.Errorf("dead letter %d: body %q, want the raw message %q", i, m.Body, w.body)
		}
		if r := m.Metadata[encurl.DeadLetterReasonKey]; !strings.HasPrefix(r, w.reason) {
			t.Errorf("dead letter %d: reason %q, want %q...", i, r, w.reason)
		}
	}
	if dead[1].Metadata["kind"] != "injected" {
		t.Errorf("dead letter lost its metadata: %v", dead[1].Metadata)
	}
	if c, ok := encurl.SubscriptionCounts(enc); !ok || c.DeadLettered != 2 || c.Dropped != 0 {
		t.Errorf("counts %+v, %t; want 2 dead-lettered", c, ok)
	}
}

func TestUndecryptableDroppedWithoutDLQ(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	plainTop := open(t, ctx, "mem://drop")
	enc := subscribe(t, ctx, "enc+mem://drop")
	if err := plainTop.Send(ctx, &pubsub.Message{Body: []byte("not encrypted")}); err != nil {
		t.Fatal(err)
	}
	if err := open(t, ctx, "enc+mem://drop").Send(ctx, &pubsub.Message{Body: []byte("good")}); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, ctx, enc, 1)[0]; string(m.Body) != "good" {
		t.Fatalf("got %q, want the good message", m.Body)
	}
	// mempubsub delivers in any order: the dropped one may come after the good one.
	for c, _ := encurl.SubscriptionCounts(enc); c.Dropped != 1; c, _ = encurl.SubscriptionCounts(enc) {
		if ctx.Err() != nil {
			t.Fatalf("counts %+v, want 1 dropped", c)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, ok := encurl.SubscriptionCounts(subscribe(t, ctx, "mem://drop")); ok {
		t.Error("SubscriptionCounts reports a plain subscription")
	}
}

func TestFieldsParameter(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	open(t, ctx, "mem://fields")
	raw := subscribe(t, ctx, "mem://fields")
	enc := subscribe(t, ctx, "enc+mem://fields")
	policy := url.QueryEscape("name=transit,card_number=fpe(bin,luhn)")
	top := open(t, ctx, "enc+mem://fields?fields="+policy)
	body := []byte(`{"name":"Alice Smith","card_number":"4111111111111111","amount":5}`)
	if err := top.Send(ctx, &pubsub.Message{Body: body}); err != nil {
		t.Fatal(err)
	}
	var seen struct {
		Name   string  `json:"name"`
		Card   string  `json:"card_number"`
		Amount float64 `json:"amount"`
	}
	rm := receive(t, ctx, raw, 1)[0]
	if err := json.Unmarshal(rm.Body, &seen); err != nil {
		t.Fatalf("raw body is not JSON: %v", err)
	}
	if seen.Amount != 5 || seen.Name == "" || strings.Contains(seen.Name, "Alice") ||
		len(seen.Card) != 16 || !strings.HasPrefix(seen.Card, "411111") || seen.Card == "4111111111111111" {
		t.Fatalf("raw message does not show exactly the policy's fields protected: %s", rm.Body)
	}
	if m := receive(t, ctx, enc, 1)[0]; !bytes.Equal(m.Body, body) {
		t.Fatalf("decrypted %s, want %s", m.Body, body)
	}
}

func TestBadParameters(t *testing.T) {
	ctx := context.Background()
	open(t, ctx, "mem://bad")
	for _, tc := range []struct {
		sub       bool
		url, want string
	}{
		{false, "enc+mem://bad?fields=name%3Dbogus", "parameter fields"},
		{false, "enc+mem://bad?reuse_max_age=soon", "parameter reuse_max_age"},
		{false, "enc+mem://bad?reuse_max_age=-1s", "parameter reuse_max_age"},
		{false, "enc+mem://bad?vault_key=", "parameter vault_key: empty"},
		{false, "enc+mem://bad?vault_key=a/b", "parameter vault_key"},
		{false, "enc+mem://bad?vault_mount=a%3Fb", "parameter vault_mount"},
		{false, "enc+mem://bad?vault_key=a&vault_key=b", "parameter vault_key: given more than once"},
		{false, "enc+mem://bad?config=nope", "parameter config"},
		{false, "enc+mem://bad?dlq=mem%3A%2F%2Fd", "parameter dlq: applies to subscriptions only"},
		{true, "enc+mem://bad?fields=name%3Dtransit", "parameter fields: applies to topics only"},
		{true, "enc+mem://bad?reuse_max_age=1m", "parameter reuse_max_age"},
		{true, "enc+mem://bad?dlq=nosuch%3A%2F%2Fd", "parameter dlq"},
		{false, "enc+mem://bad?vault_auth=ldap", "parameter vault_auth=ldap"},
		{false, "enc+mem://bad?vault_auth=approle", "RoleID is required"},
		{false, "enc+mem://bad?vault_auth=jwt&vault_role=r", "JWTFile is required"},
		{false, "enc+mem://bad?vault_role_id_file=f", "RoleID is not used by the token auth method"},
		{false, "enc+mem://bad?vault_secret_id_wrapped=yes", "parameter vault_secret_id_wrapped"},
		{false, "enc+mem://bad?kek=base64key%3A%2F%2F&vault_auth=approle", "parameter vault_auth: not allowed with kek"},
	} {
		var err error
		if tc.sub {
			var s *pubsub.Subscription
			if s, err = pubsub.OpenSubscription(ctx, tc.url); err == nil {
				_ = s.Shutdown(ctx)
			}
		} else {
			var top *pubsub.Topic
			if top, err = pubsub.OpenTopic(ctx, tc.url); err == nil {
				_ = top.Shutdown(ctx)
			}
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("open %s: error %v, want one containing %q", tc.url, err, tc.want)
		}
	}
}

func TestMissingVaultAddr(t *testing.T) {
	t.Setenv("VAULT_ADDR", "")
	ctx := context.Background()
	open(t, ctx, "mem://novault")
	if _, err := pubsub.OpenTopic(ctx, "enc+mem://novault"); err == nil || !strings.Contains(err.Error(), "VAULT_ADDR is not set") {
		t.Errorf("topic: error %v, want VAULT_ADDR is not set", err)
	}
	if _, err := pubsub.OpenSubscription(ctx, "enc+mem://novault"); err == nil || !strings.Contains(err.Error(), "VAULT_ADDR is not set") {
		t.Errorf("subscription: error %v, want VAULT_ADDR is not set", err)
	}
}

func TestRegisterConfig(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := vaultServer.Client()
	if err != nil {
		t.Fatal(err)
	}
	v, err := keyring.NewVault(keyring.VaultOptions{Client: c, Key: "other"})
	if err != nil {
		t.Fatal(err)
	}
	encurl.RegisterConfig("files", encurl.Config{Keyring: v, Topic: crypttopic.Options{SensitiveMetadata: []string{"filename"}}})

	open(t, ctx, "mem://cfg")
	raw := subscribe(t, ctx, "mem://cfg")
	enc := subscribe(t, ctx, "enc+mem://cfg?config=files")
	if err := open(t, ctx, "enc+mem://cfg?config=files").Send(ctx, &pubsub.Message{Body: []byte("payroll"), Metadata: map[string]string{"filename": "payroll.csv"}}); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, ctx, raw, 1)[0]; m.Metadata["filename"] != "" || !strings.Contains(m.Metadata["pubcrypt-dek"], "vault:v1:") {
		t.Fatalf("raw metadata %v: want filename hidden and a data key wrapped by Vault", m.Metadata)
	}
	if m := receive(t, ctx, enc, 1)[0]; string(m.Body) != "payroll" || m.Metadata["filename"] != "payroll.csv" {
		t.Fatalf("decrypted %q %v", m.Body, m.Metadata)
	}
	if _, err := pubsub.OpenTopic(ctx, "enc+mem://cfg?config=files&vault_key=x"); err == nil || !strings.Contains(err.Error(), "parameter vault_key") {
		t.Errorf("vault_key beside a config with a keyring: error %v", err)
	}
}

func TestRegisterOnOwnMux(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mux := new(pubsub.URLMux)
	encurl.Register(mux, "mem")
	open(t, ctx, "mem://own")
	sub, err := mux.OpenSubscription(ctx, "enc+mem://own")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Shutdown(ctx)
	top, err := mux.OpenTopic(ctx, "enc+mem://own")
	if err != nil {
		t.Fatal(err)
	}
	defer top.Shutdown(ctx)
	if err := top.Send(ctx, &pubsub.Message{Body: []byte("hi")}); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, ctx, sub, 1)[0]; string(m.Body) != "hi" {
		t.Fatalf("got %q", m.Body)
	}
}

func TestVaultUnreachableNacks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := vaultapi.DefaultConfig()
	cfg.Address = "http://127.0.0.1:1" // nothing listens there
	c, err := vaultapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	down, err := keyring.NewVault(keyring.VaultOptions{Client: c, Key: "pubcrypt", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	encurl.RegisterConfig("vault-down", encurl.Config{Keyring: down})
	open(t, ctx, "mem://down")
	sub := subscribe(t, ctx, "enc+mem://down?config=vault-down")
	if err := open(t, ctx, "enc+mem://down").Send(ctx, &pubsub.Message{Body: []byte("later")}); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the subscription backs off but is not broken
		rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
		m, err := sub.Receive(rctx)
		rcancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("receive with Vault down: %v, %v; want a timeout", m, err)
		}
	}
	if c, _ := encurl.SubscriptionCounts(sub); c.Nacked == 0 || c.Dropped != 0 || c.DeadLettered != 0 {
		t.Errorf("counts %+v: want the message nacked, never dropped", c)
	}
}

// Every message under its own data key: each receive waits on Vault, which the short waits
// of the driver must never cut short (a cut would drop the message).
func TestFreshKeyPerMessage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	encurl.RegisterConfig("per-message", encurl.Config{Topic: crypttopic.Options{Reuse: keyring.ReusePolicy{PerMessage: true}}})
	sub := subscribe(t, ctx, "enc+kafka://pm?topic=per-message&offset=oldest")
	if err := app(ctx, "enc+kafka://per-message?config=per-message&vault_key=pubcrypt", "enc+kafka://g?topic=per-message&offset=oldest"); err != nil {
		t.Fatalf("app: %v", err)
	}
	receive(t, ctx, sub, 100)
	if c, _ := encurl.SubscriptionCounts(sub); c != (encurl.Counts{}) {
		t.Errorf("counts %+v, want none undecryptable", c)
	}
}

// TestURLOpenerOnOwnMux: a URLOpener registered on an application's own mux carries its
// configuration (here the keyring), with no process-wide RegisterConfig and no Vault
// variables; a keyring parameter on such a URL is refused.
func TestURLOpenerOnOwnMux(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := vaultServer.Client()
	if err != nil {
		t.Fatal(err)
	}
	kr, err := keyring.NewVault(keyring.VaultOptions{Client: c, Key: keyring.DefaultKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("VAULT_ADDR", "")
	t.Setenv("VAULT_TOKEN", "")
	mux := new(pubsub.URLMux)
	o := &encurl.URLOpener{Inner: "mem", Config: encurl.Config{Keyring: kr}}
	mux.RegisterTopic("enc+mem", o)
	mux.RegisterSubscription("enc+mem", o)

	top, err := mux.OpenTopic(ctx, "enc+mem://own-mux?fields=name%3Dtransit")
	if err != nil {
		t.Fatal(err)
	}
	defer top.Shutdown(ctx)
	sub, err := mux.OpenSubscription(ctx, "enc+mem://own-mux")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Shutdown(ctx)
	if err := top.Send(ctx, &pubsub.Message{Body: appBody(1)}); err != nil {
		t.Fatal(err)
	}
	m, err := sub.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m.Ack()
	if string(m.Body) != string(appBody(1)) {
		t.Fatalf("received %s", m.Body)
	}
	if _, err := mux.OpenTopic(ctx, "enc+mem://own-mux?vault_key=other"); err == nil || !strings.Contains(err.Error(), "the URLOpener's Config") {
		t.Fatalf("vault_key on a URL whose opener has a keyring: %v", err)
	}
}
