package crypttopic_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/internal/broker"
)

// TestNewProtectsKgoKeyName: a kgo:// topic opened with key_name outside Open and wrapped
// with New still protects its record key (the driver says which entry it sends), and one
// opened with key_field, which would read the sealed body, is refused. Real Vault, kfake.
func TestNewProtectsKgoKeyName(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kr := vaultKeyring(t, vaultServer, "", transitKey)
	byField, err := broker.OpenTopic(ctx, "kgo://keyed-new?key_field=user")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := crypttopic.New(byField, crypttopic.Options{Keyring: kr}); err == nil || !strings.Contains(err.Error(), "key_field") {
		t.Fatalf("New over a key_field topic: %v", err)
	}
	_ = byField.Shutdown(ctx)
	pt, err := broker.OpenTopic(ctx, "kgo://keyed-new?key_name=user")
	if err != nil {
		t.Fatal(err)
	}
	top, err := crypttopic.New(pt, crypttopic.Options{Keyring: kr})
	if err != nil {
		t.Fatal(err)
	}
	if err := top.Send(ctx, &pubsub.Message{Body: []byte("x"), Metadata: map[string]string{"user": "alice"}}); err != nil {
		t.Fatal(err)
	}
	_ = top.Shutdown(ctx)
	raw, err := kafka.ReadRaw(ctx, "keyed-new", 1)
	if err != nil {
		t.Fatal(err)
	}
	if k := string(raw[0].Key); !strings.HasPrefix(k, "vault:v") || strings.Contains(k, "alice") {
		t.Fatalf("record key %.12q... is not protected", k)
	}
}
