package keyring

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/pubcrypt/pubcrypt/fault"
)

// TestKindClasses pins the class of every error kind: what a program may do with a
// message depends on it (a message fault may be dead-lettered or skipped, an environment
// fault never acks).
func TestKindClasses(t *testing.T) {
	for _, tc := range []struct {
		kind error
		want fault.Class
	}{
		{ErrUnavailable, fault.Environment},
		{ErrPermissionDenied, fault.Environment},
		{ErrKeyNotFound, fault.Environment},
		{ErrTransformNotAvailable, fault.Environment},
		{ErrInvalidInput, fault.Environment},
		{ErrVersionTooOld, fault.Message},
		{ErrInvalidWrappedKey, fault.Message},
		{ErrDecrypt, fault.Message},
		{ErrValueRefused, fault.Message},
		{nil, fault.Environment}, // an *Error without a kind: unknown, so never acked
	} {
		e := &Error{Op: "op", KeyID: "k", Kind: tc.kind, Err: errors.New("cause")}
		if got := fault.ClassOf(e); got != tc.want {
			t.Errorf("*Error of kind %v: class %v, want %v", tc.kind, got, tc.want)
		}
		if got := fault.ClassOf(fmt.Errorf("wrapped: %w", e)); got != tc.want {
			t.Errorf("wrapped *Error of kind %v: class %v, want %v", tc.kind, got, tc.want)
		}
		if tc.kind != nil {
			if got := fault.ClassOf(fmt.Errorf("bare: %w", tc.kind)); got != tc.want {
				t.Errorf("bare kind %v: class %v, want %v", tc.kind, got, tc.want)
			}
		}
	}
}

// bigValue is the observed failure: an 850 KB value in a transit field. Base64 makes it
// 1,133,336 bytes, over Vault's default max_json_string_value_length of 1 MiB.
func bigValue(t *testing.T) []byte {
	b := make([]byte, 850_000)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestValueTooLargeIsMessageFault reproduces "a value too large for Vault (850 KB) in a
// transit field is reported as 'key service unavailable … HTTP 500'". Vault answers such
// a request, single value or batch_input, with HTTP 500 "JSON string value exceeds allowed
// length" and no batch_results: a refusal of the value, not an outage. It must fail that
// value alone, as ErrValueRefused of class Message, and let the other values of the batch
// through.
func TestValueTooLargeIsMessageFault(t *testing.T) {
	ctx := context.Background()
	key := newKey(t)
	v := newVault(t, key, nil)
	big := bigValue(t)

	check := func(t *testing.T, err error) {
		t.Helper()
		var ke *Error
		var ve *VaultError
		if !errors.As(err, &ke) || !errors.Is(err, ErrValueRefused) || errors.Is(err, ErrUnavailable) {
			t.Fatalf("error = %v, want ErrValueRefused and not ErrUnavailable", err)
		}
		if c := fault.ClassOf(err); c != fault.Message {
			t.Errorf("class %v, want message", c)
		}
		if errors.As(err, &ve) {
			t.Logf("Vault answered HTTP %d %q", ve.StatusCode, ve.Errors)
		}
		t.Logf("error: %v", err)
		if strings.Contains(err.Error(), base64.StdEncoding.EncodeToString(big[:64])) || strings.Contains(err.Error(), dev.Token) {
			t.Error("error contains the value or the token")
		}
	}

	t.Run("single value", func(t *testing.T) {
		items := []TransitItem{{Plaintext: big, AssociatedData: []byte("m\x00f")}}
		before := v.Calls()
		if err := v.EncryptBatch(ctx, key, items); err != nil {
			t.Fatalf("the call failed as a whole: %v", err)
		}
		check(t, items[0].Err)
		if items[0].Ciphertext != "" {
			t.Error("a refused item has a ciphertext")
		}
		t.Logf("%d Vault calls", v.Calls()-before)
	})

	t.Run("one value of a batch", func(t *testing.T) {
		items := fieldItems(9)
		items[4].Plaintext = big
		before := v.Calls()
		if err := v.EncryptBatch(ctx, key, items); err != nil {
			t.Fatalf("the call failed as a whole: %v", err)
		}
		calls := v.Calls() - before
		check(t, items[4].Err)
		for i, it := range items {
			if i != 4 && (it.Err != nil || !strings.HasPrefix(it.Ciphertext, "vault:v1:")) {
				t.Errorf("item %d beside the refused one: %v, ciphertext %.12q", i, it.Err, it.Ciphertext)
			}
		}
		// Found by splitting the refused request: about 2·log2(9) calls, never one per item.
		if calls > 8 {
			t.Errorf("%d Vault calls to find the refused value among 9", calls)
		}
		t.Logf("%d Vault calls for 9 values, one refused", calls)
		dec := forDecrypt(append(items[:4:4], items[5:]...))
		if err := v.DecryptBatch(ctx, key, dec); err != nil {
			t.Fatal(err)
		}
		for i, it := range dec {
			if it.Err != nil {
				t.Errorf("decrypt item %d: %v", i, it.Err)
			}
		}
	})

	t.Run("decrypt an oversized ciphertext", func(t *testing.T) {
		good := fieldItems(2)
		encrypt(t, v, key, good)
		dec := forDecrypt(good)
		dec = append(dec, TransitItem{Ciphertext: "vault:v1:" + base64.StdEncoding.EncodeToString(big)})
		if err := v.DecryptBatch(ctx, key, dec); err != nil {
			t.Fatalf("the call failed as a whole: %v", err)
		}
		check(t, dec[2].Err)
		for i := range 2 {
			if dec[i].Err != nil || !bytes.Equal(dec[i].Plaintext, good[i].Plaintext) {
				t.Errorf("item %d: %v", i, dec[i].Err)
			}
		}
	})

	t.Run("large batches are split, not refused", func(t *testing.T) {
		// 12,000 items: over Vault's 10,000 array elements, which it refuses as a whole
		// ("JSON array exceeds allowed element count", HTTP 500).
		items := fieldItems(12_000)
		before := v.Calls()
		encrypt(t, v, key, items)
		calls := v.Calls() - before
		if want := int64((len(items) + maxBatchItems - 1) / maxBatchItems); calls != want {
			t.Errorf("%d Vault calls for %d items, want %d", calls, len(items), want)
		}
		// 24 values of 600 KB: 19 MiB of base64, over one request's budget.
		var large []TransitItem
		for range 24 {
			b := make([]byte, 600_000)
			rand.Read(b)
			large = append(large, TransitItem{Plaintext: b})
		}
		before = v.Calls()
		encrypt(t, v, key, large)
		t.Logf("12,000 small values: %d calls; 24 values of 600 KB: %d calls", calls, v.Calls()-before)
	})
}
