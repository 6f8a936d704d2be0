package netfault_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/pubcrypt/pubcrypt/internal/devvault"
	"github.com/pubcrypt/pubcrypt/internal/netfault"
)

// TestVaultThroughProxy drives a real Vault through the proxy in each mode.
func TestVaultThroughProxy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := devvault.Start(ctx, devvault.Options{Keys: []string{"k"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	p, err := netfault.Listen(strings.TrimPrefix(s.Addr, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	// client talks to Vault through the proxy with the given timeout and no retries,
	// so that each call shows what one request meets.
	client := func(timeout time.Duration) *api.Client {
		c, err := s.Client()
		if err != nil {
			t.Fatal(err)
		}
		if err := c.SetAddress("http://" + p.Addr()); err != nil {
			t.Fatal(err)
		}
		c.SetMaxRetries(0)
		c.SetClientTimeout(timeout)
		return c
	}
	encrypt := func(c *api.Client) (time.Duration, error) {
		start := time.Now()
		_, err := c.Logical().WriteWithContext(ctx, "transit/encrypt/k", map[string]any{"plaintext": "aGVsbG8="})
		return time.Since(start), err
	}
	isTimeout := func(err error) bool {
		var ne net.Error
		return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
	}

	c := client(30 * time.Second)
	took, err := encrypt(c)
	if err != nil {
		t.Fatalf("pass: %v", err)
	}
	t.Logf("pass: encrypt in %v", took)

	const d = 200 * time.Millisecond
	p.Delay(d)
	took, err = encrypt(c)
	if err != nil {
		t.Fatalf("delay: %v", err)
	}
	if took < d {
		t.Errorf("delay %v: encrypt took %v", d, took)
	}
	t.Logf("delay %v each way: encrypt in %v", d, took)

	// Cut: the call fails with a reset, not with the client's 30 s timeout.
	p.Cut()
	took, err = encrypt(c)
	if err == nil || isTimeout(err) {
		t.Fatalf("cut: %v, want a connection error", err)
	}
	t.Logf("cut: encrypt failed in %v: %v", took, err)

	p.Silent()
	took, err = encrypt(client(500 * time.Millisecond))
	if !isTimeout(err) {
		t.Fatalf("silent: %v, want the client's timeout", err)
	}
	t.Logf("silent: encrypt timed out after %v", took)

	p.Pass()
	if _, err := encrypt(c); err != nil {
		t.Fatalf("pass after silent: %v", err)
	}
	if p.Accepted() < 3 {
		t.Errorf("Accepted = %d, want one per connection the clients opened (≥ 3)", p.Accepted())
	}
	t.Logf("connections accepted: %d, open: %d", p.Accepted(), p.Open())

	// A silent Vault from the start: a client with a timeout times out.
	silent, err := netfault.Silent()
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	sc := client(500 * time.Millisecond)
	sc.SetAddress("http://" + silent.Addr())
	if _, err := sc.Sys().HealthWithContext(ctx); !isTimeout(err) {
		t.Errorf("health of a silent Vault: %v, want a timeout", err)
	}
}
