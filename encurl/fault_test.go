package encurl_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"gocloud.dev/gcerrors"
	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/encurl"
	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// expiredKeyring returns a keyring whose token could decrypt with the transit key
// "pubcrypt" but has expired, made with the root token as an operator would.
func expiredKeyring(t *testing.T) *keyring.Vault {
	t.Helper()
	ctx := context.Background()
	root, err := vaultServer.Client()
	if err != nil {
		t.Fatal(err)
	}
	policy := `path "transit/decrypt/pubcrypt" { capabilities = ["update"] }
path "auth/token/lookup-self" { capabilities = ["read"] }`
	if err := root.Sys().PutPolicyWithContext(ctx, "encurl-decrypt", policy); err != nil {
		t.Fatal(err)
	}
	sec, err := root.Auth().Token().CreateWithContext(ctx, &vaultapi.TokenCreateRequest{
		Policies: []string{"encurl-decrypt"}, NoDefaultPolicy: true, TTL: "3s", ExplicitMaxTTL: "3s",
	})
	if err != nil || sec == nil || sec.Auth == nil {
		t.Fatalf("token create: %v", err)
	}
	c, err := vaultServer.Client()
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(sec.Auth.ClientToken)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if _, err := c.Auth().Token().LookupSelf(); err != nil {
			break // expired
		}
		if time.Now().After(deadline) {
			t.Fatal("token still accepted 30 s after its TTL")
		}
	}
	kr, err := keyring.NewVault(keyring.VaultOptions{Client: c, Key: "pubcrypt", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// TestExpiredTokenOnKafkaDropsNothing reproduces "the enc+ subscription acks and drops
// messages after a token expired (Dropped:50)". An expired token is a fault of the
// environment: the subscription must hold the message (Kafka has no Nack), drop and
// dead-letter nothing, and a rerun in the same group with a good token gets all 50.
func TestExpiredTokenOnKafkaDropsNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	top := open(t, ctx, "enc+kafka://expired")
	const n = 50
	for i := range n {
		if err := top.Send(ctx, &pubsub.Message{Body: appBody(i), Metadata: map[string]string{"n": fmt.Sprint(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	encurl.RegisterConfig("expired-token", encurl.Config{Keyring: expiredKeyring(t)})

	const group = "g-expired"
	for _, dlq := range []string{"", "&dlq=" + url.QueryEscape("kafka://expired-dlq")} {
		sub, err := pubsub.OpenSubscription(ctx, "enc+kafka://"+group+"?topic=expired&offset=oldest&config=expired-token"+dlq)
		if err != nil {
			t.Fatal(err)
		}
		rctx, rcancel := context.WithTimeout(ctx, 4*time.Second)
		m, err := sub.Receive(rctx)
		rcancel()
		if err == nil {
			t.Fatalf("received %q with an expired token", m.Body)
		}
		c, _ := encurl.SubscriptionCounts(sub)
		if c.Dropped != 0 || c.DeadLettered != 0 || c.Held == 0 {
			t.Errorf("expired token (dlq %q): counts %+v, want nothing dropped or dead-lettered, the message held", dlq, c)
		}
		t.Logf("expired token (dlq %q): %+v", dlq, c)
		if err := sub.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// The same group with a good token (VAULT_TOKEN): every message is still there.
	sub := subscribe(t, ctx, "enc+kafka://"+group+"?topic=expired&offset=oldest")
	seen := map[string]bool{}
	for _, m := range receive(t, ctx, sub, n) {
		seen[m.Metadata["n"]] = true
	}
	if len(seen) != n {
		t.Fatalf("%d distinct messages of %d after the expired token", len(seen), n)
	}
	t.Logf("a good token in the same group then received all %d", n)
}

// TestExpiredTokenNacks: on a broker with Nack the message is nacked for redelivery,
// never acked.
func TestExpiredTokenNacks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	encurl.RegisterConfig("expired-nack", encurl.Config{Keyring: expiredKeyring(t)})
	open(t, ctx, "mem://expired")
	sub := subscribe(t, ctx, "enc+mem://expired?config=expired-nack")
	if err := open(t, ctx, "enc+mem://expired").Send(ctx, &pubsub.Message{Body: []byte("later")}); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
	_, err := sub.Receive(rctx)
	rcancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("receive with an expired token: %v; want a timeout", err)
	}
	if c, _ := encurl.SubscriptionCounts(sub); c.Nacked == 0 || c.Dropped != 0 || c.DeadLettered != 0 {
		t.Errorf("counts %+v: want the message nacked, never dropped", c)
	}
}

// TestPoisonSendDoesNotFailOthers: Sends on an enc+ topic are independent, though
// gocloud batches them: one that cannot be protected fails with a message fault, and the
// others arrive.
func TestPoisonSendDoesNotFailOthers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	open(t, ctx, "mem://poison")
	sub := subscribe(t, ctx, "mem://poison")
	top := open(t, ctx, "enc+mem://poison?fields=name%3Dtransit")
	const n = 20
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		body := appBody(i)
		if i == 7 {
			body = []byte(`{"name": "no end"`)
		}
		wg.Go(func() {
			errs[i] = top.Send(ctx, &pubsub.Message{Body: body, Metadata: map[string]string{"n": fmt.Sprint(i)}})
		})
	}
	wg.Wait()
	if !fault.IsMessage(errs[7]) || gcerrors.Code(errs[7]) != gcerrors.InvalidArgument {
		t.Errorf("poison Send: %v (class %v, code %v), want a message fault, InvalidArgument", errs[7], fault.ClassOf(errs[7]), gcerrors.Code(errs[7]))
	}
	got := map[string]bool{}
	for len(got) < n-1 {
		m, err := sub.Receive(ctx)
		if err != nil {
			t.Fatalf("after %d messages: %v", len(got), err)
		}
		m.Ack()
		if m.Metadata["n"] == "7" {
			t.Fatal("the poison message reached the broker")
		}
		got[m.Metadata["n"]] = true
	}
	failedGood := 0
	for i, err := range errs {
		if i != 7 && err != nil {
			failedGood++
		}
	}
	t.Logf("poison Send: %v; %d good Sends shared its batch (and its error) but were sent", errs[7], failedGood)
}
