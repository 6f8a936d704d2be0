package encurl_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/encurl"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// TestTransitFieldsCallsPerMessage: an enc+ subscription decrypts in batches of 100, so a
// stream of transit-field messages costs at most 0.02 Vault calls per message on the
// receive side, as cryptsub.ReceiveBatch does (it was 1 per message when the driver decrypted
// one message at a time), and the messages keep their order.
func TestTransitFieldsCallsPerMessage(t *testing.T) {
	const n = 1000
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	newKeyring := func() *keyring.Vault {
		c, err := vaultServer.Client()
		if err != nil {
			t.Fatal(err)
		}
		kr, err := keyring.NewVault(keyring.VaultOptions{Client: c, Key: keyring.DefaultKey})
		if err != nil {
			t.Fatal(err)
		}
		return kr
	}
	policy, err := crypttopic.ParseFieldPolicy("name=transit")
	if err != nil {
		t.Fatal(err)
	}
	send := newKeyring()
	top, err := crypttopic.Open(ctx, "kafka://transit-batch", crypttopic.Options{Keyring: send, Fields: policy})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n { // one by one, so that the topic holds them in order
		if err := top.Send(ctx, &pubsub.Message{Body: appBody(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := top.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	recv := newKeyring()
	encurl.RegisterConfig("transit-batch", encurl.Config{Keyring: recv})
	sub := subscribe(t, ctx, "enc+kafka://g-transit-batch?topic=transit-batch&offset=oldest&config=transit-batch")
	got := receive(t, ctx, sub, n)
	for i, m := range got {
		var v struct {
			N    int    `json:"n"`
			Name string `json:"name"`
		}
		if err := json.Unmarshal(m.Body, &v); err != nil || v.N != i || string(m.Body) != string(appBody(i)) {
			t.Fatalf("message %d: %s (%v): not the %dth message sent, or not decrypted", i, m.Body, err, i)
		}
	}
	perMsg := float64(recv.Calls()) / n
	t.Logf("enc+ subscription, %d transit-field messages: %d Vault calls (%.3f per message); send side %d", n, recv.Calls(), perMsg, send.Calls())
	if perMsg > 0.02 {
		t.Fatalf("%.3f Vault calls per message on the receive side, want ≤ 0.02", perMsg)
	}
}
