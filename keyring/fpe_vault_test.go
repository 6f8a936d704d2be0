package keyring

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/devvault"
)

// TestFPEPlugin drives Vault.FPEEncrypt and FPEDecrypt against a real Vault dev server
// that loaded pubcrypt's FPE plugin ($PUBCRYPT_FPE_PLUGIN_BIN, from
// scripts/install-fpe-plugin.sh; the test fails without it): a round trip in one batch,
// rotation (old values decode under their version), retirement with
// min_decryption_version (ErrVersionTooOld), a value refused alone (a fault of its
// message, its text never in the error) and a missing mount or key (ErrKeyNotFound).
func TestFPEPlugin(t *testing.T) {
	const mount, key = "fpe-test", "cards"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := devvault.Start(ctx, devvault.Options{FPEPluginMount: mount})
	if err != nil {
		t.Fatalf("cannot start a Vault dev server with the FPE plugin: %v", err)
	}
	defer srv.Stop()
	if err := srv.CreateFPEPluginKey(ctx, mount, key); err != nil {
		t.Fatal(err)
	}
	c, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVault(VaultOptions{Key: DefaultKey, Client: c, FPEMount: mount})
	if err != nil {
		t.Fatal(err)
	}
	cards := []string{"4111 1111 1111 1111", "5500-0000-0000-0004", "340000000000009"}
	items := func(vals []string) []FPEItem {
		out := make([]FPEItem, len(vals))
		for i, s := range vals {
			out[i] = FPEItem{Value: s, Tweak: []byte("card_number"), Options: "bin,luhn"}
		}
		return out
	}
	results := func(it []FPEItem) []string {
		out := make([]string, len(it))
		for i := range it {
			out[i] = it[i].Result
		}
		return out
	}

	enc1 := items(cards)
	calls := v.Calls()
	ver, err := v.FPEEncrypt(ctx, key, enc1)
	if err != nil || ver != 1 {
		t.Fatalf("FPEEncrypt = version %d, %v", ver, err)
	}
	if n := v.Calls() - calls; n != 1 {
		t.Errorf("FPEEncrypt of %d values made %d requests, want 1", len(cards), n)
	}
	for i, it := range enc1 {
		if len(it.Result) != len(cards[i]) || it.Result[:6] != cards[i][:6] || it.Result == cards[i] {
			t.Fatalf("card %d encoded to %q", i, it.Result)
		}
	}

	if err := srv.RotateFPEPluginKey(ctx, mount, key); err != nil {
		t.Fatal(err)
	}
	enc2 := items(cards)
	if ver, err := v.FPEEncrypt(ctx, key, enc2); err != nil || ver != 2 {
		t.Fatalf("FPEEncrypt after rotation = version %d, %v", ver, err)
	}
	for i := range cards {
		if enc2[i].Result == enc1[i].Result {
			t.Fatalf("card %d: the same output under versions 1 and 2", i)
		}
	}
	for version, enc := range map[int][]FPEItem{1: enc1, 2: enc2} {
		dec := items(results(enc))
		if err := v.FPEDecrypt(ctx, key, version, dec); err != nil {
			t.Fatalf("FPEDecrypt version %d: %v", version, err)
		}
		if got := results(dec); strings.Join(got, "|") != strings.Join(cards, "|") {
			t.Fatalf("FPEDecrypt version %d = %q, want %q", version, got, cards)
		}
	}

	// One value the plugin refuses fails alone, for its message, and is not in the text.
	mixed := items([]string{cards[0], "4111 1111 1111 1112"}) // the second fails Luhn
	_, err = v.FPEEncrypt(ctx, key, mixed)
	if mixed[0].Err != nil || mixed[0].Result == "" || mixed[1].Err == nil || !errors.Is(err, ErrValueRefused) || !fault.IsMessage(mixed[1].Err) {
		t.Fatalf("FPEEncrypt with one bad value: %v; items %v / %v", err, mixed[0].Err, mixed[1].Err)
	}
	if strings.Contains(err.Error(), "1112") {
		t.Errorf("error shows the value: %v", err)
	}
	t.Logf("one value refused: %v", err)

	// Retired versions are refused as transit's are.
	if _, err := c.Logical().WriteWithContext(ctx, mount+"/keys/"+key+"/config", map[string]any{"min_decryption_version": 2}); err != nil {
		t.Fatal(err)
	}
	dec := items(results(enc1))
	if err := v.FPEDecrypt(ctx, key, 1, dec); !errors.Is(err, ErrVersionTooOld) {
		t.Fatalf("FPEDecrypt of a retired version = %v, want ErrVersionTooOld", err)
	}

	// A missing key, and a keyring pointed at a mount without the plugin.
	if _, err := v.FPEEncrypt(ctx, "nokey", items(cards[:1])); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("FPEEncrypt with a missing key = %v, want ErrKeyNotFound", err)
	}
	other, err := NewVault(VaultOptions{Key: DefaultKey, Client: c, FPEMount: "no-such-mount"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = other.FPEEncrypt(ctx, key, items(cards[:1]))
	if !errors.Is(err, ErrKeyNotFound) || !strings.Contains(err.Error(), "FPE plugin enabled at") {
		t.Fatalf("FPEEncrypt on a mount without the plugin = %v, want ErrKeyNotFound naming the mount", err)
	}
	t.Logf("no plugin at the mount: %v", err)
	if err := v.FPEDecrypt(ctx, key, 0, items(cards[:1])); err == nil {
		t.Fatal("FPEDecrypt without a version succeeded")
	}
}
