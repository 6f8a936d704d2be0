package encurl_test

import (
	"context"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/encurl"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// switchProxy forwards TCP connections to target while up; when down it refuses new
// connections and cuts open ones, as a Vault outage would.
type switchProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	up     bool
	conns  []net.Conn
}

func newSwitchProxy(t *testing.T, target string) *switchProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &switchProxy{ln: ln, target: target, up: true}
	t.Cleanup(func() { ln.Close(); p.set(false) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			up := p.up
			p.mu.Unlock()
			if !up {
				c.Close()
				continue
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
	return p
}

func (p *switchProxy) set(up bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.up = up
	if !up {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

// TestVaultOutageOnKafkaLosesNothing: Kafka cannot nack, so a message that fails only
// because Vault is unreachable must be held and retried, not dead-lettered or dropped.
func TestVaultOutageOnKafkaLosesNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	vu, _ := url.Parse(vaultServer.Addr)
	proxy := newSwitchProxy(t, vu.Host)
	cfg := vaultapi.DefaultConfig()
	cfg.Address = "http://" + proxy.ln.Addr().String()
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
	proxy.set(false) // Vault unreachable from the consumer
	sub := subscribe(t, ctx, "enc+kafka://g-outage?topic=outage&offset=oldest&config=via-proxy&dlq="+url.QueryEscape("kafka://outage-dlq"))
	rctx, rcancel := context.WithTimeout(ctx, 4*time.Second)
	if m, err := sub.Receive(rctx); err == nil {
		t.Fatalf("received %q while Vault was unreachable", m.Body)
	}
	rcancel()
	proxy.set(true) // Vault is back
	got := receive(t, ctx, sub, n)
	if len(got) != n {
		t.Fatalf("received %d of %d after the outage", len(got), n)
	}
	if counts, _ := encurl.SubscriptionCounts(sub); counts.DeadLettered != 0 || counts.Dropped != 0 {
		t.Fatalf("counts %+v: a message failing only on the outage was disposed of", counts)
	}
}
