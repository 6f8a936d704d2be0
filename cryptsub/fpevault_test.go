package cryptsub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/devvault"
	"github.com/pubcrypt/pubcrypt/internal/purchase"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// TestFPEInVault sends card numbers in field mode fpe(bin,luhn,vault) through Kafka with a
// real Vault dev server that loaded pubcrypt's FPE plugin (scripts/install-fpe-plugin.sh,
// $PUBCRYPT_FPE_PLUGIN_BIN; without it the test fails): the cards on the wire keep their
// shape, BIN and check digit; the manifest names the plugin key and its version; after a
// rotation of the plugin key new messages carry version 2 and every message of both
// versions decrypts byte for byte.
func TestFPEInVault(t *testing.T) {
	const topic, n, mount = "purchases_fpe_vault", 20, keyring.DefaultFPEMount
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := devvault.Start(ctx, devvault.Options{Keys: []string{transitKey}, FPEPluginMount: mount})
	if err != nil {
		t.Fatalf("cannot start a Vault dev server with the FPE plugin: %v", err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	if err := srv.CreateFPEPluginKey(ctx, mount, fpeKey); err != nil {
		t.Fatal(err)
	}
	b := newKafka(t, topic)
	policy, err := crypttopic.ParseFieldPolicy("name=transit,card_number=fpe(bin,luhn,vault)")
	if err != nil {
		t.Fatal(err)
	}
	sendKeys := newVault(t, srv)
	top, err := crypttopic.Open(ctx, "kafka://"+topic, crypttopic.Options{Keyring: sendKeys, Fields: policy})
	if err != nil {
		t.Fatal(err)
	}
	// The same purchases before and after the rotation: equal cards encode differently
	// under the two versions.
	ps, bodies := purchases(7, n)
	sendBatches(t, ctx, top, ps, bodies, 10)
	calls := sendKeys.Calls()
	// A card the plugin refuses (its check digit is wrong, and luhn is asked) fails its
	// message alone, as a fault of the message, without showing the number; nothing of
	// the batch is sent.
	bad := strings.Replace(string(bodies[0]), ps[0].CardNumber, ps[0].CardNumber[:len(ps[0].CardNumber)-1]+luhnBreaker(ps[0].CardNumber), 1)
	err = top.SendBatch(ctx, []*pubsub.Message{{Body: []byte(bad), Metadata: map[string]string{"order": "bad"}}})
	if err == nil || !fault.IsMessage(err) || !errors.Is(err, keyring.ErrValueRefused) || strings.Contains(err.Error(), ps[0].CardNumber[7:]) {
		t.Fatalf("a card failing the Luhn check: %v; want a message fault, ErrValueRefused, without the number", err)
	}
	t.Logf("a card failing the Luhn check: %v", err)
	if err := srv.RotateFPEPluginKey(ctx, mount, fpeKey); err != nil {
		t.Fatal(err)
	}
	sendBatches(t, ctx, top, ps, bodies, 10)
	if err := top.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d purchases in batches of 10: %d Vault calls on the send side before the rotation (data key, transit and fpe(vault) batches)", n, calls)

	byOrder := map[string]int{}
	for i, p := range ps {
		byOrder[p.ID] = i
	}
	onWire := map[string][2]string{} // order → card under version 1 and 2
	for _, r := range readRaw(t, b, topic, 2*n) {
		p := ps[byOrder[header(r, "order")]]
		if bytes.Contains(r.Value, []byte(p.CardNumber)) || bytes.Contains(r.Value, []byte(p.Name)) {
			t.Fatalf("raw record of %s holds a protected value in clear", p.ID)
		}
		var doc map[string]any
		if err := json.Unmarshal(r.Value, &doc); err != nil {
			t.Fatal(err)
		}
		card, _ := doc["card_number"].(string)
		if len(card) != len(p.CardNumber) || card[:7] != p.CardNumber[:7] || !purchase.LuhnValid(card) || card == p.CardNumber {
			t.Fatalf("order %s: card %q is not format-preserved", p.ID, card)
		}
		m := header(r, "pubcrypt-fields")
		version := 0
		switch {
		case strings.Contains(m, ";fk="+fpeKey+"@1;"):
			version = 1
		case strings.Contains(m, ";fk="+fpeKey+"@2;"):
			version = 2
		}
		if version == 0 || !strings.Contains(m, "card_number:fbcv") {
			t.Fatalf("order %s: manifest %q, want fk=%s@1 or @2 and card_number:fbcv", p.ID, m, fpeKey)
		}
		w := onWire[p.ID]
		if w[version-1] != "" {
			t.Fatalf("order %s: two records under version %d", p.ID, version)
		}
		w[version-1] = card
		onWire[p.ID] = w
	}
	for id, w := range onWire {
		if w[0] == w[1] {
			t.Fatalf("order %s: the same card encoded to %q under versions 1 and 2", id, w[0])
		}
	}

	// Received after the rotation: version 1 still decodes.
	recvKeys := newVault(t, srv)
	sub, err := cryptsub.Open(ctx, "kafka://g-fpe-vault?topic="+topic+"&offset=oldest", cryptsub.Options{Keyring: recvKeys})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Shutdown(context.Background())
	for i := range 2 * n {
		m, info, err := sub.ReceiveInfo(ctx)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		m.Ack()
		want := bodies[byOrder[m.Metadata["order"]]]
		if !bytes.Equal(m.Body, want) || !info.Fields {
			t.Fatalf("message %d decrypted to %s, want %s", i, m.Body, want)
		}
	}
	t.Logf("%d messages (key versions 1 and 2) decrypted byte for byte after the rotation: %d Vault calls on the receive side", 2*n, recvKeys.Calls())

	// ReceiveBatch opens messages of both versions together: one decode call per version
	// for the whole batch.
	batchKeys := newVault(t, srv)
	bsub, err := cryptsub.Open(ctx, "kafka://g-fpe-vault-batch?topic="+topic+"&offset=oldest", cryptsub.Options{Keyring: batchKeys})
	if err != nil {
		t.Fatal(err)
	}
	defer bsub.Shutdown(context.Background())
	got, batches := 0, 0
	for got < 2*n {
		msgs, _, errs := bsub.ReceiveBatch(ctx, 2*n)
		batches++
		for i, m := range msgs {
			if errs[i] != nil {
				t.Fatalf("ReceiveBatch: %v", errs[i])
			}
			m.Ack()
			if want := bodies[byOrder[m.Metadata["order"]]]; !bytes.Equal(m.Body, want) {
				t.Fatalf("ReceiveBatch: %s, want %s", m.Body, want)
			}
			got++
		}
	}
	t.Logf("ReceiveBatch: %d messages of both versions in %d batches, %d Vault calls on the receive side", got, batches, batchKeys.Calls())
}

// luhnBreaker returns a last digit other than card's own, so that the card fails the
// Luhn check.
func luhnBreaker(card string) string {
	last := card[len(card)-1]
	return string(rune('0' + (last-'0'+1)%10))
}
