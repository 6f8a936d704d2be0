package cryptsub_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/devvault"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// shortToken returns a token that may decrypt with the package's transit key and expires
// after ttl, made with the root client as an operator would.
func shortToken(t *testing.T, srv *devvault.Server, ttl string) string {
	t.Helper()
	ctx := context.Background()
	root, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	policy := fmt.Sprintf(`path "transit/decrypt/%s" { capabilities = ["update"] }
path "auth/token/lookup-self" { capabilities = ["read"] }`, transitKey)
	if err := root.Sys().PutPolicyWithContext(ctx, "decrypt-only", policy); err != nil {
		t.Fatal(err)
	}
	sec, err := root.Auth().Token().CreateWithContext(ctx, &vaultapi.TokenCreateRequest{
		Policies: []string{"decrypt-only"}, NoDefaultPolicy: true, TTL: ttl, ExplicitMaxTTL: ttl,
	})
	if err != nil || sec == nil || sec.Auth == nil {
		t.Fatalf("token create: %v", err)
	}
	return sec.Auth.ClientToken
}

// waitExpired waits until Vault refuses tok (its policy allows lookup-self while valid).
func waitExpired(t *testing.T, srv *devvault.Server, tok string) {
	t.Helper()
	c, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(tok)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := c.Auth().Token().LookupSelf()
		if err != nil {
			t.Logf("token refused: %v", err)
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("token still accepted 30 s after its TTL")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// vaultWithToken is a keyring on srv that uses tok.
func vaultWithToken(t *testing.T, srv *devvault.Server, tok string) *keyring.Vault {
	t.Helper()
	c, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(tok)
	v, err := keyring.NewVault(keyring.VaultOptions{Client: c, Key: transitKey})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestExpiredTokenIsEnvironmentFault reproduces "with a wrong or expired Vault token on
// the receive side, messages look undecryptable and consume --skip-undecryptable acks
// them". The receiver below follows that policy, through the library's own answer: it
// acks a *DecryptError unless Retryable. With an expired token every failure must be of
// class Environment, so nothing is acked, and a fresh subscription in the same consumer
// group with a good token receives every message.
func TestExpiredTokenIsEnvironmentFault(t *testing.T) {
	const topic = "expired-token"
	const group = "g-expired-token"
	newKafka(t, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	tok := shortToken(t, vaultServer, "3s")
	expired := vaultWithToken(t, vaultServer, tok)

	policy, err := crypttopic.ParseFieldPolicy("name=transit")
	if err != nil {
		t.Fatal(err)
	}
	top, err := crypttopic.Open(ctx, "kafka://"+topic, crypttopic.Options{Keyring: newVault(t, vaultServer)})
	if err != nil {
		t.Fatal(err)
	}
	const nBody, nFields = 40, 20
	sendAll(t, ctx, top, nBody)
	for i := nBody; i < nBody+nFields; i++ {
		m := &pubsub.Message{Body: body(i), Metadata: map[string]string{"seq": fmt.Sprint(i), "source": "test", crypttopic.ProtectKey: policy.String()}}
		if err := top.Send(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := top.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	const n = nBody + nFields
	waitExpired(t, vaultServer, tok)

	sub, err := cryptsub.Open(ctx, "kafka://"+group+"?topic="+topic+"&offset=oldest", cryptsub.Options{Keyring: expired})
	if err != nil {
		t.Fatal(err)
	}
	var failed, acked int
	for failed < n {
		rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
		m, err := sub.Receive(rctx)
		rcancel()
		var de *cryptsub.DecryptError
		switch {
		case errors.As(err, &de):
			failed++
			if c := de.Class(); c != fault.Environment || fault.ClassOf(err) != fault.Environment || !de.Retryable() {
				t.Errorf("expired token: class %v, Retryable %v (%v); want environment, retryable", c, de.Retryable(), err)
			}
			if !errors.Is(err, keyring.ErrPermissionDenied) {
				t.Errorf("expired token: %v, want keyring.ErrPermissionDenied", err)
			}
			if failed == 1 {
				t.Logf("with the expired token: %v (class %v)", err, de.Class())
			}
			if !de.Retryable() { // consume --skip-undecryptable's rule
				acked++
				de.Message.Ack()
			}
		case err != nil:
			t.Fatalf("receive after %d failures: %v", failed, err)
		default:
			t.Fatalf("message %s decrypted with an expired token", m.Metadata["seq"])
		}
	}
	if err := sub.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if acked != 0 {
		t.Fatalf("%d of %d messages acked with an expired token", acked, n)
	}

	// The same group, a good token: every message is still there.
	again, err := cryptsub.Open(ctx, "kafka://"+group+"?topic="+topic+"&offset=oldest", cryptsub.Options{Keyring: newVault(t, vaultServer)})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Shutdown(context.Background())
	receiveAll(t, ctx, again, n)
	t.Logf("expired token: %d of %d failed as environment faults, %d acked; then a good token in the same group received all %d", failed, n, acked, n)
}

// TestMessageFaultsStayMessageFaults: what is wrong with the message itself keeps class
// Message, so a receiver may still dead-letter or skip it.
func TestMessageFaultsStayMessageFaults(t *testing.T) {
	const topic = "message-faults"
	b := newKafka(t, topic)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	top, err := crypttopic.Open(ctx, "kafka://"+topic, crypttopic.Options{Keyring: newVault(t, vaultServer)})
	if err != nil {
		t.Fatal(err)
	}
	if err := top.Send(ctx, &pubsub.Message{Body: body(0)}); err != nil {
		t.Fatal(err)
	}
	if err := top.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	raw := readRaw(t, b, topic, 1)[0]
	tampered := *raw
	tampered.Value = append([]byte(nil), raw.Value...)
	tampered.Value[len(tampered.Value)/2] ^= 1
	plain := *raw
	plain.Headers = nil
	produceRaw(t, b, &tampered, &plain)

	sub, err := cryptsub.Open(ctx, "kafka://g-"+topic+"?topic="+topic+"&offset=oldest", cryptsub.Options{Keyring: newVault(t, vaultServer)})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Shutdown(context.Background())
	for _, want := range []error{nil, cryptsub.ErrTampered, cryptsub.ErrNoEnvelope} {
		m, err := sub.Receive(ctx)
		if want == nil {
			if err != nil {
				t.Fatal(err)
			}
			m.Ack()
			continue
		}
		var de *cryptsub.DecryptError
		if !errors.As(err, &de) || !errors.Is(err, want) || de.Class() != fault.Message || de.Retryable() {
			t.Fatalf("got %v (class %v), want %v of class message", err, fault.ClassOf(err), want)
		}
		de.Message.Ack()
	}
}
