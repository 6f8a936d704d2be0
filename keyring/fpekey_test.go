package keyring

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"strconv"
	"testing"
)

// TestFPEKeyVectors: the vectors of testdata/fields/fpekey.json are HMAC-SHA-256 of the
// label under the HMAC key, and the label is the one FPEKey sends (docs/FIELDS.md 5.4.1).
func TestFPEKeyVectors(t *testing.T) {
	b, err := os.ReadFile("../testdata/fields/fpekey.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Label       string `json:"label"`
		InputBase64 string `json:"input_base64"`
		Vectors     []struct {
			Name    string `json:"name"`
			HMACKey string `json:"hmac_key"`
			Answer  string `json:"answer"`
			FPEKey  string `json:"fpe_key"`
		} `json:"vectors"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if f.Label != fpeLabel || f.InputBase64 != base64.StdEncoding.EncodeToString([]byte(fpeLabel)) {
		t.Fatalf("label %q / %q, want %q", f.Label, f.InputBase64, fpeLabel)
	}
	for _, v := range f.Vectors {
		key, _ := base64.StdEncoding.DecodeString(v.HMACKey)
		m := hmac.New(sha256.New, key)
		m.Write([]byte(f.Label))
		if got := hex.EncodeToString(m.Sum(nil)); got != v.FPEKey || v.Answer != "vault:v1:"+base64.StdEncoding.EncodeToString(m.Sum(nil)) {
			t.Errorf("%s: fpe key %s, want %s", v.Name, got, v.FPEKey)
		}
	}
}

// TestFPEKeyIsVaultHMAC derives FPE keys from the real Vault for two versions of an
// exportable key and checks each against HMAC-SHA-256 of the label under that version's
// HMAC key as Vault exports it: the derivation a second implementation must reproduce.
func TestFPEKeyIsVaultHMAC(t *testing.T) {
	ctx := context.Background()
	name := newKeyWith(t, map[string]any{"type": "aes256-gcm96", "exportable": true})
	if err := dev.RotateKey(ctx, name); err != nil {
		t.Fatal(err)
	}
	c, err := dev.Client()
	if err != nil {
		t.Fatal(err)
	}
	v := newVault(t, name, nil)
	for _, version := range []int{1, 2} {
		sec, err := c.Logical().Read("transit/export/hmac-key/" + name + "/" + strconv.Itoa(version))
		if err != nil || sec == nil {
			t.Fatalf("export hmac key: %v", err)
		}
		keys, _ := sec.Data["keys"].(map[string]any)
		hk, _ := keys[strconv.Itoa(version)].(string)
		raw, err := base64.StdEncoding.DecodeString(hk)
		if err != nil || len(raw) == 0 {
			t.Fatalf("exported hmac key of version %d: %q", version, hk)
		}
		m := hmac.New(sha256.New, raw)
		m.Write([]byte(fpeLabel))
		want := m.Sum(nil)
		got, gotVersion, err := v.FPEKey(ctx, name, version)
		if err != nil {
			t.Fatal(err)
		}
		if gotVersion != version || !hmac.Equal(got, want) {
			t.Fatalf("version %d: FPEKey %x (version %d), want HMAC-SHA-256(exported key, label) %x", version, got, gotVersion, want)
		}
	}
	// Version 0 asks for the latest, and says which it is.
	if _, latest, err := v.FPEKey(ctx, name, 0); err != nil || latest != 2 {
		t.Fatalf("latest: version %d, %v; want 2", latest, err)
	}
}
