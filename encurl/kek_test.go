package encurl_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/internal/devkms"
)

// TestKEKByURL: kek= selects the key-encryption key by URL — here an AWS KMS key on the
// local-kms emulator — in place of Vault Transit, for a plain gocloud application on
// Kafka; the envelope field mode needs nothing else of the key service.
func TestKEKByURL(t *testing.T) {
	const n = 100
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kms, err := devkms.Start(ctx, devkms.Options{})
	if err != nil {
		t.Fatalf("local-kms: %v", err)
	}
	t.Cleanup(func() { _ = kms.Stop() })
	for _, kv := range kms.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	key, err := kms.CreateKey(ctx, "encurl kek")
	if err != nil {
		t.Fatal(err)
	}
	kek := "kek=" + url.QueryEscape(kms.KeeperURL(key.ID))
	// The sender names the key by its ARN, the receiver by its ID: one name in envelopes.
	top := open(t, ctx, "enc+kafka://kek?fields=name%3Denvelope&kek_id=orders-kek&kek="+url.QueryEscape(kms.KeeperURL(key.ARN)))
	sub := subscribe(t, ctx, "enc+kafka://g-kek?topic=kek&offset=oldest&kek_id=orders-kek&"+kek)
	for i := range n {
		if err := top.Send(ctx, &pubsub.Message{Body: appBody(i)}); err != nil {
			t.Fatal(err)
		}
	}
	got := receive(t, ctx, sub, n)
	seen := map[string]bool{}
	for _, m := range got {
		seen[string(m.Body)] = true
	}
	for i := range n {
		if !seen[string(appBody(i))] {
			t.Fatalf("message %d did not arrive decrypted", i)
		}
	}
	t.Logf("%d messages over enc+kafka with kek=awskms (local-kms), envelope-mode fields", n)

	// A kek that cannot be opened is an error naming the parameter, never its value (a
	// base64key:// URL is the key itself); vault_key does not go with kek.
	const secret = "c2VjcmV0LWtleS1ub3QtMzItYnl0ZXM" // not a 32-byte key
	for _, u := range []string{
		"enc+mem://kek-bad?kek=" + url.QueryEscape("base64key://"+secret),
		"enc+mem://kek-bad?vault_key=pubcrypt&" + kek,
		"enc+mem://kek-bad?kek_id=orders-kek",
	} {
		_, err := pubsub.OpenTopic(ctx, u)
		t.Logf("%v", err)
		if err == nil || !strings.Contains(err.Error(), "parameter ") || strings.Contains(err.Error(), secret) {
			t.Errorf("open %s: %v, want an error naming the parameter and not the key", strings.ReplaceAll(u, secret, "SECRET"), err)
		}
	}
}
