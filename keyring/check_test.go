package keyring

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestCheckKey(t *testing.T) {
	ctx := context.Background()
	plain := newKey(t)
	det := newKeyWith(t, convergent)
	derivedOnly := newKeyWith(t, map[string]any{"type": "aes256-gcm96", "derived": true})
	signing := newKeyWith(t, map[string]any{"type": "ed25519"})
	v := newVault(t, plain, nil)

	for _, c := range []struct {
		key  string
		use  KeyUse
		kind error  // nil: accepted
		says string // in the error
	}{
		{plain, UseDataKeys, nil, ""},
		{plain, UseFPE, nil, ""},
		{det, UseDeterministic, nil, ""},
		{"typo-" + plain, UseDeterministic, ErrKeyNotFound, "does not exist"},
		{"typo-" + plain, UseDataKeys, ErrKeyNotFound, "does not exist"},
		{"typo-" + plain, UseFPE, ErrKeyNotFound, "does not exist"},
		{"a/b", UseDataKeys, ErrKeyNotFound, "not a valid transit key name"},
		{plain, UseDeterministic, ErrKeyUnfit, "is not derived and convergent"},
		{derivedOnly, UseDeterministic, ErrKeyUnfit, "is not derived and convergent"},
		{det, UseDataKeys, ErrKeyUnfit, "is derived"},
		{signing, UseDataKeys, ErrKeyUnfit, "does not encrypt"},
	} {
		err := v.CheckKey(ctx, c.key, c.use)
		if c.kind == nil {
			if err != nil {
				t.Errorf("CheckKey(%q, %v): %v", c.key, c.use, err)
			}
			continue
		}
		var ce *KeyCheckError
		if !errors.As(err, &ce) || !errors.Is(err, c.kind) || !strings.Contains(err.Error(), c.says) || !strings.Contains(err.Error(), `"`+c.key+`"`) {
			t.Errorf("CheckKey(%q, %v) = %v, want a *KeyCheckError %v naming the key and saying %q", c.key, c.use, err, c.kind, c.says)
		}
	}

	// The check reads; it never creates the key it was asked about (transit upserts on
	// encrypt, which is the typo this check exists for).
	if _, err := v.KeyInfo(ctx, "typo-"+plain); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("after the checks, the misspelt key: %v, want ErrKeyNotFound", err)
	}
}

// A token that may not read the key's configuration gets Vault's refusal, not a verdict
// on the key.
func TestCheckKeyPermissionDenied(t *testing.T) {
	key := newKey(t)
	tok, err := dev.CreateToken(context.Background(), "no-read-"+key, `path "transit/datakey/plaintext/`+key+`" { capabilities = ["update"] }`)
	if err != nil {
		t.Fatal(err)
	}
	c, err := dev.Client()
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(tok)
	v := newVault(t, key, c)
	err = v.CheckKey(context.Background(), key, UseDataKeys)
	var ce *KeyCheckError
	if !errors.Is(err, ErrPermissionDenied) || errors.As(err, &ce) {
		t.Fatalf("CheckKey without read: %v, want ErrPermissionDenied", err)
	}
	if strings.Contains(err.Error(), tok) {
		t.Fatal("the error shows the token")
	}
}
