package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// TestLeastPrivilegeFPEPlugin is TestLeastPrivilege's answer to its FPE weakness: field
// mode fpe(vault) runs FF1 inside Vault, in pubcrypt's plugin, which the package's dev
// server loaded and enabled where terraform/vault mounts it. With the producer and
// consumer tokens of terraform/vault/main.tf's policies, against the real Vault and
// Kafka broker:
//
//   - the producer token sends card numbers in fpe(bin,luhn,vault); the consumer token
//     decrypts every message byte for byte;
//   - the producer token, holding the cards exactly as they are on the wire, is refused
//     their decoding by Vault (keyring.ErrPermissionDenied), and may not read the
//     plugin key either: unlike mode fpe, a stolen producer token decodes nothing;
//   - the consumer token is refused encoding (keyring.ErrPermissionDenied);
//   - no error text contains a token or a card number.
func TestLeastPrivilegeFPEPlugin(t *testing.T) {
	const topic, n = "lp_fpe_vault", 5
	b := newKafka(t, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ps, bodies := purchases(78, n)
	policy, err := crypttopic.ParseFieldPolicy("card_number=fpe(bin,luhn,vault)")
	if err != nil {
		t.Fatal(err)
	}
	keys := fieldKeys()
	keys.FPE = names.FPEPluginKey

	producer := vaultWith(t, producerToken)
	top, err := crypttopic.Open(ctx, "kafka://"+topic, crypttopic.Options{Keyring: producer, Fields: policy, FieldKeys: keys})
	if err != nil {
		t.Fatal(err)
	}
	if err := top.SendBatch(ctx, messages(ps, bodies)); err != nil {
		t.Fatalf("producer token: send fpe(vault): %v", err)
	}
	if err := top.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	sub, err := cryptsub.Open(ctx, "kafka://consumer-fpe-vault?topic="+topic+"&offset=oldest", cryptsub.Options{Keyring: vaultWith(t, consumerToken)})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{}
	for i, p := range ps {
		want[p.ID] = bodies[i]
	}
	for range n {
		msg, err := sub.Receive(ctx)
		if err != nil {
			t.Fatalf("consumer token: receive fpe(vault): %v", err)
		}
		msg.Ack()
		if id := msg.Metadata["order"]; !bytes.Equal(msg.Body, want[id]) {
			t.Fatalf("consumer token: order %s decrypted to %s, want %s", id, msg.Body, want[id])
		}
	}
	_ = sub.Shutdown(ctx)
	t.Logf("producer token sent, consumer token decrypted %d messages in fpe(vault), byte for byte", n)

	// The producer token with the raw topic in hand: every card, its tweak, options and
	// the key version the manifest names, straight to Vault's decode path.
	var items []keyring.FPEItem
	for _, r := range readRaw(t, b, topic, n) {
		var doc map[string]any
		if err := json.Unmarshal(r.Value, &doc); err != nil {
			t.Fatal(err)
		}
		card, _ := doc["card_number"].(string)
		items = append(items, keyring.FPEItem{Value: card, Tweak: []byte("card_number"), Options: "bin,luhn"})
		for _, h := range r.Headers {
			if h.Key == "pubcrypt-fields" && !strings.Contains(string(h.Value), ";fk="+names.FPEPluginKey+"@1;") {
				t.Fatalf("manifest %q does not name plugin key %s version 1", h.Value, names.FPEPluginKey)
			}
		}
	}
	err = producer.FPEDecrypt(ctx, names.FPEPluginKey, 1, items)
	if !errors.Is(err, keyring.ErrPermissionDenied) {
		t.Fatalf("producer token decoding the cards of the raw topic: %v; want permission denied", err)
	}
	for _, it := range items {
		if it.Result != "" {
			t.Fatalf("producer token got a decoded card")
		}
	}
	checkFPEError(t, "producer token decoding cards", err, ps[0].CardNumber)
	t.Logf("producer token decoding %d cards of the raw topic through Vault: %v", n, err)
	root, err := vaultServer.Client()
	if err != nil {
		t.Fatal(err)
	}
	root.SetToken(producerToken)
	if _, err := root.Logical().ReadWithContext(ctx, names.FPEPluginMount+"/keys/"+names.FPEPluginKey); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("producer token reading the plugin key: %v; want permission denied", err)
	}

	// The consumer token may decode, not encode.
	consumer := vaultWith(t, consumerToken)
	enc := []keyring.FPEItem{{Value: ps[0].CardNumber, Tweak: []byte("card_number"), Options: "bin,luhn"}}
	_, err = consumer.FPEEncrypt(ctx, names.FPEPluginKey, enc)
	if !errors.Is(err, keyring.ErrPermissionDenied) || enc[0].Result != "" {
		t.Fatalf("consumer token encoding a card: %v; want permission denied", err)
	}
	checkFPEError(t, "consumer token encoding a card", err, ps[0].CardNumber)
	t.Logf("consumer token encoding a card through Vault: %v", err)
}

func checkFPEError(t *testing.T, what string, err error, card string) {
	t.Helper()
	checkNoSecrets(t, what, err)
	if strings.Contains(err.Error(), card) {
		t.Errorf("%s: error text contains a card number: %v", what, err)
	}
}
