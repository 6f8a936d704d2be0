package cryptsub_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// TestTransformNeedsEnterprise configures field mode transform against the real
// open-source Vault dev server, which has no Transform engine: every send with a
// transform rule fails closed with keyring.ErrTransformNotAvailable, telling the operator
// that Vault Enterprise is needed and to use mode fpe, and nothing reaches the broker.
func TestTransformNeedsEnterprise(t *testing.T) {
	const url = "mem://transform_refused"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	keys := newVault(t, vaultServer)

	// The keyring itself says so.
	if _, err := keys.TransformEncode(ctx, "payments", "card-fpe", []string{"4111111111111111"}); !errors.Is(err, keyring.ErrTransformNotAvailable) {
		t.Fatalf("Vault.TransformEncode on open-source Vault = %v, want ErrTransformNotAvailable", err)
	}

	policy, err := crypttopic.ParseFieldPolicy("name=transit, card_number=transform(payments/card-fpe)")
	if err != nil {
		t.Fatal(err)
	}
	// Configuration is accepted (the role is checked by Vault, at the first send).
	top, err := crypttopic.Open(ctx, url, crypttopic.Options{Keyring: keys, Fields: policy})
	if err != nil {
		t.Fatal(err)
	}
	defer top.Shutdown(ctx)
	raw, err := pubsub.OpenSubscription(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Shutdown(ctx)

	const body = `{"id":"ord-1","name":"Ana Silva","card_number":"4111-1111-1111-1111","amount":42.5}`
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, keyring.ErrTransformNotAvailable) {
			t.Fatalf("%s = %v, want ErrTransformNotAvailable", what, err)
		}
		t.Logf("%s: %v", what, err)
		for _, s := range []string{"Vault Enterprise", "use mode fpe instead"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%s: error %q does not say %q", what, err, s)
			}
		}
		if strings.Contains(err.Error(), "4111") || strings.Contains(err.Error(), "Ana Silva") {
			t.Errorf("%s: error %q shows a field value", what, err)
		}
	}
	check("Send", top.Send(ctx, &pubsub.Message{Body: []byte(body)}))
	check("SendBatch", top.SendBatch(ctx, []*pubsub.Message{
		{Body: []byte(body), Metadata: map[string]string{crypttopic.ProtectKey: "name=transit"}},
		{Body: []byte(body)},
	}))
	check("Send with a per-message policy", top.Send(ctx, &pubsub.Message{Body: []byte(body),
		Metadata: map[string]string{crypttopic.ProtectKey: "card_number=transform(payments)"}}))

	// Nothing was sent: the first message the broker holds is the one sent with mode fpe
	// instead, and a consumer opens it.
	if err := top.Send(ctx, &pubsub.Message{Body: []byte(body),
		Metadata: map[string]string{crypttopic.ProtectKey: "name=transit,card_number=fpe"}}); err != nil {
		t.Fatal(err)
	}
	m, err := raw.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m.Ack()
	if manifest := m.Metadata["pubcrypt-fields"]; !strings.Contains(manifest, ";r=name:t,card_number:f;") {
		t.Fatalf("first message on the broker has manifest %q, want the fpe one", manifest)
	}
	sub, err := cryptsub.Open(ctx, url, cryptsub.Options{Keyring: keys})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Shutdown(ctx)
	if err := top.Send(ctx, &pubsub.Message{Body: []byte(body),
		Metadata: map[string]string{crypttopic.ProtectKey: "card_number=fpe(bin,luhn)"}}); err != nil {
		t.Fatal(err)
	}
	got, err := sub.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got.Ack()
	if string(got.Body) != body {
		t.Errorf("consumer got %s, want %s", got.Body, body)
	}
	rest, cancelRest := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelRest()
	if extra, err := raw.Receive(rest); err == nil {
		extra.Ack()
		if !strings.Contains(extra.Metadata["pubcrypt-fields"], ":fbc;") {
			t.Errorf("unexpected message on the broker with manifest %q", extra.Metadata["pubcrypt-fields"])
		}
	}
}
