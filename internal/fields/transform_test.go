package fields

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/pubcrypt/pubcrypt/internal/envelope"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// fakeTransformer is fakeVault plus a stand-in for Vault Transform (keyring.Transformer):
// each role and transformation shifts digits and letters by its own amount, keeping the
// format, as an FPE transformation would. It records one line per call.
type fakeTransformer struct {
	*fakeVault
	tmu    sync.Mutex
	tcalls []string // "encode role/transformation n", "decode ..."
	fail   error
}

var _ keyring.Transformer = (*fakeTransformer)(nil)

func (f *fakeTransformer) shift(role, transformation string, values []string, dir int) ([]string, error) {
	k := 1
	for _, c := range role + "/" + transformation {
		k += int(c)
	}
	out := make([]string, len(values))
	for i, v := range values {
		b := []byte(v)
		for j, c := range b {
			switch {
			case '0' <= c && c <= '9':
				b[j] = '0' + byte(((int(c-'0')+dir*k)%10+10)%10)
			case 'a' <= c && c <= 'z':
				b[j] = 'a' + byte(((int(c-'a')+dir*k)%26+26)%26)
			case 'A' <= c && c <= 'Z':
				b[j] = 'A' + byte(((int(c-'A')+dir*k)%26+26)%26)
			}
		}
		out[i] = string(b)
	}
	return out, nil
}

func (f *fakeTransformer) record(op, role, transformation string, n int) error {
	f.tmu.Lock()
	defer f.tmu.Unlock()
	f.tcalls = append(f.tcalls, fmt.Sprintf("%s %s/%s %d", op, role, transformation, n))
	return f.fail
}

func (f *fakeTransformer) TransformEncode(ctx context.Context, role, transformation string, values []string) ([]string, error) {
	if err := f.record("encode", role, transformation, len(values)); err != nil {
		return nil, err
	}
	return f.shift(role, transformation, values, 1)
}

func (f *fakeTransformer) TransformDecode(ctx context.Context, role, transformation string, values []string) ([]string, error) {
	if err := f.record("decode", role, transformation, len(values)); err != nil {
		return nil, err
	}
	return f.shift(role, transformation, values, -1)
}

func (f *fakeTransformer) calls() []string {
	f.tmu.Lock()
	defer f.tmu.Unlock()
	c := append([]string(nil), f.tcalls...)
	f.tcalls = nil
	return c
}

func newTransformEnv(t testing.TB) (*fakeTransformer, *Sealer, *keyring.DataKeys, *fakeKMS) {
	t.Helper()
	kms := &fakeKMS{}
	dk, err := keyring.NewDataKeys(kms, keyring.ReusePolicy{})
	if err != nil {
		t.Fatal(err)
	}
	ft := &fakeTransformer{fakeVault: newFakeVault()}
	return ft, NewSealer(ft, dk, testKeys, SealerOptions{}), dk, kms
}

const transformPolicy = "name=transit,card_number=transform(payments/card-fpe),email=transform(pii),items[].sku=transform(payments/card-fpe)"

// TestTransformRoundTrip protects a batch with transform rules: one encode call per role
// and transformation for the whole batch, the role in the manifest, and a consumer with
// no configuration (a fresh Opener) restores every body byte for byte.
func TestTransformRoundTrip(t *testing.T) {
	ft, sealer, _, _ := newTransformEnv(t)
	ctx := context.Background()
	p := mustPolicy(t, transformPolicy)
	second := strings.Replace(purchaseJSON, `"zanele@example.org"`, `"\u007aanele@example.org"`, 1)
	out, err := sealer.Protect(ctx, []Input{
		{Body: []byte(purchaseJSON), Metadata: purchaseMeta, Policy: p},
		{Body: []byte(second), Metadata: purchaseMeta, Policy: p},
	})
	if err != nil {
		t.Fatalf("Protect: %v", err)
	}
	if got, want := ft.calls(), []string{"encode payments/card-fpe 8", "encode pii/ 2"}; !slicesEqualSorted(got, want) {
		t.Errorf("transform calls = %q, want %q (one per role and transformation)", got, want)
	}
	if n := ft.encCalls.Load(); n != 1 {
		t.Errorf("%d transit calls, want 1", n)
	}
	for i, o := range out {
		m := o.Metadata[ManifestKey]
		if !strings.Contains(m, ";tk=pii;r=name:t,card_number:x(payments/card-fpe),email:x(pii),items[].sku:x(payments/card-fpe);t=") {
			t.Errorf("message %d: manifest %q lacks the transform tokens", i, m)
		}
		var doc struct {
			Email string `json:"email"`
			Card  string `json:"card_number"`
			Items []struct {
				SKU string `json:"sku"`
			} `json:"items"`
		}
		if err := json.Unmarshal(o.Body, &doc); err != nil {
			t.Fatal(err)
		}
		want, _ := ft.shift("payments", "card-fpe", []string{"4111 1111 1111 1111", "BK-101"}, 1)
		if doc.Card != want[0] || doc.Items[0].SKU != want[1] || doc.Items[2].SKU != want[1] {
			t.Errorf("message %d: card %q, sku %q: want Vault's answers %q", i, doc.Card, doc.Items[0].SKU, want)
		}
		if doc.Email == "zanele@example.org" || len(doc.Email) != len("zanele@example.org") {
			t.Errorf("message %d: email %q", i, doc.Email)
		}
	}
	if out[0].Metadata[ManifestKey] == out[1].Metadata[ManifestKey] {
		t.Error("two messages share a manifest")
	}

	// The consumer: a fresh Opener, no policy, no role configured.
	consumer := &fakeTransformer{fakeVault: ft.fakeVault}
	opener := NewOpener(consumer, keyring.NewUnwrapCache(&fakeKMS{}, keyring.CacheOptions{}))
	for i, want := range []string{purchaseJSON, strings.Replace(second, `\u007a`, "z", 1)} {
		body, md, err := opener.Open(ctx, out[i].Body, out[i].Metadata)
		if err != nil {
			t.Fatalf("Open %d: %v", i, err)
		}
		if string(body) != want {
			t.Errorf("Open %d body =\n%s\nwant\n%s", i, body, want)
		}
		if !maps.Equal(md, purchaseMeta) {
			t.Errorf("Open %d metadata = %v", i, md)
		}
		if got, want := consumer.calls(), []string{"decode payments/card-fpe 4", "decode pii/ 1"}; !slicesEqualSorted(got, want) {
			t.Errorf("Open %d: transform calls = %q, want %q", i, got, want)
		}
	}

	// A changed transform value fails the MAC before any decode call.
	tampered := strings.Replace(string(out[0].Body), `"card_number": "`, `"card_number": "9`, 1)
	if tampered == string(out[0].Body) {
		t.Fatal("test did not change the body")
	}
	if _, _, err := opener.Open(ctx, []byte(tampered), out[0].Metadata); !errors.Is(err, envelope.ErrAuth) {
		t.Errorf("tampered Open: %v, want ErrAuth", err)
	}
	if c := consumer.calls(); len(c) != 0 {
		t.Errorf("tampered Open made transform calls %q", c)
	}
}

func slicesEqualSorted(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

func TestTransformPolicy(t *testing.T) {
	for _, tc := range []struct{ in, out string }{
		{"a=transform(r)", "a=transform(r)"},
		{" a = transform( r / t.1 ) ", "a=transform(r/t.1)"},
		{"a=transform(pay-ments_1/card), b=fpe(luhn)", "a=transform(pay-ments_1/card),b=fpe(luhn)"},
	} {
		p, err := ParsePolicy(tc.in)
		if err != nil {
			t.Errorf("ParsePolicy(%q): %v", tc.in, err)
			continue
		}
		if p.String() != tc.out {
			t.Errorf("ParsePolicy(%q) = %q, want %q", tc.in, p, tc.out)
		}
		if q, err := ParsePolicy(p.String()); err != nil || !reflect.DeepEqual(p, q) {
			t.Errorf("ParsePolicy(%q) = %+v, %v; want %+v", p.String(), q, err, p)
		}
	}
	if p := mustPolicy(t, "a=transform(r/t)"); p[0].Mode != Transform || p[0].Role != "r" || p[0].Transformation != "t" {
		t.Errorf("rule = %+v", p[0])
	}
	for _, s := range []string{
		"a=transform", "a=transform()", "a=transform(r/)", "a=transform(/t)", "a=transform(r/t/u)",
		"a=transform(r t)", "a=transform(r", "a=transform(r,t)", "a=transform(r)x",
		"a=fpe(r)", "a=transit(r)", "a=transform(" + strings.Repeat("r", 129) + ")",
	} {
		if _, err := ParsePolicy(s); !errors.Is(err, ErrPolicy) {
			t.Errorf("ParsePolicy(%q) = %v, want ErrPolicy", s, err)
		}
	}
	for _, r := range []Rule{
		{Path: "a", Mode: Transform},
		{Path: "a", Mode: FPE, Role: "r"},
		{Path: "a", Mode: Transit, Transformation: "t"},
		{Path: "a", Mode: Transform, Role: "r", Luhn: true},
		{Path: "a", Mode: Transform + 1, Role: "r"},
	} {
		if err := (Policy{r}).Validate(); !errors.Is(err, ErrPolicy) {
			t.Errorf("Validate(%+v) = %v, want ErrPolicy", r, err)
		}
	}

	type tagged struct {
		SSN  string `json:"ssn" pubcrypt:"transform,pii/ssn-fpe"`
		Card string `json:"card" pubcrypt:"transform,payments"`
	}
	p, err := PolicyOf(reflect.TypeFor[tagged]())
	if err != nil || p.String() != "ssn=transform(pii/ssn-fpe),card=transform(payments)" {
		t.Errorf("PolicyOf = %q, %v", p, err)
	}
	type onInt struct {
		N int `json:"n" pubcrypt:"transform,r"`
	}
	if _, err := PolicyOf(reflect.TypeFor[onInt]()); err == nil || !strings.Contains(err.Error(), "transform needs a field that encodes as a JSON string") {
		t.Errorf("PolicyOf(int field) = %v", err)
	}
}

func TestTransformManifest(t *testing.T) {
	const id = "AAAAAAAAAAAAAAAAAAAAAA"
	const tag = ";t=AAAAAAAAAAAAAAAAAAAAAA"
	for _, s := range []string{
		"v1;id=" + id + ";r=a:x(r)" + tag,
		"v1;id=" + id + ";tk=k;r=a:x(r/t-1),b[]:t,c:x(r)" + tag,
	} {
		m, err := parseManifest(s, nil)
		if err != nil {
			t.Errorf("parseManifest(%q): %v", s, err)
		} else if m.format() != s {
			t.Errorf("parseManifest(%q) formats back as %q", s, m.format())
		}
	}
	for _, s := range []string{
		"v1;id=" + id + ";r=a:x" + tag,
		"v1;id=" + id + ";r=a:x()" + tag,
		"v1;id=" + id + ";r=a:x(r/)" + tag,
		"v1;id=" + id + ";r=a:x(/t)" + tag,
		"v1;id=" + id + ";r=a:x(r/t/u)" + tag,
		"v1;id=" + id + ";r=a:x(r" + tag,
		"v1;id=" + id + ";r=a:x(r)b" + tag,
		"v1;id=" + id + ";r=a:x(r))" + tag,
		"v1;id=" + id + ";r=a:x(r t)" + tag,
		"v1;id=" + id + ";r=a:xb(r)" + tag,
		"v1;id=" + id + ";r=a:x(" + strings.Repeat("r", 129) + ")" + tag,
		"v1;id=" + id + ";tk=k;r=a:x(r)" + tag, // tk unused
	} {
		if _, err := parseManifest(s, nil); !errors.Is(err, ErrManifest) || !errors.Is(err, envelope.ErrMalformed) {
			t.Errorf("parseManifest(%q) = %v, want ErrManifest and ErrMalformed", s, err)
		}
	}
}

// TestTransformFailClosed: a value that is not a string, a key service without
// Transform, and a failing Transform all give no output.
func TestTransformFailClosed(t *testing.T) {
	ft, sealer, dk, _ := newTransformEnv(t)
	ctx := context.Background()
	p := mustPolicy(t, "amount=transform(r)")
	if _, err := sealer.Protect(ctx, []Input{{Body: []byte(purchaseJSON), Policy: p}}); !errors.Is(err, ErrFieldType) {
		t.Errorf("Protect(number) = %v, want ErrFieldType", err)
	}
	if c := ft.calls(); len(c) != 0 {
		t.Errorf("calls %q for a refused message", c)
	}

	plain := NewSealer(newFakeVault(), dk, testKeys, SealerOptions{})
	if err := plain.CheckPolicy(mustPolicy(t, "name=transform(r)")); !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), "keyring.Transformer") {
		t.Errorf("CheckPolicy without a Transformer = %v, want ErrPolicy", err)
	}

	ft.fail = &keyring.Error{Op: "encode", KeyID: "r", Kind: keyring.ErrTransformNotAvailable}
	out, err := sealer.Protect(ctx, []Input{
		{Body: []byte(purchaseJSON), Policy: mustPolicy(t, "name=envelope")},
		{Body: []byte(purchaseJSON), Policy: mustPolicy(t, "name=transform(r)")},
	})
	if !errors.Is(err, keyring.ErrTransformNotAvailable) || out != nil {
		t.Errorf("Protect with Transform unavailable = %d outputs, %v", len(out), err)
	}
}
