package fields

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pubcrypt/pubcrypt/internal/envelope"
	"github.com/pubcrypt/pubcrypt/internal/fpe"
	"github.com/pubcrypt/pubcrypt/internal/purchase"
	"github.com/pubcrypt/pubcrypt/internal/wire"
	"github.com/pubcrypt/pubcrypt/keyring"
)

const purchaseJSON = `{
  "id": "ord-000042",
  "name": "Zanele Mensah",
  "email": "zanele@example.org",
  "address": {"street": "12 Harbour Road", "city": "Cork"},
  "card_number": "4111 1111 1111 1111",
  "amount": 137.45,
  "vip": true,
  "currency": "EUR",
  "items": [
    {"sku": "BK-101", "name": "paperback novel", "quantity": 1, "price": 12.99},
    {"sku": "SP-330", "name": "running shoes", "quantity": 1, "price": 119.95},
    {"sku": "BK-101", "name": "paperback novel", "quantity": 1, "price": 4.51}
  ]
}`

const mixedPolicy = "name=transit,email=deterministic,address=envelope,card_number=fpe(bin,luhn)," +
	"amount=transit,vip=envelope,items[].sku=deterministic,items[].price=envelope,phone=fpe"

var purchaseMeta = map[string]string{"content-type": "application/json", "trace-id": "4bf92f3577b34da6"}

// sensitiveValues are the raw JSON values the mixed policy protects in purchaseJSON.
var sensitiveValues = []string{`"Zanele Mensah"`, `"zanele@example.org"`, `"12 Harbour Road"`, `"Cork"`,
	`"4111 1111 1111 1111"`, `137.45`, `"BK-101"`, `"SP-330"`, `12.99`, `119.95`, `4.51`}

func TestRoundTrip(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	p := mustPolicy(t, mixedPolicy)
	out := e.protect1(t, purchaseJSON, purchaseMeta, p)

	if !json.Valid(out.Body) {
		t.Fatalf("protected body is not JSON:\n%s", out.Body)
	}
	for _, v := range sensitiveValues[:len(sensitiveValues)-3] { // prices: digits may recur by chance
		if v != `"4111 1111 1111 1111"` && bytes.Contains(out.Body, []byte(v)) {
			t.Errorf("protected body still contains %s", v)
		}
	}
	// The clear parts are byte for byte the producer's.
	for _, clear := range []string{`"id": "ord-000042"`, `"currency": "EUR"`, `"name": "paperback novel", "quantity": 1, "price": `} {
		if !bytes.Contains(out.Body, []byte(clear)) {
			t.Errorf("protected body lost %s", clear)
		}
	}
	var doc struct {
		Card  string          `json:"card_number"`
		Amt   json.RawMessage `json:"amount"`
		Items []struct {
			SKU   string          `json:"sku"`
			Price json.RawMessage `json:"price"`
		} `json:"items"`
	}
	if err := json.Unmarshal(out.Body, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Card) != 19 || !strings.HasPrefix(doc.Card, "4111 11") || doc.Card == "4111 1111 1111 1111" {
		t.Errorf("card_number = %q, want a different 19-character card with the BIN kept", doc.Card)
	}
	if !strings.HasPrefix(string(doc.Amt), `"vault:v1:`) || !strings.HasPrefix(string(doc.Items[0].Price), `"pc1e.`) {
		t.Errorf("amount = %s, items[0].price = %s: want a transit and an envelope ciphertext", doc.Amt, doc.Items[0].Price)
	}
	// Deterministic: the two BK-101 items give one ciphertext, SP-330 another.
	if doc.Items[0].SKU != doc.Items[2].SKU || doc.Items[0].SKU == doc.Items[1].SKU {
		t.Errorf("deterministic skus: %q %q %q", doc.Items[0].SKU, doc.Items[1].SKU, doc.Items[2].SKU)
	}
	if len(out.Metadata) != len(purchaseMeta)+3 || !IsFields(out.Metadata) || IsFields(purchaseMeta) {
		t.Errorf("metadata = %v", out.Metadata)
	}
	for k, v := range out.Metadata {
		if strings.HasPrefix(k, "pubcrypt") && (!wire.ValidValue(v) || len(v) > MaxManifestLen) {
			t.Errorf("%s = %q is not a valid envelope value", k, v)
		}
	}
	t.Logf("manifest: %s", out.Metadata[ManifestKey])
	t.Logf("body: %s", out.Body)

	body, md, err := e.opener.Open(ctx, out.Body, out.Metadata)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if string(body) != purchaseJSON {
		t.Errorf("Open body =\n%s\nwant\n%s", body, purchaseJSON)
	}
	if !maps.Equal(md, purchaseMeta) {
		t.Errorf("Open metadata = %v, want %v", md, purchaseMeta)
	}
}

// TestRoundTripGenerated runs many generated purchases through each mode alone and all
// together, as one batch.
func TestRoundTripGenerated(t *testing.T) {
	g := purchase.NewGenerator(7)
	var docs [][]byte
	for range 50 {
		b, err := json.Marshal(g.Next())
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, b)
	}
	for _, policy := range []string{
		"name=transit,address=transit,card_number=transit,amount=transit,items[].sku=transit",
		"name=envelope,address=envelope,card_number=envelope,amount=envelope,items[].sku=envelope,items[].price=envelope",
		"name=deterministic,card_number=deterministic,items[]=deterministic",
		"card_number=fpe",
		"card_number=fpe(bin,luhn)",
		"card_number=fpe(last4,luhn)",
		"card_number=fpe(bin,last4)",
		"name=transit,address=envelope,card_number=fpe(bin,luhn),amount=deterministic,items[].sku=envelope,items[].quantity=transit",
		"",
	} {
		t.Run(policy, func(t *testing.T) {
			e := newTestEnv(t)
			p := mustPolicy(t, policy)
			in := make([]Input, len(docs))
			for i, d := range docs {
				in[i] = Input{Body: d, Policy: p, Metadata: map[string]string{"n": fmt.Sprint(i)}}
			}
			out, err := e.sealer.Protect(context.Background(), in)
			if err != nil {
				t.Fatal(err)
			}
			for i, o := range out {
				body, md, err := e.opener.Open(context.Background(), o.Body, o.Metadata)
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				if !bytes.Equal(body, docs[i]) || md["n"] != fmt.Sprint(i) || len(md) != 1 {
					t.Fatalf("message %d: got %s %v, want %s", i, body, md, docs[i])
				}
				if policy != "" && bytes.Equal(o.Body, docs[i]) {
					t.Fatalf("message %d: nothing protected", i)
				}
			}
		})
	}
}

// TestBatching counts key-service calls: one EncryptBatch per Vault key for a batch of
// messages, one DecryptBatch per key per message, FPE keys fetched once.
func TestBatching(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	p := mustPolicy(t, mixedPolicy)
	in := make([]Input, 10)
	for i := range in {
		in[i] = Input{Body: []byte(purchaseJSON), Policy: p}
	}
	out, err := e.sealer.Protect(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"fpe pii-fpe 0", "encrypt pii 20", "encrypt pii-det 40"}
	if got := sortedCalls(e.vault); fmt.Sprint(got) != fmt.Sprint(sortedStrings(want)) {
		t.Errorf("Protect calls = %q, want %q", got, want)
	}

	e.vault.resetCounts()
	for _, o := range out {
		if _, _, err := e.opener.Open(ctx, o.Body, o.Metadata); err != nil {
			t.Fatal(err)
		}
	}
	if d, f := e.vault.decCalls.Load(), e.vault.fpeCalls.Load(); d != 20 || f != 1 {
		t.Errorf("Open of 10 messages: %d DecryptBatch calls (want 20), %d FPE key calls (want 1)", d, f)
	}

	// Envelope-only messages need no key-service call beyond the data key.
	e.vault.resetCounts()
	out2 := e.protect1(t, purchaseJSON, nil, mustPolicy(t, "name=envelope,card_number=envelope,items[].sku=envelope"))
	if _, _, err := e.opener.Open(ctx, out2.Body, out2.Metadata); err != nil {
		t.Fatal(err)
	}
	if n := len(e.vault.calls); n != 0 {
		t.Errorf("envelope-only round trip made %d FieldKeyring calls: %q", n, e.vault.calls)
	}
}

func sortedCalls(v *fakeVault) []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return sortedStrings(v.calls)
}

func sortedStrings(s []string) []string {
	s = append([]string(nil), s...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s
}

// TestTamper flips every bit position's low bit of every byte the MAC covers, one at a
// time: the body, every reserved entry and the clear metadata. Every change is an error;
// none reaches the key service for field decryption.
func TestTamper(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	out := e.protect1(t, purchaseJSON, purchaseMeta, mustPolicy(t, mixedPolicy))
	if _, _, err := e.opener.Open(ctx, out.Body, out.Metadata); err != nil {
		t.Fatal(err)
	}
	e.vault.resetCounts()
	check := func(what string, body []byte, md map[string]string) {
		t.Helper()
		got, _, err := e.opener.Open(ctx, body, md)
		if err == nil {
			t.Fatalf("%s: Open succeeded (%d bytes)", what, len(got))
		}
		if got != nil {
			t.Fatalf("%s: Open returned a body with its error", what)
		}
		if !errors.Is(err, envelope.ErrAuth) && !errors.Is(err, envelope.ErrMalformed) && !errors.Is(err, keyring.ErrInvalidWrappedKey) {
			t.Fatalf("%s: error %v is neither ErrAuth nor ErrMalformed", what, err)
		}
	}
	for i := range out.Body {
		for _, flip := range []byte{0x01, 0x80} {
			b := bytes.Clone(out.Body)
			b[i] ^= flip
			got, _, err := e.opener.Open(ctx, b, out.Metadata)
			if !errors.Is(err, envelope.ErrAuth) || got != nil {
				t.Fatalf("body byte %d ^ %#x: Open = %v, want ErrAuth", i, flip, err)
			}
		}
	}
	for k, v := range out.Metadata {
		for i := range v {
			md := maps.Clone(out.Metadata)
			b := []byte(v)
			b[i] ^= 0x01
			md[k] = string(b)
			check(fmt.Sprintf("%s byte %d", k, i), out.Body, md)
		}
		md := maps.Clone(out.Metadata)
		delete(md, k)
		check("without "+k, out.Body, md)
		md = maps.Clone(out.Metadata)
		md[k+"x"] = v
		check("with "+k+"x added", out.Body, md)
	}
	md := maps.Clone(out.Metadata)
	md["added"] = "1"
	check("entry added", out.Body, md)
	check("truncated body", out.Body[:len(out.Body)-1], out.Metadata)
	check("extended body", append(bytes.Clone(out.Body), ' '), out.Metadata)
	if n := e.vault.decCalls.Load() + e.vault.fpeCalls.Load(); n != 0 {
		t.Errorf("tampered messages caused %d field key-service calls", n)
	}
}

// TestMoved moves protected values within a message and between messages.
func TestMoved(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	p := mustPolicy(t, "name=transit,email=transit,address=envelope,card_number=envelope,items[].sku=deterministic,ssn=fpe")
	const doc = `{"name":"Ann","email":"ann@example.org","address":"1 Elm St","card_number":"4111111111111111","ssn":"123-45-6789","items":[{"sku":"A"},{"sku":"B"}]}`
	a := e.protect1(t, doc, nil, p)
	b := e.protect1(t, doc, nil, p)
	values := func(o Output) map[string]string {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(o.Body, &m); err != nil {
			t.Fatal(err)
		}
		r := map[string]string{}
		for k, v := range m {
			r[k] = string(v)
		}
		return r
	}
	va, vb := values(a), values(b)
	swap := func(body []byte, x, y string) []byte {
		s := strings.Replace(string(body), x, "\x00", 1)
		s = strings.Replace(s, y, x, 1)
		return []byte(strings.Replace(s, "\x00", y, 1))
	}
	for _, tc := range []struct {
		name string
		body []byte
		md   map[string]string
	}{
		{"transit swapped within a message", swap(a.Body, va["name"], va["email"]), a.Metadata},
		{"envelope swapped within a message", swap(a.Body, va["address"], va["card_number"]), a.Metadata},
		{"transit from another message", []byte(strings.Replace(string(a.Body), va["name"], vb["name"], 1)), a.Metadata},
		{"envelope from another message", []byte(strings.Replace(string(a.Body), va["address"], vb["address"], 1)), a.Metadata},
		{"body of another message", b.Body, a.Metadata},
		{"manifest of another message", a.Body, func() map[string]string {
			md := maps.Clone(a.Metadata)
			md[ManifestKey] = b.Metadata[ManifestKey]
			return md
		}()},
	} {
		if bytes.Equal(tc.body, a.Body) && maps.Equal(tc.md, a.Metadata) {
			t.Fatalf("%s: test did not change anything", tc.name)
		}
		if _, _, err := e.opener.Open(ctx, tc.body, tc.md); !errors.Is(err, envelope.ErrAuth) {
			t.Errorf("%s: Open = %v, want ErrAuth", tc.name, err)
		}
	}

	// A producer holding the data key can forge a valid MAC; the fields' own binding to
	// message ID and path still refuses moved transit and envelope values.
	for _, tc := range []struct {
		name string
		body []byte
		kind error
	}{
		{"transit swapped, MAC recomputed", swap(a.Body, va["name"], va["email"]), nil},
		{"envelope swapped, MAC recomputed", swap(a.Body, va["address"], va["card_number"]), envelope.ErrAuth},
		{"transit from another message, MAC recomputed", []byte(strings.Replace(string(a.Body), va["name"], vb["name"], 1)), nil},
		{"envelope from another message, MAC recomputed", []byte(strings.Replace(string(a.Body), va["address"], vb["address"], 1)), envelope.ErrAuth},
	} {
		md := e.remac(t, tc.body, a.Metadata)
		_, _, err := e.opener.Open(ctx, tc.body, md)
		if err == nil || (tc.kind != nil && !errors.Is(err, tc.kind)) {
			t.Errorf("%s: Open = %v, want an error", tc.name, err)
		}
	}
	// The remac helper itself is sound: an unchanged body with a recomputed MAC opens.
	if _, _, err := e.opener.Open(ctx, a.Body, e.remac(t, a.Body, a.Metadata)); err != nil {
		t.Errorf("recomputed MAC over the unchanged message: %v", err)
	}
}

// remac recomputes the MAC of a message over body, as only a holder of its data key can.
func (e *testEnv) remac(t *testing.T, body []byte, md map[string]string) map[string]string {
	t.Helper()
	r, err := parseReceived(md, nil)
	if err != nil {
		t.Fatal(err)
	}
	pt, err := e.kms.UnwrapDataKey(context.Background(), r.kid, r.dek)
	if err != nil {
		t.Fatal(err)
	}
	tag := gcmOf(pt).Seal(nil, nonceFor(r.seq0), nil, macAD(r.header, r.dek, r.m.unsigned, clearKeys(md), md, body))
	copy(r.m.tag[:], tag)
	md = maps.Clone(md)
	md[ManifestKey] = r.m.format()
	return md
}

func TestFieldTypeErrors(t *testing.T) {
	e := newTestEnv(t)
	const secret = "98765"
	for _, tc := range []struct {
		name, policy, doc string
		also              error
	}{
		{"number", "card=fpe", `{"card":4111111111111111}`, nil},
		{"object", "card=fpe", `{"card":{"n":"4111111111111111"}}`, nil},
		{"null", "card=fpe", `{"card":null}`, nil},
		{"letters", "card=fpe", `{"card":"4111-1111-ABCD-` + secret + `"}`, fpe.ErrNumeral},
		{"non-ASCII digits", "card=fpe", `{"card":"٤١١١١١١١١١"}`, fpe.ErrNumeral},
		{"too short", "pin=fpe", `{"pin":"` + secret + `"}`, fpe.ErrDomainTooSmall},
		{"too short with options", "card=fpe(bin,last4,luhn)", `{"card":"4111111111111111"}`, fpe.ErrDomainTooSmall},
		{"luhn", "card=fpe(luhn)", `{"card":"4111111111111112` + secret + `6"}`, fpe.ErrLuhn},
		{"empty", "card=fpe", `{"card":""}`, fpe.ErrDomainTooSmall},
	} {
		_, err := e.sealer.Protect(context.Background(), []Input{
			{Body: []byte(`{"ok":"1"}`), Policy: mustPolicy(t, "ok=envelope")},
			{Body: []byte(tc.doc), Policy: mustPolicy(t, tc.policy)},
		})
		if !errors.Is(err, ErrFieldType) || (tc.also != nil && !errors.Is(err, tc.also)) {
			t.Errorf("%s: Protect = %v, want ErrFieldType and %v", tc.name, err, tc.also)
			continue
		}
		if !strings.Contains(err.Error(), "message 1") || strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "4111") {
			t.Errorf("%s: error %q should name the message and the path, never the value", tc.name, err)
		}
	}
}

func TestProtectInputErrors(t *testing.T) {
	e := newTestEnv(t)
	p := mustPolicy(t, "name=transit")
	for _, tc := range []struct {
		name string
		in   Input
		want error
	}{
		{"not JSON", Input{Body: []byte(`{"name":"Ann"`), Policy: p}, ErrNotJSON},
		{"two values", Input{Body: []byte(`{} {}`), Policy: p}, ErrNotJSON},
		{"empty body", Input{Body: nil, Policy: p}, ErrNotJSON},
		{"reserved key", Input{Body: []byte(`{}`), Policy: p, Metadata: map[string]string{"pubcrypt-x": "1"}}, envelope.ErrInvalidInput},
		{"bad UTF-8", Input{Body: []byte(`{}`), Policy: p, Metadata: map[string]string{"k": "\xff"}}, envelope.ErrInvalidInput},
		{"bad policy", Input{Body: []byte(`{}`), Policy: Policy{{Path: "a b", Mode: Transit}}}, ErrPolicy},
	} {
		out, err := e.sealer.Protect(context.Background(), []Input{{Body: []byte(`{}`)}, tc.in})
		if !errors.Is(err, tc.want) || out != nil {
			t.Errorf("%s: Protect = %v, %v; want %v", tc.name, out, err, tc.want)
		}
	}
	// A mode whose key is not configured.
	s := NewSealer(e.vault, e.dk, Keys{Transit: "pii"}, SealerOptions{})
	for _, policy := range []string{"a=deterministic", "a=fpe"} {
		if err := s.CheckPolicy(mustPolicy(t, policy)); !errors.Is(err, ErrPolicy) {
			t.Errorf("CheckPolicy(%s) without its key = %v, want ErrPolicy", policy, err)
		}
	}
	if err := NewSealer(nil, e.dk, testKeys, SealerOptions{}).CheckPolicy(p); !errors.Is(err, ErrPolicy) {
		t.Errorf("transit without a FieldKeyring: %v", err)
	}
	if err := NewSealer(nil, e.dk, Keys{}, SealerOptions{}).CheckPolicy(mustPolicy(t, "a=envelope")); err != nil {
		t.Errorf("envelope needs no FieldKeyring: %v", err)
	}
}

func TestFailClosed(t *testing.T) {
	e := newTestEnv(t)
	p := mustPolicy(t, mixedPolicy)
	in := []Input{{Body: []byte(purchaseJSON), Policy: p}, {Body: []byte(purchaseJSON), Policy: p}}

	e.vault.failed = &keyring.Error{Op: "encrypt", KeyID: "pii", Kind: keyring.ErrUnavailable}
	if out, err := e.sealer.Protect(context.Background(), in); !errors.Is(err, keyring.ErrUnavailable) || out != nil {
		t.Errorf("key service down: Protect = %v, %v", out, err)
	}
	e.vault.failed = nil

	e.vault.mu.Lock()
	delete(e.vault.keys, "pii-det")
	e.vault.mu.Unlock()
	if out, err := e.sealer.Protect(context.Background(), in); !errors.Is(err, keyring.ErrKeyNotFound) || out != nil {
		t.Errorf("missing key: Protect = %v, %v", out, err)
	}
	e.vault.addKey("pii-det", true)

	// A per-item failure fails the whole batch.
	bad := &itemFailer{fakeVault: e.vault, failAt: 3}
	s := NewSealer(bad, e.dk, testKeys, SealerOptions{})
	if out, err := s.Protect(context.Background(), in); err == nil || out != nil || !strings.Contains(err.Error(), "message 1") {
		t.Errorf("one item failing: Protect = %v, %v", out, err)
	}
}

// itemFailer fails one item of each EncryptBatch call.
type itemFailer struct {
	*fakeVault
	failAt int
}

func (f *itemFailer) EncryptBatch(ctx context.Context, key string, items []TransitItem) error {
	err := f.fakeVault.EncryptBatch(ctx, key, items)
	if len(items) > f.failAt {
		items[f.failAt].Err = errors.New("item failed")
	}
	return err
}

func TestVersionTooOld(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ policy, key string }{
		{"card_number=fpe(bin,luhn)", "pii-fpe"},
		{"name=transit", "pii"},
		{"email=deterministic", "pii-det"},
	} {
		e := newTestEnv(t)
		out := e.protect1(t, purchaseJSON, nil, mustPolicy(t, tc.policy))
		e.vault.rotate(tc.key)
		e.vault.setMinDecrypt(tc.key, 2)
		_, _, err := e.opener.Open(ctx, out.Body, out.Metadata)
		if !errors.Is(err, keyring.ErrVersionTooOld) {
			t.Errorf("%s: Open after min_decryption_version = 2: %v, want ErrVersionTooOld", tc.policy, err)
		}
	}
}

func TestFPERotation(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e.sealer.fpe.now = func() time.Time { return clock }
	p := mustPolicy(t, "card_number=fpe(bin,luhn)")
	version := func() string {
		out := e.protect1(t, purchaseJSON, nil, p)
		if _, _, err := e.opener.Open(ctx, out.Body, out.Metadata); err != nil {
			t.Fatal(err)
		}
		m, _ := parseManifest(out.Metadata[ManifestKey], nil)
		return fmt.Sprintf("%s@%d", m.fpe, m.fpeVersion)
	}
	if v := version(); v != "pii-fpe@1" {
		t.Fatalf("first version %s", v)
	}
	e.vault.rotate("pii-fpe")
	clock = clock.Add(DefaultFPERefresh / 2)
	if v := version(); v != "pii-fpe@1" {
		t.Errorf("before the refresh interval: %s, want pii-fpe@1", v)
	}
	clock = clock.Add(DefaultFPERefresh)
	if v := version(); v != "pii-fpe@2" {
		t.Errorf("after the refresh interval: %s, want pii-fpe@2", v)
	}
	if n := e.vault.fpeCalls.Load(); n != 2+2 { // sealer: 2 latest; opener: v1, v2
		t.Errorf("%d FPE key calls, want 4", n)
	}
}

func TestDeterministicJoins(t *testing.T) {
	e := newTestEnv(t)
	p := mustPolicy(t, "email=deterministic,card=fpe(bin,luhn),items[].sku=deterministic,other=deterministic")
	a := e.protect1(t, `{"email":"a@x.org","card":"4111111111111111","items":[{"sku":"Q"}],"other":"a@x.org"}`, nil, p)
	b := e.protect1(t, `{"items":[{"sku":"R"},{"sku":"Q"}],"card":"4111111111111111","email":"a@x.org"}`, nil, p)
	var da, db struct {
		Email, Card, Other string
		Items              []struct{ SKU string }
	}
	json.Unmarshal(a.Body, &da)
	json.Unmarshal(b.Body, &db)
	if da.Email != db.Email || da.Card != db.Card || da.Items[0].SKU != db.Items[1].SKU {
		t.Errorf("equal values under one rule differ across messages: %+v %+v", da, db)
	}
	if da.Other == da.Email {
		t.Error("equal values under different rules give equal ciphertexts")
	}
}

func TestManifestBudget(t *testing.T) {
	e := newTestEnv(t)
	var rules []string
	for i := range 40 {
		rules = append(rules, fmt.Sprintf("customer.contact_details_%02d=transit", i))
	}
	p := mustPolicy(t, strings.Join(rules, ","))
	err := e.sealer.CheckPolicy(p)
	if !errors.Is(err, ErrManifest) || !strings.Contains(err.Error(), "1024") {
		t.Errorf("CheckPolicy = %v, want ErrManifest naming the 1024-byte limit", err)
	}
	if _, err := e.sealer.Protect(context.Background(), []Input{{Body: []byte(`{}`), Policy: p}}); !errors.Is(err, ErrManifest) {
		t.Errorf("Protect = %v, want ErrManifest", err)
	}
	// The largest policy that fits, protecting everything it names.
	p = p[:len(p)-1]
	for err := e.sealer.CheckPolicy(p); err != nil; err = e.sealer.CheckPolicy(p) {
		p = p[:len(p)-1]
	}
	var doc strings.Builder
	doc.WriteString(`{"customer":{`)
	for i := range p {
		if i > 0 {
			doc.WriteByte(',')
		}
		fmt.Fprintf(&doc, `"contact_details_%02d":%d`, i, i)
	}
	doc.WriteString("}}")
	out := e.protect1(t, doc.String(), nil, p)
	if n := len(out.Metadata[ManifestKey]); n > MaxManifestLen || n < MaxManifestLen-40 {
		t.Errorf("manifest of %d rules is %d bytes", len(p), n)
	}
	if body, _, err := e.opener.Open(context.Background(), out.Body, out.Metadata); err != nil || string(body) != doc.String() {
		t.Errorf("Open: %v", err)
	}
}

func TestManifestParse(t *testing.T) {
	const id = "AAAAAAAAAAAAAAAAAAAAAA"
	const tag = ";t=AAAAAAAAAAAAAAAAAAAAAA"
	good := []string{
		"v1;id=" + id + ";r=" + tag,
		"v1;id=" + id + ";tk=pii;dk=pii-det;fk=pii-fpe@12;r=name:t,email:d,card:fbc,items[].sku:e" + tag,
		"v1;id=" + id + ";fk=k@1;r=a:f,b:fblc,c:fl" + tag,
		"v1;id=" + id + ";fk=k@3;r=a:fv,b:fbcv" + tag,
	}
	for _, s := range good {
		m, err := parseManifest(s, nil)
		if err != nil {
			t.Errorf("parseManifest(%q, nil): %v", s, err)
			continue
		}
		if m.format() != s {
			t.Errorf("parseManifest(%q, nil) formats back as %q", s, m.format())
		}
	}
	for _, s := range []string{
		"",
		"v2;id=" + id + ";r=" + tag,
		"v1;id=" + id + ";r=",
		"v1;id=" + id + ";r=" + tag + "A",
		"v1;id=" + id + ";r=;t=AAAAAAAAAAAAAAAAAAAAAB",                 // non-canonical base64
		"v1;id=AAAAAAAAAAAAAAAAAAAAAB;r=" + tag,                        // non-canonical base64
		"v1;id=" + id[1:] + ";r=" + tag,                                // short id
		"v1;r=" + tag,                                                  // no id
		"v1;id=" + id + tag,                                            // no r
		"v1;id=" + id + ";r=a:t" + tag,                                 // tk missing
		"v1;id=" + id + ";tk=pii;r=a:e" + tag,                          // tk unused
		"v1;id=" + id + ";dk=x;tk=y;r=a:t,b:d" + tag,                   // order
		"v1;id=" + id + ";tk=p i;r=a:t" + tag,                          // key name
		"v1;id=" + id + ";fk=k;r=a:f" + tag,                            // no version
		"v1;id=" + id + ";fk=k@0;r=a:f" + tag,                          // version 0
		"v1;id=" + id + ";fk=k@01;r=a:f" + tag,                         // leading zero
		"v1;id=" + id + ";fk=k@99999999999;r=a:f" + tag,                // too big
		"v1;id=" + id + ";fk=k@1;r=a:fcb" + tag,                        // option order
		"v1;id=" + id + ";fk=k@1;r=a:fbb" + tag,                        // option twice
		"v1;id=" + id + ";fk=k@1;r=a:fvc" + tag,                        // vault not last
		"v1;id=" + id + ";fk=k@1;r=a:fv,b:fc" + tag,                    // vault and local FPE
		"v1;id=" + id + ";tk=k;r=a:tv" + tag,                           // vault on transit
		"v1;id=" + id + ";tk=k;r=a:tb" + tag,                           // option on transit
		"v1;id=" + id + ";r=a:x" + tag,                                 // mode
		"v1;id=" + id + ";r=a:e,a:e" + tag,                             // duplicate
		"v1;id=" + id + ";r=a:e,a.b:e" + tag,                           // nested
		"v1;id=" + id + ";r=a b:e" + tag,                               // path
		"v1;id=" + id + ";r=a:e," + tag,                                // trailing comma
		"v1;id=" + id + ";r=a" + tag,                                   // no mode
		"v1;id=" + id + ";x=1;r=" + tag,                                // unknown field
		"v1;id=" + id + ";r=;r=" + tag,                                 // repeated
		"v1;id=" + id + ";r=" + tag + tag,                              // repeated tag
		"v1;id=" + id + ";r=" + strings.Repeat("a", 1100) + ":e" + tag, // too long
	} {
		if _, err := parseManifest(s, nil); !errors.Is(err, ErrManifest) || !errors.Is(err, envelope.ErrMalformed) {
			t.Errorf("parseManifest(%q, nil) = %v, want ErrManifest and ErrMalformed", s, err)
		}
	}
}

func TestHeaderParse(t *testing.T) {
	h := formatHeader("orders", 1<<40+5)
	if kid, seq, err := parseHeader(h); err != nil || kid != "orders" || seq != 1<<40+5 {
		t.Fatalf("parseHeader(%q) = %q %d %v", h, kid, seq, err)
	}
	for _, s := range []string{
		h + ";m=1", h + ";", "v2" + h[2:], "v1;alg=A128GCM;kid=orders;n=AAAAAAAAAAAAAAAF",
		"v1;alg=A256GCM;kid=;n=AAAAAAAAAAAAAAAF", "v1;alg=A256GCM;kid=orders;n=AAAAAAAAAAAAAAA",
		"v1;alg=A256GCM;kid=orders;n=AAAAAAAAAAAAAAA=", "v1;alg=A256GCM;kid=orders;n=AQAAAAAAAAAAAAAF",
	} {
		if _, _, err := parseHeader(s); !errors.Is(err, envelope.ErrMalformed) {
			t.Errorf("parseHeader(%q) = %v, want ErrMalformed", s, err)
		}
	}
}

// TestEnvelopeRefuses pins what the wiring relies on: a field-protected message is never
// taken for a whole-body envelope message (envelope.Parse calls it malformed), and a
// whole-body message is not IsFields.
func TestEnvelopeRefuses(t *testing.T) {
	e := newTestEnv(t)
	out := e.protect1(t, purchaseJSON, nil, mustPolicy(t, "name=envelope"))
	if _, err := envelope.Parse(out.Metadata); !errors.Is(err, envelope.ErrMalformed) {
		t.Errorf("envelope.Parse of a field-protected message = %v, want ErrMalformed", err)
	}
	md := maps.Clone(out.Metadata)
	delete(md, ManifestKey)
	if _, _, err := e.opener.Open(context.Background(), out.Body, md); !errors.Is(err, envelope.ErrMalformed) {
		t.Errorf("Open without the manifest = %v, want ErrMalformed", err)
	}
	// With the manifest stripped, a receiver that dispatches on IsFields hands the
	// message to the envelope, which refuses it: the body is not its ciphertext.
	env, err := envelope.Parse(md)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := e.kms.UnwrapDataKey(context.Background(), env.KeyID, env.Wrapped)
	if _, _, err := env.Open(gcmOf(key), out.Body, md); !errors.Is(err, envelope.ErrAuth) {
		t.Errorf("envelope Open of a field-protected body = %v, want ErrAuth", err)
	}
}

// TestConcurrent protects from many goroutines under one DataKeys (sequence numbers must
// stay contiguous per message) and opens everything.
func TestConcurrent(t *testing.T) {
	e := newTestEnv(t)
	p := mustPolicy(t, mixedPolicy)
	var wg sync.WaitGroup
	outs := make([][]Output, 8)
	errs := make([]error, 8)
	for g := range outs {
		wg.Go(func() {
			for range 10 {
				o, err := e.sealer.Protect(context.Background(), []Input{{Body: []byte(purchaseJSON), Policy: p}})
				if err != nil {
					errs[g] = err
					return
				}
				outs[g] = append(outs[g], o...)
			}
		})
	}
	wg.Wait()
	for g := range outs {
		if errs[g] != nil {
			t.Fatal(errs[g])
		}
		for _, o := range outs[g] {
			wg.Go(func() {
				if _, _, err := e.opener.Open(context.Background(), o.Body, o.Metadata); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
}

func TestPerMessageDataKeys(t *testing.T) {
	// With ReusePolicy.PerMessage every message has a fresh data key; its envelope fields
	// still get consecutive sequence numbers under it.
	e := newTestEnv(t)
	dk, _ := keyring.NewDataKeys(e.kms, keyring.ReusePolicy{PerMessage: true})
	s := NewSealer(e.vault, dk, testKeys, SealerOptions{})
	p := mustPolicy(t, "name=transit,address=envelope,items[].sku=envelope")
	out, err := s.Protect(context.Background(), []Input{{Body: []byte(purchaseJSON), Policy: p}, {Body: []byte(purchaseJSON), Policy: p}})
	if err != nil {
		t.Fatal(err)
	}
	if out[0].Metadata[envelope.DEKKey] == out[1].Metadata[envelope.DEKKey] {
		t.Error("PerMessage: two messages share a data key")
	}
	for _, o := range out {
		if _, _, err := e.opener.Open(context.Background(), o.Body, o.Metadata); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.kms.gens.Load(); n != 2 {
		t.Errorf("%d data keys generated for 2 messages, want 2", n)
	}
}

// TestSequenceNumbers checks that a message takes 1 + (envelope fields) numbers.
func TestSequenceNumbers(t *testing.T) {
	e := newTestEnv(t)
	p := mustPolicy(t, "name=envelope,address=envelope,items[].sku=envelope") // 5 envelope values
	seqs := func() uint64 {
		out := e.protect1(t, purchaseJSON, nil, p)
		r, err := parseReceived(out.Metadata, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r.seq0
	}
	a, b := seqs(), seqs()
	if b-a != 6 {
		t.Errorf("consecutive messages start at %d and %d, want 6 apart", a, b)
	}
}

func TestErrorsNameNoSecrets(t *testing.T) {
	e := newTestEnv(t)
	out := e.protect1(t, purchaseJSON, purchaseMeta, mustPolicy(t, mixedPolicy))
	b := bytes.Clone(out.Body)
	b[10] ^= 1
	_, _, err := e.opener.Open(context.Background(), b, out.Metadata)
	m, _ := parseManifest(out.Metadata[ManifestKey], nil)
	if !strings.Contains(err.Error(), m.idText()) {
		t.Errorf("error %q does not name the message ID", err)
	}
	for _, v := range append(sensitiveValues, out.Metadata[envelope.DEKKey]) {
		if strings.Contains(err.Error(), strings.Trim(v, `"`)) {
			t.Errorf("error %q contains %s", err, v)
		}
	}
}

func TestIsFields(t *testing.T) {
	if IsFields(nil) || IsFields(map[string]string{"pubcrypt": "x"}) || !IsFields(map[string]string{ManifestKey: ""}) {
		t.Error("IsFields")
	}
	if !reflect.DeepEqual(Policy(nil).String(), "") {
		t.Error("empty policy string")
	}
}
