package encurl_test

import (
	"context"
	"net/url"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/encurl"
	"github.com/pubcrypt/pubcrypt/internal/netfault"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// TestVaultOutageOnKafkaLosesNothing: Kafka cannot nack, so a message that fails only
// because Vault is unreachable must be held and retried, not dead-lettered or dropped.
func TestVaultOutageOnKafkaLosesNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	vu, _ := url.Parse(vaultServer.Addr)
	proxy, err := netfault.Listen(vu.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	cfg := vaultapi.DefaultConfig()
	cfg.Address = "http://" + proxy.Addr()
	c, err := vaultapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(vaultServer.Token)
	kr, err := keyring.NewVault(keyring.VaultOptions{Client: c, Key: "pubcrypt", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	encurl.RegisterConfig("via-proxy", encurl.Config{Keyring: kr})

	// Messages under fresh data keys, so each receive needs Vault.
	top := open(t, ctx, "enc+kafka://outage?config=via-proxy&reuse_max_age=1ns")
	const n = 5
	for i := range n {
		if err := top.Send(ctx, &pubsub.Message{Body: appBody(i)}); err != nil {
			t.Fatal(err)
		}
	}
	proxy.Cut() // Vault unreachable from the consumer
	sub := subscribe(t, ctx, "enc+kafka://g-outage?topic=outage&offset=oldest&config=via-proxy&dlq="+url.QueryEscape("kafka://outage-dlq"))
	rctx, rcancel := context.WithTimeout(ctx, 4*time.Second)
	if m, err := sub.Receive(rctx); err == nil {
		t.Fatalf("received %q while Vault was unreachable", m.Body)
	}
	rcancel()
	proxy.Pass() // Vault is back
	got := receive(t, ctx, sub, n)
	if len(got) != n {
		t.Fatalf("received %d of %d after the outage", len(got), n)
	}
	if counts, _ := encurl.SubscriptionCounts(sub); counts.DeadLettered != 0 || counts.Dropped != 0 {
		t.Fatalf("counts %+v: a message failing only on the outage was disposed of", counts)
	}
}
