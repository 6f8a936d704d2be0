package keyring

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/devvault"
)

// newKeyWith creates a transit key with parameters of its own for one test.
func newKeyWith(t *testing.T, opts map[string]any) string {
	t.Helper()
	name := fmt.Sprintf("%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), keySeq.Add(1))
	if err := dev.CreateKeyWith(context.Background(), name, opts); err != nil {
		t.Fatal(err)
	}
	return name
}

var convergent = map[string]any{"type": "aes256-gcm96", "derived": true, "convergent_encryption": true}

// fieldItems returns n items as field encryption builds them: associated data binds the
// message ID and the field path.
func fieldItems(n int) []TransitItem {
	items := make([]TransitItem, n)
	for i := range items {
		items[i] = TransitItem{
			Plaintext:      fmt.Appendf(nil, "value %d: 4111 1111 1111 %04d", i, i),
			AssociatedData: fmt.Appendf(nil, "msg-%d\x00customer.card[%d]", i/10, i%10),
		}
	}
	return items
}

// forDecrypt copies items for DecryptBatch, without their plaintext.
func forDecrypt(items []TransitItem) []TransitItem {
	out := make([]TransitItem, len(items))
	for i, it := range items {
		out[i] = TransitItem{Ciphertext: it.Ciphertext, AssociatedData: it.AssociatedData, Context: it.Context}
	}
	return out
}

func encrypt(t *testing.T, v *Vault, key string, items []TransitItem) {
	t.Helper()
	if err := v.EncryptBatch(context.Background(), key, items); err != nil {
		t.Fatal(err)
	}
	for i, it := range items {
		if it.Err != nil {
			t.Fatalf("item %d: %v", i, it.Err)
		}
	}
}

func TestTransitBatchOneCall(t *testing.T) {
	ctx := context.Background()
	key := newKey(t)
	v := newVault(t, key, nil)

	if err := v.EncryptBatch(ctx, key, nil); err != nil || v.Calls() != 0 {
		t.Fatalf("empty EncryptBatch: %v, %d calls", err, v.Calls())
	}
	if err := v.DecryptBatch(ctx, key, []TransitItem{}); err != nil || v.Calls() != 0 {
		t.Fatalf("empty DecryptBatch: %v, %d calls", err, v.Calls())
	}

	items := fieldItems(100)
	items[7].Plaintext = nil // an empty field is a value too
	items[8].AssociatedData = nil
	before := v.Calls()
	encrypt(t, v, key, items)
	if n := v.Calls() - before; n != 1 {
		t.Errorf("EncryptBatch of 100 items: %d Vault calls, want 1", n)
	}
	seen := map[string]bool{}
	for i, it := range items {
		if !strings.HasPrefix(it.Ciphertext, "vault:v1:") || seen[it.Ciphertext] {
			t.Fatalf("item %d: ciphertext %.12q... (duplicate %v)", i, it.Ciphertext, seen[it.Ciphertext])
		}
		seen[it.Ciphertext] = true
	}

	dec := forDecrypt(items)
	before = v.Calls()
	if err := v.DecryptBatch(ctx, key, dec); err != nil {
		t.Fatal(err)
	}
	if n := v.Calls() - before; n != 1 {
		t.Errorf("DecryptBatch of 100 items: %d Vault calls, want 1", n)
	}
	for i := range dec {
		if dec[i].Err != nil || !bytes.Equal(dec[i].Plaintext, items[i].Plaintext) {
			t.Fatalf("item %d: %v, plaintext equal %v", i, dec[i].Err, bytes.Equal(dec[i].Plaintext, items[i].Plaintext))
		}
	}
	if len(dec[7].Plaintext) != 0 {
		t.Errorf("empty plaintext came back as %d bytes", len(dec[7].Plaintext))
	}

	// Encrypting the same value twice gives two ciphertexts: transit mode is randomized.
	again := []TransitItem{{Plaintext: items[0].Plaintext, AssociatedData: items[0].AssociatedData}}
	encrypt(t, v, key, again)
	if again[0].Ciphertext == items[0].Ciphertext {
		t.Error("transit mode gave the same ciphertext twice")
	}
}

// TestTransitAssociatedDataEncoding pins down what Vault does with associated_data: it
// base64-decodes it, so EncryptBatch must send it encoded.
func TestTransitAssociatedDataEncoding(t *testing.T) {
	ctx := context.Background()
	key := newKey(t)
	v := newVault(t, key, nil)
	ad := []byte("msg-42\x00order.customer.email")
	items := []TransitItem{{Plaintext: []byte("a@example.com"), AssociatedData: ad}}
	encrypt(t, v, key, items)

	c, err := dev.Client()
	if err != nil {
		t.Fatal(err)
	}
	c.SetMaxRetries(0) // Vault answers undecodable associated data with HTTP 500
	decrypt := func(ad string) error {
		_, err := c.Logical().WriteWithContext(ctx, "transit/decrypt/"+key, map[string]any{"ciphertext": items[0].Ciphertext, "associated_data": ad})
		return err
	}
	if err := decrypt(base64.StdEncoding.EncodeToString(ad)); err != nil {
		t.Errorf("decrypt with base64 associated data: %v", err)
	}
	err = decrypt(string(ad))
	if err == nil {
		t.Fatal("decrypt with raw associated data succeeded")
	}
	t.Logf("raw associated_data: %v", err)
	// Raw text that happens to be valid base64 is decoded to other bytes.
	ok := []TransitItem{{Plaintext: []byte("x"), AssociatedData: []byte("abcd")}}
	encrypt(t, v, key, ok)
	_, err = c.Logical().WriteWithContext(ctx, "transit/decrypt/"+key, map[string]any{"ciphertext": ok[0].Ciphertext, "associated_data": "abcd"})
	if err == nil {
		t.Error(`raw "abcd" as associated_data decrypted: Vault did not decode it`)
	}
}

func TestTransitPerItemErrors(t *testing.T) {
	ctx := context.Background()
	key := newKey(t)
	v := newVault(t, key, nil)
	items := fieldItems(6)
	encrypt(t, v, key, items)

	dec := forDecrypt(items)
	dec[1].Ciphertext = tamper(dec[1].Ciphertext)
	dec[2].AssociatedData = []byte("msg-0\x00customer.card[9]") // moved to another field
	dec[3].AssociatedData = nil
	dec[4].Ciphertext = "not-a-vault-ciphertext"
	before := v.Calls()
	if err := v.DecryptBatch(ctx, key, dec); err != nil {
		t.Fatal(err)
	}
	if n := v.Calls() - before; n != 1 {
		t.Errorf("%d calls, want 1", n)
	}
	for i, it := range dec {
		switch i {
		case 0, 5:
			if it.Err != nil || !bytes.Equal(it.Plaintext, items[i].Plaintext) {
				t.Errorf("item %d: %v", i, it.Err)
			}
		default:
			var ke *Error
			if !errors.Is(it.Err, ErrDecrypt) || !errors.As(it.Err, &ke) || it.Plaintext != nil {
				t.Errorf("item %d: error %v, plaintext %d bytes; want ErrDecrypt", i, it.Err, len(it.Plaintext))
				continue
			}
			t.Logf("item %d: %v", i, it.Err)
			noSecrets(t, it.Err, items)
		}
	}

	// A batch where every item fails is answered with HTTP 400 and batch_results.
	all := forDecrypt(items[:3])
	for i := range all {
		all[i].Ciphertext = tamper(all[i].Ciphertext)
	}
	if err := v.DecryptBatch(ctx, key, all); err != nil {
		t.Fatalf("all items failing: the call failed as a whole: %v", err)
	}
	for i, it := range all {
		var ve *VaultError
		if !errors.Is(it.Err, ErrDecrypt) || !errors.As(it.Err, &ve) || ve.StatusCode != 400 {
			t.Errorf("item %d: %v, want ErrDecrypt from an HTTP 400", i, it.Err)
		}
	}

	// Reusing items: a successful call clears an earlier Err.
	all = forDecrypt(items[:3])
	all[0].Err = errors.New("stale")
	if err := v.DecryptBatch(ctx, key, all); err != nil || all[0].Err != nil {
		t.Errorf("reused item: %v / %v", err, all[0].Err)
	}
}

// tamper changes one character of a ciphertext's base64 body.
func tamper(c string) string {
	b := []byte(c)
	i := strings.LastIndexByte(c, ':') + 5
	b[i] = map[bool]byte{true: 'B', false: 'A'}[b[i] == 'A']
	return string(b)
}

func TestTransitRotation(t *testing.T) {
	ctx := context.Background()
	key := newKey(t)
	v := newVault(t, key, nil)
	v1 := fieldItems(2)
	encrypt(t, v, key, v1)
	if err := v.RotateKey(ctx, key); err != nil {
		t.Fatal(err)
	}
	v2 := fieldItems(2)
	encrypt(t, v, key, v2)
	for _, it := range v2 {
		if !strings.HasPrefix(it.Ciphertext, "vault:v2:") {
			t.Fatalf("after RotateKey: %.9q", it.Ciphertext)
		}
	}
	info, err := v.KeyInfo(ctx, key)
	if err != nil || info.LatestVersion != 2 || info.MinDecryptionVersion != 1 || info.Type != "aes256-gcm96" || info.Derived || info.Convergent {
		t.Fatalf("KeyInfo = %+v, %v", info, err)
	}

	both := forDecrypt(append(v1[:1:1], v2[0]))
	if err := v.DecryptBatch(ctx, key, both); err != nil || both[0].Err != nil || both[1].Err != nil {
		t.Fatalf("v1 and v2 after rotation: %v / %v / %v", err, both[0].Err, both[1].Err)
	}

	if err := dev.SetMinDecryptionVersion(ctx, key, 2); err != nil {
		t.Fatal(err)
	}
	both = forDecrypt(append(v1[:1:1], v2[0]))
	if err := v.DecryptBatch(ctx, key, both); err != nil {
		t.Fatal(err)
	}
	var ke *Error
	if !errors.Is(both[0].Err, ErrVersionTooOld) || !errors.As(both[0].Err, &ke) || ke.Version != 1 || ke.Op != "decrypt" || ke.KeyID != key {
		t.Fatalf("v1 below min_decryption_version: %v", both[0].Err)
	}
	t.Logf("v1 below min_decryption_version: %v", both[0].Err)
	if both[1].Err != nil || !bytes.Equal(both[1].Plaintext, v2[0].Plaintext) {
		t.Errorf("v2: %v", both[1].Err)
	}
	noSecrets(t, both[0].Err, v1)
}

func TestFPEKey(t *testing.T) {
	ctx := context.Background()
	key := newKey(t)
	v := newVault(t, key, nil)

	latest, ver, err := v.FPEKey(ctx, key, 0)
	if err != nil || ver != 1 || len(latest) != 32 {
		t.Fatalf("FPEKey(latest) = %d bytes, v%d, %v", len(latest), ver, err)
	}
	k1, ver, err := v.FPEKey(ctx, key, 1)
	if err != nil || ver != 1 || !bytes.Equal(k1, latest) {
		t.Fatalf("FPEKey(1) = v%d, equal %v, %v", ver, bytes.Equal(k1, latest), err)
	}
	// The key configuration is cached: another explicit version costs the HMAC only.
	before := v.Calls()
	if _, _, err := v.FPEKey(ctx, key, 1); err != nil || v.Calls()-before != 1 {
		t.Errorf("FPEKey(1) again: %v, %d calls, want 1", err, v.Calls()-before)
	}
	// Another keyring (another producer) derives the same key.
	if other, _, err := newVault(t, key, nil).FPEKey(ctx, key, 0); err != nil || !bytes.Equal(other, k1) {
		t.Errorf("second keyring: equal %v, %v", bytes.Equal(other, k1), err)
	}

	if err := v.RotateKey(ctx, key); err != nil {
		t.Fatal(err)
	}
	k2, ver, err := v.FPEKey(ctx, key, 0)
	if err != nil || ver != 2 || bytes.Equal(k2, k1) {
		t.Fatalf("after rotation: v%d, same key %v, %v", ver, bytes.Equal(k2, k1), err)
	}
	if again, ver, err := v.FPEKey(ctx, key, 2); err != nil || ver != 2 || !bytes.Equal(again, k2) {
		t.Errorf("FPEKey(2): v%d, %v", ver, err)
	}
	if old, ver, err := v.FPEKey(ctx, key, 1); err != nil || ver != 1 || !bytes.Equal(old, k1) {
		t.Errorf("FPEKey(1) after rotation: v%d, equal %v, %v", ver, bytes.Equal(old, k1), err)
	}

	if err := dev.SetMinDecryptionVersion(ctx, key, 2); err != nil {
		t.Fatal(err)
	}
	// v read the key's configuration less than 30 s ago and still trusts it, but Vault
	// itself refuses: raising min_decryption_version archived version 1, and hmac answers
	// "no such key version". A refreshed or new keyring refuses before asking for the HMAC.
	refreshed := newVault(t, key, nil)
	if _, err := refreshed.KeyInfo(ctx, key); err != nil {
		t.Fatal(err)
	}
	fresh := newVault(t, key, nil)
	for _, tc := range []struct {
		name  string
		kr    *Vault
		calls int64
	}{
		{"cached configuration", v, 1},
		{"refreshed configuration", refreshed, 0},
		{"new keyring", fresh, 1}, // reads keys/KEY, no HMAC
	} {
		before := tc.kr.Calls()
		_, _, err := tc.kr.FPEKey(ctx, key, 1)
		var ke *Error
		if !errors.Is(err, ErrVersionTooOld) || !errors.As(err, &ke) || ke.Version != 1 {
			t.Errorf("%s, v1 below min_decryption_version: %v", tc.name, err)
			continue
		}
		t.Logf("%s: %v", tc.name, err)
		if strings.Contains(err.Error(), base64.StdEncoding.EncodeToString(k1)) {
			t.Error("error contains the key")
		}
		if n := tc.kr.Calls() - before; n != tc.calls {
			t.Errorf("%s: %d calls, want %d", tc.name, n, tc.calls)
		}
	}
	if k, ver, err := fresh.FPEKey(ctx, key, 2); err != nil || ver != 2 || !bytes.Equal(k, k2) {
		t.Errorf("v2 after min_decryption_version=2: v%d, %v", ver, err)
	}

	for _, tc := range []struct {
		name    string
		key     string
		version int
		kind    error
	}{
		{"future version", key, 3, ErrDecrypt},
		{"negative version", key, -1, ErrDecrypt},
		{"missing key", "no-such-key", 0, ErrKeyNotFound},
		{"missing key, explicit version", "no-such-key", 1, ErrKeyNotFound},
		{"path in key name", "../../sys/seal", 1, ErrInvalidInput},
	} {
		_, _, err := fresh.FPEKey(ctx, tc.key, tc.version)
		if !errors.Is(err, tc.kind) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.kind)
		}
		t.Logf("%s: %v", tc.name, err)
	}
}

func TestDeterministic(t *testing.T) {
	ctx := context.Background()
	key := newKeyWith(t, convergent)
	p1, p2 := newVault(t, key, nil), newVault(t, key, nil) // two producers

	info, err := p1.KeyInfo(ctx, key)
	if err != nil || !info.Derived || !info.Convergent {
		t.Fatalf("KeyInfo = %+v, %v", info, err)
	}

	email := []byte("alice@example.com")
	a := []TransitItem{
		{Plaintext: email, Context: []byte("customer.email")},
		{Plaintext: email, Context: []byte("billing.email")},
		{Plaintext: []byte("bob@example.com"), Context: []byte("customer.email")},
	}
	b := []TransitItem{{Plaintext: email, Context: []byte("customer.email")}}
	encrypt(t, p1, key, a)
	encrypt(t, p2, key, b)
	if a[0].Ciphertext != b[0].Ciphertext {
		t.Errorf("same value and context, two keyrings: %.20q... != %.20q...", a[0].Ciphertext, b[0].Ciphertext)
	}
	if a[0].Ciphertext == a[1].Ciphertext {
		t.Error("same value, different context: same ciphertext")
	}
	if a[0].Ciphertext == a[2].Ciphertext {
		t.Error("different values, same context: same ciphertext")
	}

	dec := forDecrypt(a)
	dec[1].Context = []byte("customer.email") // the billing ciphertext read as another field
	if err := p2.DecryptBatch(ctx, key, dec); err != nil {
		t.Fatal(err)
	}
	if dec[0].Err != nil || !bytes.Equal(dec[0].Plaintext, email) || dec[2].Err != nil {
		t.Errorf("right context: %v / %v", dec[0].Err, dec[2].Err)
	}
	if !errors.Is(dec[1].Err, ErrDecrypt) {
		t.Errorf("wrong context: %v, want ErrDecrypt", dec[1].Err)
	}
	t.Logf("wrong context: %v", dec[1].Err)

	// Context in some items only is refused before any request.
	before := p1.Calls()
	mixed := []TransitItem{{Plaintext: email, Context: []byte("x")}, {Plaintext: email}}
	if err := p1.EncryptBatch(ctx, key, mixed); !errors.Is(err, ErrInvalidInput) || p1.Calls() != before {
		t.Errorf("mixed context: %v, %d calls", err, p1.Calls()-before)
	}
	// No context for a derived key: Vault refuses each item.
	none := []TransitItem{{Plaintext: email}}
	if err := p1.EncryptBatch(ctx, key, none); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(none[0].Err, ErrInvalidInput) || none[0].Ciphertext != "" {
		t.Errorf("no context for a derived key: %v", none[0].Err)
	}
	t.Logf("no context for a derived key: %v", none[0].Err)

	// A key that is not derived ignores the context without a word: randomized
	// ciphertexts, and any context decrypts. Deterministic mode must check KeyInfo.
	plain := newKey(t)
	c := []TransitItem{{Plaintext: email, Context: []byte("customer.email")}, {Plaintext: email, Context: []byte("customer.email")}}
	encrypt(t, p1, plain, c)
	dec = forDecrypt(c[:1])
	dec[0].Context = []byte("billing.email")
	if err := p1.DecryptBatch(ctx, plain, dec); err != nil {
		t.Fatal(err)
	}
	if c[0].Ciphertext == c[1].Ciphertext || dec[0].Err != nil {
		t.Errorf("Vault no longer ignores the context of a key that is not derived (equal %v, %v): revisit this test", c[0].Ciphertext == c[1].Ciphertext, dec[0].Err)
	}
	if info, err := p1.KeyInfo(ctx, plain); err != nil || info.Derived || info.Convergent {
		t.Errorf("KeyInfo of a plain key = %+v, %v", info, err)
	}
}

func TestTransitPolicy(t *testing.T) {
	ctx := context.Background()
	key := newKey(t)
	policy := fmt.Sprintf(`
path "transit/encrypt/%[1]s" { capabilities = ["update"] }
path "transit/decrypt/%[1]s" { capabilities = ["update"] }
path "transit/hmac/%[1]s/sha2-256" { capabilities = ["update"] }
path "transit/keys/%[1]s" { capabilities = ["read"] }
path "transit/encrypt/typo-%[1]s" { capabilities = ["update"] }
`, key)
	token, err := dev.CreateToken(ctx, "fields-"+key, policy)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := dev.Client()
	c.SetToken(token)
	v := newVault(t, key, c)

	items := fieldItems(3)
	encrypt(t, v, key, items)
	dec := forDecrypt(items)
	if err := v.DecryptBatch(ctx, key, dec); err != nil || dec[0].Err != nil {
		t.Fatalf("decrypt with the documented policy: %v / %v", err, dec[0].Err)
	}
	if _, _, err := v.FPEKey(ctx, key, 1); err != nil {
		t.Errorf("FPEKey with the documented policy: %v", err)
	}
	if err := v.RotateKey(ctx, key); !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("RotateKey without the capability: %v", err)
	}

	// "update" without "create" on encrypt: a key that does not exist is not upserted.
	typo := "typo-" + key
	err = v.EncryptBatch(ctx, typo, fieldItems(1))
	if !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("encrypt to a missing key with update only: %v", err)
	}
	t.Logf("encrypt to a missing key with update only: %v", err)
	root := newVault(t, key, nil)
	if _, err := root.KeyInfo(ctx, typo); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("the missing key was created: %v", err)
	}
	// With "create" (here: the root token) Vault upserts it: the reason for the advice.
	if err := root.EncryptBatch(ctx, typo, fieldItems(1)); err != nil {
		t.Fatal(err)
	}
	if info, err := root.KeyInfo(ctx, typo); err != nil {
		t.Errorf("root token: no upsert? %v", err)
	} else {
		t.Logf("root token upserted %s: %+v", typo, info)
	}
}

func TestTransitErrors(t *testing.T) {
	ctx := context.Background()
	key := newKey(t)
	good := newVault(t, key, nil)
	items := fieldItems(2)
	encrypt(t, good, key, items)

	badToken := "hvs.not-a-real-token-0123456789"
	bc, _ := dev.Client()
	bc.SetToken(badToken)
	bad := newVault(t, key, bc)

	stopped, err := devvault.Start(ctx, devvault.Options{Keys: []string{"gone"}})
	if err != nil {
		t.Fatal(err)
	}
	sc, _ := stopped.Client()
	down := newVault(t, "gone", sc)
	stoppedToken := stopped.Token
	if err := stopped.Stop(); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name      string
		do        func() error
		kind      error
		noRequest *Vault
	}{
		{"decrypt with missing key", func() error { return good.DecryptBatch(ctx, "no-such-key", forDecrypt(items)) }, ErrKeyNotFound, nil},
		{"KeyInfo of missing key", func() error { _, err := good.KeyInfo(ctx, "no-such-key"); return err }, ErrKeyNotFound, nil},
		{"rotate missing key", func() error { return good.RotateKey(ctx, "no-such-key") }, ErrKeyNotFound, nil},
		{"encrypt with bad token", func() error { return bad.EncryptBatch(ctx, key, fieldItems(2)) }, ErrPermissionDenied, nil},
		{"decrypt with bad token", func() error { return bad.DecryptBatch(ctx, key, forDecrypt(items)) }, ErrPermissionDenied, nil},
		{"FPEKey with bad token", func() error { _, _, err := bad.FPEKey(ctx, key, 0); return err }, ErrPermissionDenied, nil},
		{"encrypt on stopped server", func() error { return down.EncryptBatch(ctx, "gone", fieldItems(2)) }, ErrUnavailable, nil},
		{"decrypt on stopped server", func() error { return down.DecryptBatch(ctx, "gone", forDecrypt(items)) }, ErrUnavailable, nil},
		{"FPEKey on stopped server", func() error { _, _, err := down.FPEKey(ctx, "gone", 1); return err }, ErrUnavailable, nil},
		{"encrypt with path in key name", func() error { return good.EncryptBatch(ctx, "../../sys/seal", fieldItems(1)) }, ErrInvalidInput, good},
		{"decrypt with path in key name", func() error { return good.DecryptBatch(ctx, "a/b", forDecrypt(items)) }, ErrInvalidInput, good},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before int64
			if tc.noRequest != nil {
				before = tc.noRequest.Calls()
			}
			err := tc.do()
			var ke *Error
			if !errors.As(err, &ke) || !errors.Is(err, tc.kind) {
				t.Fatalf("error = %v, want kind %v", err, tc.kind)
			}
			if got, want := fault.ClassOf(err), fault.ClassOf(tc.kind); got != want {
				t.Errorf("class %v, want %v", got, want)
			}
			t.Logf("error: %v", err)
			if tc.noRequest != nil && tc.noRequest.Calls() != before {
				t.Error("a malformed input reached Vault")
			}
			for _, secret := range []string{dev.Token, badToken, stoppedToken} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error contains a token: %q", err)
				}
			}
			noSecrets(t, err, items)
		})
	}
}

// noSecrets fails the test if err's text contains a plaintext or a ciphertext of items.
func noSecrets(t *testing.T, err error, items []TransitItem) {
	t.Helper()
	msg := err.Error()
	for _, secret := range []string{dev.Token} {
		if strings.Contains(msg, secret) {
			t.Errorf("error contains the token: %q", msg)
		}
	}
	for _, it := range items {
		for _, s := range []string{string(it.Plaintext), base64.StdEncoding.EncodeToString(it.Plaintext), it.Ciphertext} {
			if s != "" && strings.Contains(msg, s) {
				t.Errorf("error contains a plaintext or ciphertext: %q", msg)
			}
		}
		if body := it.Ciphertext[strings.LastIndexByte(it.Ciphertext, ':')+1:]; body != "" && strings.Contains(msg, body) {
			t.Errorf("error contains a ciphertext: %q", msg)
		}
	}
}

// TestTransitBatchInParallel: a batch of 2,000 items goes as four requests of 500 at
// once, and every result lands on its own item (associated data binds each ciphertext to
// its item, so a result put on another item would not decrypt).
func TestTransitBatchInParallel(t *testing.T) {
	ctx := context.Background()
	key := newKey(t)
	v := newVault(t, key, nil)
	items := fieldItems(2000)
	before := v.Calls()
	encrypt(t, v, key, items)
	if n := v.Calls() - before; n != 4 {
		t.Errorf("EncryptBatch of 2,000 items: %d Vault calls, want 4", n)
	}
	dec := forDecrypt(items)
	before = v.Calls()
	if err := v.DecryptBatch(ctx, key, dec); err != nil {
		t.Fatal(err)
	}
	if n := v.Calls() - before; n != 4 {
		t.Errorf("DecryptBatch of 2,000 items: %d Vault calls, want 4", n)
	}
	for i := range dec {
		if dec[i].Err != nil || !bytes.Equal(dec[i].Plaintext, items[i].Plaintext) {
			t.Fatalf("item %d: %v, plaintext equal %v", i, dec[i].Err, bytes.Equal(dec[i].Plaintext, items[i].Plaintext))
		}
	}
}

func TestSplitBatch(t *testing.T) {
	for _, c := range []struct{ n, parts, first int }{
		{0, 1, 0}, {1, 1, 1}, {100, 1, 100}, {300, 1, 300}, {499, 1, 499},
		{500, 2, 250}, {999, 3, 333}, {2000, 4, 500}, {5000, 5, 1000}, {12_000, 12, 1000},
	} {
		chunks := splitBatch(make([]input, c.n))
		total := 0
		for _, ch := range chunks {
			total += len(ch)
		}
		if len(chunks) != c.parts || len(chunks[0]) != c.first || total != c.n {
			t.Errorf("%d items: %d chunks, first %d, %d in all; want %d chunks, first %d", c.n, len(chunks), len(chunks[0]), total, c.parts, c.first)
		}
	}
}

// TestBatchBody checks the hand-built batch_input against encoding/json: the body must
// decode to the members each input was given, as json.Marshal of the same maps would,
// whatever the strings hold (quotes, backslashes, control bytes, non-ASCII, invalid
// UTF-8, nothing).
func TestBatchBody(t *testing.T) {
	values := []string{"", "QUJD", "vault:v1:abc+/=", `a"b`, `a\b`, "line\nfeed\x00\x1f", "é€😀", "bad\xffutf8", "del\x7f", "<&>", strings.Repeat("x", 5000)}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		b := make([]byte, rng.IntN(12))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		values = append(values, string(b))
	}
	var in []input
	var want []map[string]string
	for i, v := range values {
		k := []string{"plaintext", "value", "ciphertext"}[i%3]
		m := map[string]string{k: v}
		it := input(nil).add(k, v)
		if i%2 == 0 {
			m["context"] = values[(i*7)%len(values)]
			it = it.add("context", m["context"])
		}
		in = append(in, it)
		want = append(want, m)
	}
	var got struct {
		BatchInput []map[string]string `json:"batch_input"`
	}
	if err := json.Unmarshal(batchBody(in), &got); err != nil {
		t.Fatalf("batch body is not JSON: %v", err)
	}
	var ref struct {
		BatchInput []map[string]string `json:"batch_input"`
	}
	marshalled, _ := json.Marshal(map[string]any{"batch_input": want})
	if err := json.Unmarshal(marshalled, &ref); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.BatchInput, ref.BatchInput) {
		for i := range ref.BatchInput {
			if i >= len(got.BatchInput) || !reflect.DeepEqual(got.BatchInput[i], ref.BatchInput[i]) {
				t.Fatalf("item %d decodes differently from json.Marshal's encoding", i)
			}
		}
		t.Fatalf("%d items decoded, want %d", len(got.BatchInput), len(ref.BatchInput))
	}
	if string(batchBody(nil)) != `{"batch_input":[]}` {
		t.Errorf("empty batch body %s", batchBody(nil))
	}
}
