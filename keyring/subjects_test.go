package keyring

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/devvault"
)

func TestSubjectNamingKeyIsDevVaults(t *testing.T) {
	if DefaultSubjectNamingKey != devvault.SubjectNamingKey {
		t.Fatalf("keyring names subjects with %q, devvault creates %q", DefaultSubjectNamingKey, devvault.SubjectNamingKey)
	}
}

func TestIsSubjectKey(t *testing.T) {
	for name, want := range map[string]bool{
		SubjectKeyPrefix + strings.Repeat("0a", 16): true,
		SubjectKeyPrefix + strings.Repeat("0A", 16): false,
		SubjectKeyPrefix + strings.Repeat("0a", 15): false,
		SubjectKeyPrefix + strings.Repeat("0a", 17): false,
		DefaultSubjectNamingKey:                     false,
		"pubcrypt":                                  false,
	} {
		if got := IsSubjectKey(name); got != want {
			t.Errorf("IsSubjectKey(%q) = %v, want %v", name, got, want)
		}
	}
}

// TestSubjectsForget runs a subject's keys through their life on the real Vault: named by
// HMAC, created on first use, used for data keys, transit fields and FPE keys; then
// Forget, after which everything made under the old version fails with ErrShredded (a
// message fault), the other subject is untouched, and the forgotten subject's new data
// decrypts under the new version.
func TestSubjectsForget(t *testing.T) {
	ctx := context.Background()
	v := newVault(t, newKey(t), nil)
	s, err := NewSubjects(v, SubjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	subjects := []string{"customer-" + t.Name() + "-1", "customer-" + t.Name() + "-2", "customer-" + t.Name() + "-1"}
	before := v.Calls()
	names, err := s.KeyNames(ctx, subjects)
	if err != nil {
		t.Fatal(err)
	}
	// One HMAC batch, one create per subject.
	if calls := v.Calls() - before; calls != 3 {
		t.Errorf("naming 2 new subjects took %d Vault calls, want 3 (one hmac batch, two creates)", calls)
	}
	if names[0] != names[2] || names[0] == names[1] || !IsSubjectKey(names[0]) || !IsSubjectKey(names[1]) {
		t.Fatalf("key names %q", names)
	}
	for _, n := range names {
		if strings.Contains(n, "customer") {
			t.Fatalf("key name %q shows the subject", n)
		}
	}
	before = v.Calls()
	if again, err := s.KeyNames(ctx, subjects[:2]); err != nil || again[0] != names[0] || again[1] != names[1] {
		t.Fatalf("KeyNames again: %q, %v", again, err)
	}
	if calls := v.Calls() - before; calls != 0 {
		t.Errorf("naming known subjects took %d Vault calls", calls)
	}
	// A second keyring (another producer) names the same subject alike, and finds its key.
	s2, err := NewSubjects(newVault(t, v.KeyID(), nil), SubjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if other, err := s2.KeyNames(ctx, subjects[:1]); err != nil || other[0] != names[0] {
		t.Fatalf("another process names the subject %q, %v; want %q", other, err, names[0])
	}

	type made struct {
		wrapped string
		transit TransitItem
		fpe     []byte
	}
	use := func(key string) made {
		t.Helper()
		dk, err := s.DataKeys(key)
		if err != nil {
			t.Fatal(err)
		}
		k, _, err := dk.Take(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		if k.KeyID != key {
			t.Fatalf("data key under %q, want %q", k.KeyID, key)
		}
		items := []TransitItem{{Plaintext: []byte("Jane Doe"), AssociatedData: []byte("ad")}}
		if err := v.EncryptBatch(ctx, key, items); err != nil || items[0].Err != nil {
			t.Fatal(err, items[0].Err)
		}
		fk, _, err := v.FPEKey(ctx, key, 0)
		if err != nil {
			t.Fatal(err)
		}
		return made{wrapped: k.Wrapped, transit: TransitItem{Ciphertext: items[0].Ciphertext, AssociatedData: []byte("ad")}, fpe: fk}
	}
	gone, kept := use(names[0]), use(names[1])

	f, err := s.Forget(ctx, subjects[0])
	if err != nil {
		t.Fatal(err)
	}
	if f.Key != names[0] || f.Destroyed != 1 || f.Latest != 2 {
		t.Fatalf("Forget = %+v, want key %s, 1 destroyed, latest 2", f, names[0])
	}
	info, err := v.KeyInfo(ctx, names[0])
	if err != nil {
		t.Fatal(err)
	}
	if info.MinAvailableVersion != 2 || info.MinDecryptionVersion != 2 {
		t.Fatalf("after Forget the key is %+v: versions below 2 should be trimmed", info)
	}

	shred := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrShredded) || fault.ClassOf(err) != fault.Message {
			t.Errorf("%s of the forgotten subject: %v (class %v), want ErrShredded, a message fault", what, err, fault.ClassOf(err))
		}
		if err != nil && strings.Contains(err.Error(), "customer") {
			t.Errorf("%s: the error shows the subject: %v", what, err)
		}
	}
	_, err = v.UnwrapDataKey(ctx, names[0], gone.wrapped)
	shred("unwrap", err)
	items := []TransitItem{gone.transit}
	if err := v.DecryptBatch(ctx, names[0], items); err != nil {
		shred("transit decrypt", err)
	} else {
		shred("transit decrypt", items[0].Err)
	}
	_, _, err = v.FPEKey(ctx, names[0], 1)
	shred("fpe key", err)

	// The other subject decrypts as before.
	if _, err := v.UnwrapDataKey(ctx, names[1], kept.wrapped); err != nil {
		t.Errorf("unwrap of the other subject: %v", err)
	}
	items = []TransitItem{kept.transit}
	if err := v.DecryptBatch(ctx, names[1], items); err != nil || items[0].Err != nil || string(items[0].Plaintext) != "Jane Doe" {
		t.Errorf("transit decrypt of the other subject: %v %v", err, items[0].Err)
	}

	// New data about the forgotten subject is under the new version: this process's
	// cached data key was dropped by Forget.
	again := use(names[0])
	if !strings.HasPrefix(again.wrapped, "vault:v2:") {
		t.Errorf("data key after Forget is %.9s..., want version 2", again.wrapped)
	}
	if _, err := v.UnwrapDataKey(ctx, names[0], again.wrapped); err != nil {
		t.Errorf("unwrap of new data after Forget: %v", err)
	}
	// A key that does not exist is an environment fault, never an erasure.
	_, err = v.UnwrapDataKey(ctx, SubjectKeyPrefix+strings.Repeat("ab", 16), gone.wrapped)
	if !errors.Is(err, ErrKeyNotFound) || errors.Is(err, ErrShredded) {
		t.Errorf("unwrap under a missing subject key: %v, want ErrKeyNotFound", err)
	}
	// Forgetting a subject that never had a key destroys nothing.
	if f, err := s.Forget(ctx, "never-seen-"+t.Name()); err != nil || f.Destroyed != 0 {
		t.Errorf("Forget of an unknown subject = %+v, %v", f, err)
	}
}
