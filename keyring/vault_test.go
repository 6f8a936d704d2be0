package keyring

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/devvault"
)

// dev is the Vault dev server every Vault test of this package runs against. Without it
// the tests fail: the Vault keyring is only meaningful against the real server.
var dev *devvault.Server

func TestMain(m *testing.M) {
	s, err := devvault.Start(context.Background(), devvault.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "keyring tests need a Vault dev server:", err)
		os.Exit(1)
	}
	dev = s
	// The Example functions configure their keyring as a program would: from VAULT_ADDR
	// and VAULT_TOKEN, with the default key.
	if err := s.CreateKey(context.Background(), DefaultKey); err == nil {
		err = s.Setenv()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "keyring tests:", err)
		s.Stop()
		os.Exit(1)
	}
	code := m.Run()
	s.Stop()
	os.Exit(code)
}

var keySeq atomic.Int64

// newKey creates a transit key of its own for one test, so that rotations and policies
// of one test do not leak into another.
func newKey(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), keySeq.Add(1))
	if err := dev.CreateKey(context.Background(), name); err != nil {
		t.Fatal(err)
	}
	return name
}

func newVault(t *testing.T, key string, client *api.Client) *Vault {
	t.Helper()
	if client == nil {
		var err error
		if client, err = dev.Client(); err != nil {
			t.Fatal(err)
		}
	}
	v, err := NewVault(VaultOptions{Key: key, Client: client})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVaultRoundTrip(t *testing.T) {
	ctx := context.Background()
	name := newKey(t)
	v := newVault(t, name, nil)
	k, err := v.GenerateDataKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(k.Plaintext) != DataKeySize || k.KeyID != name || k.Version != 1 || !strings.HasPrefix(k.Wrapped, "vault:v1:") {
		t.Fatalf("GenerateDataKey = {%d bytes, %q, v%d, %.12q...}", len(k.Plaintext), k.KeyID, k.Version, k.Wrapped)
	}
	if _, err := k.AEAD(); err != nil {
		t.Fatal(err)
	}
	pt, err := v.UnwrapDataKey(ctx, k.KeyID, k.Wrapped)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pt, k.Plaintext) {
		t.Fatal("unwrapped key differs from the generated one")
	}
	if err := v.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	k2, err := v.GenerateDataKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if k2.Version != 2 || !strings.HasPrefix(k2.Wrapped, "vault:v2:") {
		t.Errorf("after Rotate: version %d, %.9q", k2.Version, k2.Wrapped)
	}
	if pt, err := v.UnwrapDataKey(ctx, k.KeyID, k.Wrapped); err != nil || !bytes.Equal(pt, k.Plaintext) {
		t.Errorf("unwrap of a v1 key after rotation: %v", err)
	}
	if n := v.Calls(); n != 5 {
		t.Errorf("Calls = %d, want 5 (generate, unwrap, rotate, generate, unwrap)", n)
	}
	if v.KeyID() != name {
		t.Errorf("KeyID = %q", v.KeyID())
	}
}

func TestVaultFromEnvironment(t *testing.T) {
	t.Setenv("VAULT_ADDR", dev.Addr)
	t.Setenv("VAULT_TOKEN", dev.Token)
	v, err := NewVault(VaultOptions{Key: newKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.GenerateDataKey(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestVaultKeepsClientSettings(t *testing.T) {
	c, err := dev.Client()
	if err != nil {
		t.Fatal(err)
	}
	c.SetNamespace("team-a/")
	v := newVault(t, "any", c)
	if v.auth.current() != dev.Token || v.client.Namespace() != "team-a/" {
		t.Errorf("cloned client: token kept %v, namespace %q", v.auth.current() == dev.Token, v.client.Namespace())
	}
	if c.MaxRetries() == v.client.MaxRetries() || c.Token() != dev.Token {
		t.Errorf("the given client was changed or not cloned")
	}
}

func TestNewVaultOptions(t *testing.T) {
	for _, tc := range []struct {
		opts      VaultOptions
		wantMount string
		errHas    string
	}{
		{VaultOptions{Key: "k"}, "transit", ""},
		{VaultOptions{Key: "k", Mount: "/kv/transit/"}, "kv/transit", ""},
		{VaultOptions{}, "", "Key is required"},
		{VaultOptions{Key: "a/b"}, "", "not a valid transit key name"},
		{VaultOptions{Key: "k", Mount: "../sys"}, "", "not a valid mount"},
		{VaultOptions{Key: "k", Mount: "transit?x=1"}, "", "not a valid mount"},
		{VaultOptions{Key: "k", Timeout: -1}, "", "negative"},
	} {
		v, err := NewVault(tc.opts)
		switch {
		case tc.errHas == "" && err != nil:
			t.Errorf("NewVault(%+v): %v", tc.opts, err)
		case tc.errHas == "" && v.mount != tc.wantMount:
			t.Errorf("NewVault(%+v): mount %q, want %q", tc.opts, v.mount, tc.wantMount)
		case tc.errHas != "" && (err == nil || !strings.Contains(err.Error(), tc.errHas)):
			t.Errorf("NewVault(%+v) error = %v, want one containing %q", tc.opts, err, tc.errHas)
		}
	}
}

func TestDataKeysWithVault(t *testing.T) {
	ctx := context.Background()
	name := newKey(t)

	v := newVault(t, name, nil)
	d, err := NewDataKeys(v, ReusePolicy{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			for range 100 {
				if _, _, err := d.Take(ctx, 1024); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := v.Calls(); n != 1 {
		t.Errorf("1000 Takes with reuse: %d Vault calls, want 1", n)
	}

	v = newVault(t, name, nil)
	d, _ = NewDataKeys(v, ReusePolicy{PerMessage: true})
	for range 20 {
		if _, _, err := d.Take(ctx, 1024); err != nil {
			t.Fatal(err)
		}
	}
	if n := v.Calls(); n != 20 {
		t.Errorf("20 Takes per message: %d Vault calls, want 20", n)
	}
}

func TestUnwrapCacheWithVault(t *testing.T) {
	ctx := context.Background()
	name := newKey(t)
	k, err := newVault(t, name, nil).GenerateDataKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v := newVault(t, name, nil)
	c := NewUnwrapCache(v, CacheOptions{})
	got := make([]*DataKey, 50)
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() {
			var err error
			if got[i], err = c.Get(ctx, k.KeyID, k.Wrapped); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := v.Calls(); n != 1 {
		t.Errorf("50 concurrent Gets: %d Vault calls, want 1", n)
	}
	for _, g := range got {
		if g != got[0] || !bytes.Equal(g.Plaintext, k.Plaintext) || g.Version != 1 {
			t.Fatal("Gets did not share one correct key")
		}
	}
}

// TestVaultErrors checks the error kinds against what the real server answers, and that
// no error string carries a token or key material.
func TestVaultErrors(t *testing.T) {
	ctx := context.Background()
	name := newKey(t)
	good := newVault(t, name, nil)
	k, err := good.GenerateDataKey(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// A key wrapped under version 1, then refused by min_decryption_version 3.
	aging := newKey(t)
	agingVault := newVault(t, aging, nil)
	old, err := agingVault.GenerateDataKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := dev.RotateKey(ctx, aging); err != nil {
			t.Fatal(err)
		}
	}
	if err := dev.SetMinDecryptionVersion(ctx, aging, 3); err != nil {
		t.Fatal(err)
	}

	badToken := "hvs.not-a-real-token-0123456789"
	badClient, _ := dev.Client()
	badClient.SetToken(badToken)
	bad := newVault(t, name, badClient)

	encryptOnly, err := dev.CreateToken(ctx, "datakey-only-"+name, fmt.Sprintf(`path "transit/datakey/plaintext/%s" { capabilities = ["update"] }`, name))
	if err != nil {
		t.Fatal(err)
	}
	eoClient, _ := dev.Client()
	eoClient.SetToken(encryptOnly)
	eo := newVault(t, name, eoClient)
	if _, err := eo.GenerateDataKey(ctx); err != nil {
		t.Fatalf("datakey-only token cannot generate: %v", err)
	}

	missing := newVault(t, "no-such-key", nil)
	rootClient, _ := dev.Client()
	noMount, err := NewVault(VaultOptions{Key: name, Mount: "no-such-mount", Client: rootClient})
	if err != nil {
		t.Fatal(err)
	}

	// Tampered: one character of the ciphertext body changed.
	tampered := []byte(k.Wrapped)
	i := len("vault:v1:") + 5
	tampered[i] = map[bool]byte{true: 'B', false: 'A'}[tampered[i] == 'A']

	stopped, err := devvault.Start(ctx, devvault.Options{Keys: []string{"gone"}})
	if err != nil {
		t.Fatal(err)
	}
	sc, _ := stopped.Client()
	down, err := NewVault(VaultOptions{Key: "gone", Client: sc})
	if err != nil {
		t.Fatal(err)
	}
	stoppedToken := stopped.Token
	// The same server sealed (Vault answers 503), then stopped.
	if err := sc.Sys().SealWithContext(ctx); err != nil {
		t.Fatal(err)
	}
	_, sealedErr := down.GenerateDataKey(ctx)
	if err := stopped.Stop(); err != nil {
		t.Fatal(err)
	}

	type call func() error
	gen := func(v *Vault) call { return func() error { _, err := v.GenerateDataKey(ctx); return err } }
	unwrap := func(v *Vault, id, w string) call {
		return func() error { _, err := v.UnwrapDataKey(ctx, id, w); return err }
	}
	for _, tc := range []struct {
		name      string
		do        call
		kind      error
		version   int
		noRequest *Vault // if set, the call must not reach Vault
	}{
		{"generate with missing key", gen(missing), ErrKeyNotFound, 0, nil},
		{"generate with missing mount", gen(noMount), ErrKeyNotFound, 0, nil},
		{"unwrap with missing key", unwrap(good, "no-such-key", k.Wrapped), ErrKeyNotFound, 1, nil},
		{"generate with bad token", gen(bad), ErrPermissionDenied, 0, nil},
		{"unwrap with bad token", unwrap(bad, name, k.Wrapped), ErrPermissionDenied, 1, nil},
		{"unwrap with datakey-only token", unwrap(eo, name, k.Wrapped), ErrPermissionDenied, 1, nil},
		{"unwrap below min_decryption_version", unwrap(agingVault, aging, old.Wrapped), ErrVersionTooOld, 1, nil},
		{"unwrap tampered", unwrap(good, name, string(tampered)), ErrInvalidWrappedKey, 1, nil},
		{"unwrap future version", unwrap(good, name, "vault:v9:"+k.Wrapped[len("vault:v1:"):]), ErrInvalidWrappedKey, 9, nil},
		{"unwrap bad base64", unwrap(good, name, "vault:v1:!!!not base64!!!"), ErrInvalidWrappedKey, 1, nil},
		{"unwrap without prefix", unwrap(good, name, "AAAA"+k.Wrapped), ErrInvalidWrappedKey, 0, good},
		{"unwrap with path in key ID", unwrap(good, "../../sys/seal", k.Wrapped), ErrInvalidWrappedKey, 1, good},
		{"generate on sealed server", func() error { return sealedErr }, ErrUnavailable, 0, nil},
		{"generate on stopped server", gen(down), ErrUnavailable, 0, nil},
		{"unwrap on stopped server", unwrap(down, "gone", k.Wrapped), ErrUnavailable, 1, nil},
		{"rotate with bad token", func() error { return bad.Rotate(ctx) }, ErrPermissionDenied, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before int64
			if tc.noRequest != nil {
				before = tc.noRequest.Calls()
			}
			start := time.Now()
			err := tc.do()
			took := time.Since(start)
			var ke *Error
			if !errors.As(err, &ke) || !errors.Is(err, tc.kind) || ke.Version != tc.version {
				t.Fatalf("error = %v (version %d), want kind %v version %d", err, versionOf(ke), tc.kind, tc.version)
			}
			if got, want := fault.ClassOf(err), fault.ClassOf(tc.kind); got != want {
				t.Errorf("class %v, want %v (the class of its kind)", got, want)
			}
			var ve *VaultError
			if errors.As(err, &ve) {
				t.Logf("Vault answered HTTP %d %q", ve.StatusCode, ve.Errors)
			}
			t.Logf("error: %v (%v)", err, took.Round(time.Millisecond))
			if tc.noRequest != nil && tc.noRequest.Calls() != before {
				t.Error("a malformed input reached Vault")
			}
			if took > 5*time.Second {
				t.Errorf("took %v", took)
			}
			msg := err.Error()
			for _, secret := range []string{
				dev.Token, badToken, encryptOnly, stoppedToken,
				k.Wrapped, k.Wrapped[len("vault:v1:"):], string(tampered), old.Wrapped,
				base64.StdEncoding.EncodeToString(k.Plaintext), string(k.Plaintext),
				base64.StdEncoding.EncodeToString(old.Plaintext), string(old.Plaintext),
			} {
				if strings.Contains(msg, secret) {
					t.Errorf("error string contains a secret: %q", msg)
				}
			}
		})
	}
}

func versionOf(e *Error) int {
	if e == nil {
		return -1
	}
	return e.Version
}

// TestVaultTimeout points the keyring at a server that accepts connections and never
// answers: the per-request timeout makes it ErrUnavailable, a caller's cancellation is
// reported as such.
func TestVaultTimeout(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	c, _ := dev.Client()
	if err := c.SetAddress("http://" + l.Addr().String()); err != nil {
		t.Fatal(err)
	}
	v, err := NewVault(VaultOptions{Key: "k", Client: c, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = v.GenerateDataKey(context.Background())
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Errorf("GenerateDataKey against a silent server = %v after %v", err, time.Since(start))
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err = v.UnwrapDataKey(ctx, "k", "vault:v1:AAAA")
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrUnavailable) {
		t.Errorf("UnwrapDataKey cancelled by the caller = %v", err)
	}
	t.Logf("timeout: %v", err)
}
