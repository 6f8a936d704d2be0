package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/pubcrypt/pubcrypt/internal/fpe"
)

// These tests drive the backend through the sdk's own request handling and in-memory
// storage; the plugin loaded by a real Vault dev server is tested in the main module
// (keyring, cryptsub and internal/e2e).

func newTestBackend(t *testing.T) (*backend, logical.Storage) {
	t.Helper()
	conf := logical.TestBackendConfig()
	conf.StorageView = &logical.InmemStorage{}
	b, err := Factory(context.Background(), conf)
	if err != nil {
		t.Fatal(err)
	}
	return b.(*backend), conf.StorageView
}

func call(t *testing.T, b *backend, s logical.Storage, op logical.Operation, path string, data map[string]any) (*logical.Response, error) {
	t.Helper()
	// As Vault's HTTP layer does: JSON numbers arrive as json.Number.
	if data != nil {
		raw, _ := json.Marshal(data)
		dec := json.NewDecoder(strings.NewReader(string(raw)))
		dec.UseNumber()
		data = nil
		if err := dec.Decode(&data); err != nil {
			t.Fatal(err)
		}
	}
	return b.HandleRequest(context.Background(), &logical.Request{Operation: op, Path: path, Storage: s, Data: data})
}

func mustCall(t *testing.T, b *backend, s logical.Storage, op logical.Operation, path string, data map[string]any) *logical.Response {
	t.Helper()
	resp, err := call(t, b, s, op, path, data)
	if err != nil || resp.IsError() {
		t.Fatalf("%s %s: %v %v", op, path, err, resp)
	}
	return resp
}

func results(t *testing.T, resp *logical.Response) []map[string]any {
	t.Helper()
	r, ok := resp.Data["batch_results"].([]map[string]any)
	if !ok {
		t.Fatalf("no batch_results in %v", resp.Data)
	}
	return r
}

const card = "4111 1111 1111 1111"

var tweak = base64.StdEncoding.EncodeToString([]byte("card_number"))

func TestRoundTripRotation(t *testing.T) {
	b, s := newTestBackend(t)
	mustCall(t, b, s, logical.UpdateOperation, "keys/cards", nil)
	// Create is idempotent: a second write keeps version 1.
	if v := mustCall(t, b, s, logical.UpdateOperation, "keys/cards", nil).Data["latest_version"]; v != 1 {
		t.Fatalf("latest_version after a second create = %v", v)
	}
	enc := func() (string, int) {
		resp := mustCall(t, b, s, logical.UpdateOperation, "encode/cards", map[string]any{"batch_input": []map[string]any{{"value": card, "tweak": tweak, "options": "bin,luhn"}}})
		r := results(t, resp)[0]
		if r["error"] != nil {
			t.Fatal(r["error"])
		}
		return r["encoded_value"].(string), r["key_version"].(int)
	}
	dec := func(v string, version int) string {
		resp := mustCall(t, b, s, logical.UpdateOperation, "decode/cards", map[string]any{"batch_input": []map[string]any{{"value": v, "tweak": tweak, "options": "bin,luhn", "key_version": fmt.Sprint(version)}}})
		r := results(t, resp)[0]
		if r["error"] != nil {
			t.Fatal(r["error"])
		}
		return r["decoded_value"].(string)
	}
	v1, ver1 := enc()
	if ver1 != 1 || v1 == card || len(v1) != len(card) || v1[:7] != card[:7] {
		t.Fatalf("encode: %q version %d", v1, ver1)
	}
	mustCall(t, b, s, logical.UpdateOperation, "keys/cards/rotate", nil)
	v2, ver2 := enc()
	if ver2 != 2 || v2 == v1 {
		t.Fatalf("after rotate: %q version %d (before %q)", v2, ver2, v1)
	}
	if got := dec(v1, 1); got != card {
		t.Fatalf("decode of version 1 after rotation = %q", got)
	}
	if got := dec(v2, 2); got != card {
		t.Fatalf("decode of version 2 = %q", got)
	}

	// The key's description never carries key bytes.
	info := mustCall(t, b, s, logical.ReadOperation, "keys/cards", nil)
	raw, _ := json.Marshal(info.Data)
	if strings.Contains(string(raw), "key\"") || info.Data["latest_version"] != 2 {
		t.Fatalf("read keys/cards = %s", raw)
	}

	// Retired versions are refused, as transit's min_decryption_version.
	mustCall(t, b, s, logical.UpdateOperation, "keys/cards/config", map[string]any{"min_decryption_version": 2})
	resp := mustCall(t, b, s, logical.UpdateOperation, "decode/cards", map[string]any{"batch_input": []map[string]any{{"value": v1, "tweak": tweak, "options": "bin,luhn", "key_version": 1}}})
	if e, _ := results(t, resp)[0]["error"].(string); !strings.Contains(e, "too old") {
		t.Fatalf("decode of a retired version: %q", e)
	}
}

func TestRefusals(t *testing.T) {
	b, s := newTestBackend(t)
	mustCall(t, b, s, logical.UpdateOperation, "keys/cards", nil)
	secret := "4111 1111 1111 111x"
	for _, c := range []struct {
		name, path string
		item       map[string]any
		want       string
	}{
		{"not digits", "encode/cards", map[string]any{"value": secret}, "neither a digit"},
		{"no version to decode", "decode/cards", map[string]any{"value": card}, "key_version is required"},
		{"future version", "decode/cards", map[string]any{"value": card, "key_version": 7}, "invalid key version"},
		{"bad options", "encode/cards", map[string]any{"value": card, "options": "bin,bin"}, "twice"},
		{"domain too small", "encode/cards", map[string]any{"value": card, "options": "bin,last4,luhn"}, "domain too small"},
		{"not Luhn-valid", "encode/cards", map[string]any{"value": "4111 1111 1111 1112", "options": "luhn"}, "Luhn"},
	} {
		resp := mustCall(t, b, s, logical.UpdateOperation, c.path, map[string]any{"batch_input": []map[string]any{c.item}})
		e, _ := results(t, resp)[0]["error"].(string)
		if !strings.Contains(e, c.want) {
			t.Errorf("%s: error %q, want it to mention %q", c.name, e, c.want)
		}
		if strings.Contains(e, "4111") {
			t.Errorf("%s: error %q contains the value", c.name, e)
		}
	}
	// A missing key fails the whole request, with the text pubcrypt's keyring maps to
	// ErrKeyNotFound.
	resp, err := call(t, b, s, logical.UpdateOperation, "encode/nokey", map[string]any{"value": card})
	if err == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), "key not found") {
		t.Fatalf("encode with a missing key: %v %v", resp, err)
	}
	// A single value (no batch_input) answers at the top level.
	resp = mustCall(t, b, s, logical.UpdateOperation, "encode/cards", map[string]any{"value": "123456789"})
	if v, _ := resp.Data["encoded_value"].(string); len(v) != 9 || resp.Data["key_version"] != 1 {
		t.Fatalf("single encode: %v", resp.Data)
	}
}

// TestSameAsLocalFPE: with a key of known bytes, the plugin's answer is internal/fpe's
// construction of docs/FIELDS.md section 5.4 (fpe.Encrypt under the rule path), for every
// combination of card options: fpe(vault) changes who holds the key, not the output.
func TestSameAsLocalFPE(t *testing.T) {
	b, s := newTestBackend(t)
	key := make([]byte, keySize)
	for i := range key {
		key[i] = byte(i)
	}
	if err := b.putKey(context.Background(), s, "known", &keyEntry{Latest: 1, MinDecryption: 1, Versions: map[int]keyVersion{1: {Key: key}}}); err != nil {
		t.Fatal(err)
	}
	ff, err := fpe.NewFF1(key, 10)
	if err != nil {
		t.Fatal(err)
	}
	const value = "4111-1111-1111-1111-003" // 19 digits, Luhn-valid: every option combination fits
	for f := range 8 {
		o := fpe.CardOptions{KeepBIN: f&1 != 0, KeepLast4: f&2 != 0, Luhn: f&4 != 0}
		want, err := fpe.Encrypt(ff, value, []byte("card_number"), o)
		if err != nil {
			t.Fatal(err)
		}
		resp := mustCall(t, b, s, logical.UpdateOperation, "encode/known", map[string]any{"batch_input": []map[string]any{{"value": value, "tweak": tweak, "options": o.String()}}})
		if got := results(t, resp)[0]["encoded_value"]; got != want {
			t.Errorf("options %q: plugin %v, internal/fpe %q", o.String(), got, want)
		}
	}
}
