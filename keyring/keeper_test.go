package keyring

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gocloud.dev/secrets/hashivault"
	"gocloud.dev/secrets/localsecrets"

	// The application links the drivers it opens; here, the test does.
	_ "gocloud.dev/secrets/awskms"
	_ "gocloud.dev/secrets/azurekeyvault"
	_ "gocloud.dev/secrets/gcpkms"

	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/devkms"
	"github.com/pubcrypt/pubcrypt/internal/wire"
)

// startKMS starts local-kms for one test and sets the AWS credentials the awskms://
// opener reads; the region and endpoint travel in the URL (devkms.Server.KeeperURL).
func startKMS(t *testing.T) *devkms.Server {
	t.Helper()
	s, err := devkms.Start(context.Background(), devkms.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	for _, kv := range s.Env() {
		name, value, _ := strings.Cut(kv, "=")
		if name != "AWS_ENDPOINT_URL_KMS" && name != "AWS_REGION" {
			t.Setenv(name, value)
		}
	}
	return s
}

func openKeeper(t *testing.T, u string, opts KeeperOptions) *Keeper {
	t.Helper()
	k, err := OpenKeeper(context.Background(), u, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

func wantKind(t *testing.T, what string, err, kind error, class fault.Class) {
	t.Helper()
	var ke *Error
	if !errors.As(err, &ke) || !errors.Is(err, kind) || fault.ClassOf(err) != class {
		t.Fatalf("%s: %v (%T), want *Error of kind %q, class %v", what, err, err, kind, class)
	}
}

// roundTrip runs n messages through DataKeys on one keyring and UnwrapCache on another,
// from 8 goroutines, and returns the calls each keyring made.
func roundTrip(t *testing.T, send, recv *Keeper, n int) (sendCalls, recvCalls int64) {
	t.Helper()
	ctx := context.Background()
	dk, err := NewDataKeys(send, ReusePolicy{})
	if err != nil {
		t.Fatal(err)
	}
	cache := NewUnwrapCache(recv, CacheOptions{})
	s0, r0 := send.Calls(), recv.Calls()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				msg := []byte("message " + string(rune('a'+i%26)))
				k, seq, err := dk.Take(ctx, len(msg))
				if err != nil {
					errs <- err
					return
				}
				aead, err := k.AEAD()
				if err != nil {
					errs <- err
					return
				}
				nonce := make([]byte, aead.NonceSize())
				binary.BigEndian.PutUint64(nonce[4:], seq)
				sealed := aead.Seal(nil, nonce, msg, nil)

				rk, err := cache.Get(ctx, k.KeyID, k.Wrapped)
				if err != nil {
					errs <- err
					return
				}
				raead, err := rk.AEAD()
				if err != nil {
					errs <- err
					return
				}
				if got, err := raead.Open(nil, nonce, sealed, nil); err != nil || string(got) != string(msg) {
					errs <- errors.New("receive side did not open the message")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return send.Calls() - s0, recv.Calls() - r0
}

func TestKeeperAWSKMSRoundTrip(t *testing.T) {
	ctx := context.Background()
	s := startKMS(t)
	key, err := s.CreateKey(ctx, "pubcrypt keeper test")
	if err != nil {
		t.Fatal(err)
	}
	u := s.KeeperURL(key.ARN)
	send, recv := openKeeper(t, u, KeeperOptions{}), openKeeper(t, u, KeeperOptions{})
	if send.KeyID() != recv.KeyID() || !strings.HasPrefix(send.KeyID(), "awskms-") {
		t.Fatalf("key IDs %q and %q, want one awskms-... for both", send.KeyID(), recv.KeyID())
	}
	sc, rc := roundTrip(t, send, recv, 10000)
	t.Logf("10000 messages: %d KMS calls on the send side, %d on the receive side", sc, rc)
	if sc < 1 || sc > 2 || rc < 1 || rc > 2 {
		t.Errorf("KMS calls: send %d, receive %d; want 1 or 2 each", sc, rc)
	}

	dk, err := send.GenerateDataKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(dk.Wrapped, "kp1:") || len(dk.Wrapped) > 1024 {
		t.Fatalf("wrapped key %q: want kp1:..., at most 1024 bytes", dk.Wrapped)
	}
	t.Logf("wrapped data key: %d bytes", len(dk.Wrapped))

	// A wrapped key changed inside the ciphertext: KMS refuses it, a fault of the message.
	ct, _ := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(dk.Wrapped, "kp1:"))
	ct[len(ct)-5] ^= 1
	tampered := "kp1:" + base64.RawURLEncoding.EncodeToString(ct)
	_, err = recv.UnwrapDataKey(ctx, dk.KeyID, tampered)
	wantKind(t, "tampered wrapped key", err, ErrInvalidWrappedKey, fault.Message)
	if strings.Contains(err.Error(), tampered) {
		t.Errorf("error quotes the wrapped key: %v", err)
	}

	// A key that does not exist, one that is disabled.
	missing := openKeeper(t, s.KeeperURL("6f6b1a8e-0000-4000-8000-000000000000"), KeeperOptions{})
	_, err = missing.GenerateDataKey(ctx)
	wantKind(t, "generate under a missing key", err, ErrKeyNotFound, fault.Environment)
	if err := s.DisableKey(ctx, key.ID); err != nil {
		t.Fatal(err)
	}
	_, err = send.GenerateDataKey(ctx)
	wantKind(t, "generate under a disabled key", err, ErrKeyNotFound, fault.Environment)
	// KMS answers a ciphertext under a key it will not use with AccessDeniedException,
	// whether the key is disabled, deleted or not the caller's.
	_, err = recv.UnwrapDataKey(ctx, dk.KeyID, dk.Wrapped)
	wantKind(t, "unwrap under a disabled key", err, ErrPermissionDenied, fault.Environment)

	// The emulator gone: unavailable, within the SDK's few retries.
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	_, err = recv.UnwrapDataKey(ctx, dk.KeyID, dk.Wrapped)
	wantKind(t, "unwrap with KMS stopped", err, ErrUnavailable, fault.Environment)
	_, err = send.GenerateDataKey(ctx)
	wantKind(t, "generate with KMS stopped", err, ErrUnavailable, fault.Environment)
	t.Logf("two calls to a stopped KMS failed in %v: %v", time.Since(begin), err)
	if d := time.Since(begin); d > 15*time.Second {
		t.Errorf("calls to a stopped KMS took %v", d)
	}
}

// The awskms:// opener takes the endpoint and region from the environment too
// (AWS_ENDPOINT_URL_KMS, AWS_REGION), so a URL can be just the key.
func TestKeeperAWSKMSFromEnvironment(t *testing.T) {
	ctx := context.Background()
	s := startKMS(t)
	for _, kv := range s.Env() {
		name, value, _ := strings.Cut(kv, "=")
		t.Setenv(name, value)
	}
	key, err := s.CreateKey(ctx, "from the environment")
	if err != nil {
		t.Fatal(err)
	}
	k := openKeeper(t, "awskms://"+key.ID, KeeperOptions{KeyID: "orders-kek"})
	dk, err := k.GenerateDataKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if dk.KeyID != "orders-kek" {
		t.Errorf("KeyID = %q", dk.KeyID)
	}
	if _, err := k.UnwrapDataKey(ctx, "orders-kek", dk.Wrapped); err != nil {
		t.Fatal(err)
	}
	// A message naming another key: not this keyring's, and no call is made.
	before := k.Calls()
	_, err = k.UnwrapDataKey(ctx, "payments-kek", dk.Wrapped)
	wantKind(t, "unwrap under another key ID", err, ErrKeyNotFound, fault.Environment)
	if k.Calls() != before {
		t.Error("a key ID of another keyring reached KMS")
	}
}

func TestKeeperLocalRoundTrip(t *testing.T) {
	ctx := context.Background()
	sk, err := localsecrets.NewRandomKey()
	if err != nil {
		t.Fatal(err)
	}
	secret := base64.URLEncoding.EncodeToString(sk[:])
	u := "base64key://" + secret
	send, recv := openKeeper(t, u, KeeperOptions{}), openKeeper(t, u, KeeperOptions{})
	if send.KeyID() != recv.KeyID() || !strings.HasPrefix(send.KeyID(), "base64key-") || len(send.KeyID()) != len("base64key-")+16 {
		t.Fatalf("key IDs %q and %q", send.KeyID(), recv.KeyID())
	}
	if other := openKeeper(t, "base64key://"+base64.URLEncoding.EncodeToString(make([]byte, 32)), KeeperOptions{}); other.KeyID() == send.KeyID() {
		t.Error("two keys have one default key ID")
	}
	sc, rc := roundTrip(t, send, recv, 10000)
	if sc != 1 || rc != 1 {
		t.Errorf("keeper calls: send %d, receive %d; want 1 each", sc, rc)
	}

	dk, err := send.GenerateDataKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ct, _ := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(dk.Wrapped, "kp1:"))
	ct[len(ct)-1] ^= 1
	_, err = recv.UnwrapDataKey(ctx, dk.KeyID, "kp1:"+base64.RawURLEncoding.EncodeToString(ct))
	wantKind(t, "tampered wrapped key", err, ErrInvalidWrappedKey, fault.Message)

	// A keeper of another key cannot unwrap it: the same for a keeper in process.
	wrong := openKeeper(t, "base64key://"+base64.URLEncoding.EncodeToString(make([]byte, 32)), KeeperOptions{KeyID: dk.KeyID})
	_, err = wrong.UnwrapDataKey(ctx, dk.KeyID, dk.Wrapped)
	wantKind(t, "unwrap under another local key", err, ErrInvalidWrappedKey, fault.Message)

	// Without InProcess (NewKeeper of a keeper the keyring cannot see into), an
	// unclassified Decrypt error is the environment's, never the message's.
	opaque, err := NewKeeper(localsecrets.NewKeeper([32]byte{}), KeeperOptions{KeyID: dk.KeyID})
	if err != nil {
		t.Fatal(err)
	}
	_, err = opaque.UnwrapDataKey(ctx, dk.KeyID, dk.Wrapped)
	if fault.ClassOf(err) != fault.Environment {
		t.Errorf("unclassified keeper error %v is of class %v", err, fault.ClassOf(err))
	}
}

func TestKeeperWrappedParsing(t *testing.T) {
	k := openKeeper(t, "base64key://"+base64.URLEncoding.EncodeToString(make([]byte, 32)), KeeperOptions{KeyID: "k"})
	for _, w := range []string{
		"", "kp1:", "kp2:AAAA", "vault:v1:AAAA", "KP1:AAAA",
		"kp1:AAAA=", "kp1:AA+/", "kp1:AA AA", "kp1:AAB", // padding, std alphabet, space, non-canonical tail bits
		"kp1:" + strings.Repeat("A", 1021),
	} {
		_, err := k.UnwrapDataKey(context.Background(), "k", w)
		wantKind(t, "wrapped "+w[:min(len(w), 16)], err, ErrInvalidWrappedKey, fault.Message)
	}
	if k.Calls() != 0 {
		t.Errorf("malformed wrapped keys made %d keeper calls", k.Calls())
	}
}

func TestKeeperOptions(t *testing.T) {
	ctx := context.Background()
	key := base64.URLEncoding.EncodeToString(make([]byte, 32))
	for _, tc := range []struct {
		name, url string
		opts      KeeperOptions
		option    string
	}{
		{"bad key ID", "base64key://" + key, KeeperOptions{KeyID: "a/b"}, "KeeperOptions.KeyID"},
		{"long key ID", "base64key://" + key, KeeperOptions{KeyID: strings.Repeat("a", 129)}, "KeeperOptions.KeyID"},
		{"negative timeout", "base64key://" + key, KeeperOptions{Timeout: -time.Second}, "KeeperOptions.Timeout"},
		{"no scheme", key, KeeperOptions{}, "keeper URL"},
		{"unknown scheme", "nokms://" + key, KeeperOptions{}, "keeper URL"},
		{"bad key", "base64key://" + key[:20], KeeperOptions{}, "keeper URL"},
		{"bad parameter", "base64key://" + key + "?x=1", KeeperOptions{}, "keeper URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := OpenKeeper(ctx, tc.url, tc.opts)
			var oe *OptionError
			if !errors.As(err, &oe) || oe.Option != tc.option {
				t.Fatalf("OpenKeeper = %v, want an OptionError for %s", err, tc.option)
			}
			if strings.Contains(err.Error(), key) || strings.Contains(err.Error(), key[:20]) {
				t.Errorf("error shows the key: %v", err)
			}
		})
	}
	if _, err := NewKeeper(localsecrets.NewKeeper([32]byte{}), KeeperOptions{}); err == nil {
		t.Error("NewKeeper without a KeyID succeeded")
	}
	u1, _ := url.Parse("awskms:///alias/orders?region=eu-west-2")
	u2, _ := url.Parse("awskms:///alias/orders?region=eu-west-1&endpoint=http://127.0.0.1:1")
	if a, b := DefaultKeeperKeyID(u1), DefaultKeeperKeyID(u2); a != b || !wire.ValidKeyID(a) {
		t.Errorf("default key IDs %q and %q: want one valid ID whatever the query", a, b)
	}
}

// hashivault:// (the separate module gocloud.dev/secrets/hashivault v0.45.0, beside core
// v0.49.0) against the real Vault dev server of this package's tests.
func TestKeeperHashiVault(t *testing.T) {
	ctx := context.Background()
	name := newKey(t)
	// The driver's default opener reads VAULT_ADDR and VAULT_TOKEN once per process: this
	// is the only test that opens hashivault:// by URL.
	t.Setenv("VAULT_ADDR", dev.Addr)
	t.Setenv("VAULT_TOKEN", dev.Token)
	t.Setenv("VAULT_SERVER_URL", "")
	t.Setenv("VAULT_SERVER_TOKEN", "")
	send, recv := openKeeper(t, "hashivault://"+name, KeeperOptions{}), openKeeper(t, "hashivault://"+name, KeeperOptions{})
	sc, rc := roundTrip(t, send, recv, 10000)
	t.Logf("10000 messages: %d Vault calls on the send side, %d on the receive side", sc, rc)
	if sc != 1 || rc != 1 {
		t.Errorf("Vault calls: send %d, receive %d; want 1 each", sc, rc)
	}
	dk, err := send.GenerateDataKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ct, _ := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(dk.Wrapped, "kp1:"))
	if !strings.HasPrefix(string(ct), "vault:v1:") {
		t.Fatalf("hashivault ciphertext %q is not vault:v1:...", ct)
	}
	tampered := []byte(string(ct))
	tampered[len(tampered)-3] ^= 1
	_, err = recv.UnwrapDataKey(ctx, dk.KeyID, "kp1:"+base64.RawURLEncoding.EncodeToString(tampered))
	wantKind(t, "tampered hashivault ciphertext", err, ErrInvalidWrappedKey, fault.Message)

	// A token that may decrypt only: Vault refuses the encrypt.
	tok, err := dev.CreateToken(ctx, "decrypt-"+name, `path "transit/decrypt/`+name+`" { capabilities = ["update"] }`)
	if err != nil {
		t.Fatal(err)
	}
	c, err := dev.Client()
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(tok)
	limited, err := NewKeeper(hashivault.OpenKeeper(c, name, nil), KeeperOptions{KeyID: dk.KeyID})
	if err != nil {
		t.Fatal(err)
	}
	_, err = limited.GenerateDataKey(ctx)
	wantKind(t, "generate with a decrypt-only token", err, ErrPermissionDenied, fault.Environment)
	if strings.Contains(err.Error(), tok) {
		t.Error("error shows the token")
	}
	if _, err := limited.UnwrapDataKey(ctx, dk.KeyID, dk.Wrapped); err != nil {
		t.Errorf("unwrap with the decrypt-only token: %v", err)
	}
}

// gcpkms:// and azurekeyvault:// have no emulator here: opening or calling them with
// credentials or an endpoint that cannot work gives an error of the environment, within a
// bound, never a hang and never a fault of the message.
func TestKeeperGCPAndAzureMisconfigured(t *testing.T) {
	dir := t.TempDir()
	bogus := filepath.Join(dir, "credentials.json")
	if err := os.WriteFile(bogus, []byte(`{"type": "service_account", "project_id": "p"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", bogus)
	t.Setenv("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000000")
	t.Setenv("AZURE_CLIENT_ID", "00000000-0000-0000-0000-000000000000")
	t.Setenv("AZURE_CLIENT_SECRET", "not-a-secret")
	t.Setenv("AZURE_AUTHORITY_HOST", "https://127.0.0.1:1/")
	t.Setenv("AZURE_KEYVAULT_AUTH_VIA_CLI", "")

	for _, u := range []string{
		"gcpkms://projects/p/locations/global/keyRings/r/cryptoKeys/k",
		"azurekeyvault://pubcrypt-test.vault.azure.net/keys/k",
	} {
		t.Run(strings.SplitN(u, ":", 2)[0], func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			begin := time.Now()
			k, err := OpenKeeper(ctx, u, KeeperOptions{Timeout: 5 * time.Second})
			if err == nil {
				defer k.Close()
				_, err = k.GenerateDataKey(ctx)
			}
			t.Logf("%s: %v after %v", u, err, time.Since(begin))
			if err == nil || fault.ClassOf(err) != fault.Environment {
				t.Fatalf("err = %v, want an error of the environment", err)
			}
			if d := time.Since(begin); d > 15*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}
