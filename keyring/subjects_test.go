package keyring

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
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

// TestSubjectKeyVectors: the names of testdata/fields/subjectkey.json are the prefix and
// the hex of the first 16 bytes of HMAC-SHA-256 of the subject under the naming key
// (docs/FIELDS.md section 12.2).
func TestSubjectKeyVectors(t *testing.T) {
	b, err := os.ReadFile("../testdata/fields/subjectkey.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Prefix  string `json:"prefix"`
		Vectors []struct {
			Name, Subject, Answer string
			HMACKey               string `json:"hmac_key"`
			InputBase64           string `json:"input_base64"`
			KeyName               string `json:"key_name"`
		} `json:"vectors"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if f.Prefix != SubjectKeyPrefix || len(f.Vectors) == 0 {
		t.Fatalf("prefix %q, %d vectors", f.Prefix, len(f.Vectors))
	}
	for _, v := range f.Vectors {
		key, _ := base64.StdEncoding.DecodeString(v.HMACKey)
		m := hmac.New(sha256.New, key)
		m.Write([]byte(v.Subject))
		sum := m.Sum(nil)
		if v.InputBase64 != base64.StdEncoding.EncodeToString([]byte(v.Subject)) || v.Answer != "vault:v1:"+base64.StdEncoding.EncodeToString(sum) ||
			v.KeyName != SubjectKeyPrefix+hex.EncodeToString(sum[:16]) || !IsSubjectKey(v.KeyName) {
			t.Errorf("%s: vector does not follow the construction", v.Name)
		}
	}
}

// TestSubjectKeyIsVaultHMAC names subjects through the real Vault with an exportable
// naming key and checks each name against the construction over the exported HMAC key
// of version 1, also after the naming key was rotated (names always use version 1).
func TestSubjectKeyIsVaultHMAC(t *testing.T) {
	ctx := context.Background()
	naming := newKeyWith(t, map[string]any{"type": "aes256-gcm96", "exportable": true})
	c, err := dev.Client()
	if err != nil {
		t.Fatal(err)
	}
	sec, err := c.Logical().Read("transit/export/hmac-key/" + naming + "/1")
	if err != nil || sec == nil {
		t.Fatalf("export hmac key: %v", err)
	}
	keys, _ := sec.Data["keys"].(map[string]any)
	hk, _ := keys["1"].(string)
	raw, err := base64.StdEncoding.DecodeString(hk)
	if err != nil || len(raw) == 0 {
		t.Fatalf("exported hmac key: %q", hk)
	}
	if err := dev.RotateKey(ctx, naming); err != nil {
		t.Fatal(err)
	}
	s, err := NewSubjects(newVault(t, newKey(t), nil), SubjectOptions{NamingKey: naming})
	if err != nil {
		t.Fatal(err)
	}
	subjects := []string{"cust-0042", "Zoë Ivanova <zoe@example.com>", "1234567890"}
	got, err := s.KeyNames(ctx, subjects)
	if err != nil {
		t.Fatal(err)
	}
	for i, subj := range subjects {
		m := hmac.New(sha256.New, raw)
		m.Write([]byte(subj))
		if want := SubjectKeyPrefix + hex.EncodeToString(m.Sum(nil)[:16]); got[i] != want {
			t.Errorf("subject %d: Vault named it %s, the construction says %s", i, got[i], want)
		}
	}
}
