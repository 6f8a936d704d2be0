package fields

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/pubcrypt/pubcrypt/fault"
)

// Deny-by-default policies, wildcards and unmatched bodies: docs/FIELDS.md sections
// 4.1-4.5 and the v2 manifest of section 6.

func TestParseDenyPolicy(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Policy
		str  string // String(), when it differs from in
	}{
		{in: "default=envelope", want: Policy{{Path: DefaultPath, Mode: Envelope}}},
		{
			in: "default=envelope; keep=order_id,created_at,items[].sku; **.card_number=fpe(bin,luhn)",
			want: Policy{
				{Path: DefaultPath, Mode: Envelope},
				{Path: "order_id", Mode: Keep}, {Path: "created_at", Mode: Keep}, {Path: "items[].sku", Mode: Keep},
				{Path: "**.card_number", Mode: FPE, KeepBIN: true, Luhn: true},
			},
			str: "default=envelope;order_id=keep,created_at=keep,items[].sku=keep,**.card_number=fpe(bin,luhn)",
		},
		{
			in:   "name=transit;unmatched=refuse",
			want: Policy{{Path: "name", Mode: Transit}, {Path: UnmatchedPath, Unmatched: UnmatchedRefuse}},
		},
		{in: "unmatched=clear", want: Policy{{Path: UnmatchedPath, Unmatched: UnmatchedClear}}},
		{in: "unmatched=body", want: Policy{{Path: UnmatchedPath}}},
		{in: "items[].*=envelope", want: Policy{{Path: "items[].*", Mode: Envelope}}},
		{in: "*=transit", want: Policy{{Path: "*", Mode: Transit}}},
		{in: "*[].x=transit", want: Policy{{Path: "*[].x", Mode: Transit}}},
		{in: "a.**.b[]=transit", want: Policy{{Path: "a.**.b[]", Mode: Transit}}},
		{in: "default=transit;id=keep", want: Policy{{Path: DefaultPath, Mode: Transit}, {Path: "id", Mode: Keep}}},
		// Precedence decides these value by value (section 4.4): no error.
		{in: "default=envelope;keep=meta;**.ssn=transit", want: Policy{{Path: DefaultPath, Mode: Envelope}, {Path: "meta", Mode: Keep}, {Path: "**.ssn", Mode: Transit}}, str: "default=envelope;meta=keep,**.ssn=transit"},
		{in: "address=transit,**.city=envelope", want: Policy{{Path: "address", Mode: Transit}, {Path: "**.city", Mode: Envelope}}},
		{in: "user.ssn=deterministic,**.ssn=envelope", want: Policy{{Path: "user.ssn", Mode: Deterministic}, {Path: "**.ssn", Mode: Envelope}}},
		{in: "**.card=fpe,items[].*=envelope", want: Policy{{Path: "**.card", Mode: FPE}, {Path: "items[].*", Mode: Envelope}}},
		{in: "a.*=transit,*.b[]=envelope", want: Policy{{Path: "a.*", Mode: Transit}, {Path: "*.b[]", Mode: Envelope}}}, // same rank, never one value
	} {
		p, err := ParsePolicy(tc.in)
		if err != nil {
			t.Errorf("ParsePolicy(%q): %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(p, tc.want) {
			t.Errorf("ParsePolicy(%q) = %#v, want %#v", tc.in, p, tc.want)
		}
		str := tc.str
		if str == "" {
			str = strings.ReplaceAll(tc.in, "; ", ";")
		}
		if p.String() != str {
			t.Errorf("ParsePolicy(%q).String() = %q, want %q", tc.in, p.String(), str)
		}
		if again, err := ParsePolicy(p.String()); err != nil || !reflect.DeepEqual(again, p) {
			t.Errorf("String() of %q does not parse back: %v", tc.in, err)
		}
	}
}

func TestParseDenyPolicyErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"default=fpe", "want default=transit or default=envelope"},
		{"default=deterministic", "want default=transit or default=envelope"},
		{"default=envelope;default=transit", "default given twice"},
		{"keep=id", "keep rules need a default"},
		{"id=keep", "keep rules need a default"},
		{"default=envelope;keep=", "keep= wants paths"},
		{"default=envelope;keep=a,,b", "keep= wants paths"},
		{"unmatched=encrypt", "want body, refuse or clear"},
		{"unmatched=body;unmatched=clear", "unmatched given twice"},
		{"name=transit,default=envelope", "option of the text form"},
		{"a=transit;", "empty rule"},
		{"**=envelope", `"**" must be followed by a key`},
		{"a.**=envelope", `"**" must be followed by a key`},
		{"**.**.a=envelope", `"**.**" is "**"`},
		{"a*=transit", "not allowed"},
		{"**[].a=transit", "not allowed"},
		{"default=envelope;keep=a;a.b=keep", "lies inside"},
		{"default=envelope;keep=a.b;a=transit", "contains another"},
		{"**.x=transit,**.x=envelope", "appears twice"},
		{"a.*=transit,*.b=envelope", "neither is more specific"},
		{"**.card=transit,**.card[]=envelope,x.**.card=envelope", "neither is more specific"},
		{"default=envelope;id=keep(bin)", "takes no options"},
	} {
		_, err := ParsePolicy(tc.in)
		if !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParsePolicy(%q) = %v, want ErrPolicy containing %q", tc.in, err, tc.want)
		}
	}
	// Options as rules of a Policy are checked as strictly.
	for _, p := range []Policy{
		{{Path: DefaultPath, Mode: Envelope, Luhn: true}},
		{{Path: UnmatchedPath, Mode: Transit}},
		{{Path: UnmatchedPath, Unmatched: 7}},
		{{Path: "a", Mode: Transit, Unmatched: UnmatchedClear}},
	} {
		if err := p.Validate(); !errors.Is(err, ErrPolicy) {
			t.Errorf("Validate(%#v) = %v, want ErrPolicy", p, err)
		}
	}
}

func TestIntersect(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"a.*", "*.b", true},
		{"a.*", "*.b[]", false},
		{"**.x", "a.b.x", true},
		{"**.x", "a.b.y", false},
		{"**.x", "x", true},
		{"**.x", "**.y", false},
		{"**.x", "a.**.x", true},
		{"items[].*", "**.sku", true},
		{"items[].*", "items.*", false},
		{"*", "**.a", true},
		{"*[].b", "a.**.b", true},
		{"*[].b", "a.**.c", false},
	} {
		a, _ := parsePath(tc.a)
		b, _ := parsePath(tc.b)
		if got := intersect(a, b); got != tc.want || intersect(b, a) != tc.want {
			t.Errorf("intersect(%q, %q) = %t, want %t", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestLocateWildcards(t *testing.T) {
	b64k := func(k string) string { return "{" + base64.RawURLEncoding.EncodeToString([]byte(k)) + "}" }
	for _, tc := range []struct {
		name, policy, doc string
		want              []string // "concrete path rule=raw value"
	}{
		{"** at every depth, top level included", "**.card_number=transit",
			`{"card_number":"1","payment":{"card_number":"2"},"items":[{"card_number":3},[{"card_number":[4]}]],"Card_Number":"5"}`,
			[]string{`card_number 0="1"`, `payment.card_number 0="2"`, `items[0].card_number 0=3`, `items[1][0].card_number 0=[4]`}},
		{"outermost value wins over one inside it", "**.x=transit", `{"x":{"x":1},"a":{"x":{"x":2}}}`,
			[]string{`x 0={"x":1}`, `a.x 0={"x":2}`}},
		{"items[].* is every member of each element", "items[].*=envelope", `{"items":[{"a":1,"b":{"c":2}},"x",[{"d":3}]],"a":0}`,
			[]string{`items[0].a 0=1`, `items[0].b 0={"c":2}`}},
		{"* is one name step", "*.city=transit", `{"home":{"city":"Cork"},"work":{"city":"Oslo"},"city":"x","l":[{"city":"y"}]}`,
			[]string{`home.city 0="Cork"`, `work.city 0="Oslo"`}},
		{"* matches keys the grammar cannot name", "*=transit", `{"e mail":"a","":1,"ok":2}`,
			[]string{b64k("e mail") + ` 0="a"`, `{} 0=1`, `ok 0=2`}},
		{"duplicates, document order", "*.v=transit", `{"a":{"v":1},"a":{"v":2},"b":{"v":3}}`,
			[]string{`a.v 0=1`, `a.v 0=2`, `b.v 0=3`}},
		{"literal beats wildcard", "**.ssn=envelope,user.ssn=deterministic", `{"user":{"ssn":"1"},"ssn":"2","x":{"ssn":"3"}}`,
			[]string{`user.ssn 1="1"`, `ssn 0="2"`, `x.ssn 0="3"`}},
		{"* beats **", "**.b=envelope,a.*=transit", `{"a":{"b":1},"c":{"b":2}}`,
			[]string{`a.b 1=1`, `c.b 0=2`}},
		{"default: every scalar, shape kept", "default=envelope",
			`{"id":1,"Name":"Ann","payment":{"card_number":"4111","amount":1.5},"items":[{"sku":"A","n":null}],"tags":[],"o":{},"f":true}`,
			[]string{`id 0=1`, `Name 0="Ann"`, `payment.card_number 0="4111"`, `payment.amount 0=1.5`, `items[0].sku 0="A"`, `items[0].n 0=null`, `f 0=true`}},
		{"keep, and a rule inside a kept value", "default=envelope;keep=order_id,meta,items[].sku;**.ssn=transit",
			`{"order_id":"o-1","meta":{"src":"web","ssn":"123"},"items":[{"sku":"A","qty":2}],"email":"a@b"}`,
			[]string{`meta.ssn 4="123"`, `items[0].qty 0=2`, `email 0="a@b"`}},
		{"a rule beats the default; a protected container is protected whole", "default=transit;address=envelope",
			`{"address":{"city":"Cork","zip":1},"n":2}`,
			[]string{`address 1={"city":"Cork","zip":1}`, `n 0=2`}},
		{"a kept scalar, a kept container", "default=envelope;keep=a,b",
			`{"a":1,"b":{"c":[2,3]},"d":4}`, []string{`d 0=4`}},
		{"top-level array: nothing (section 4.5)", "default=envelope;**.a=transit", `[{"a":1},2]`, nil},
		{"top-level string: nothing", "default=envelope", `"secret"`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := compile(mustPolicy(t, tc.policy))
			if err != nil {
				t.Fatal(err)
			}
			ms, err := locate([]byte(tc.doc), c)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range ms {
				got = append(got, fmt.Sprintf("%s %d=%s", m.path, m.rule, tc.doc[m.start:m.end]))
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
			want, err := refLocate([]byte(tc.doc), c)
			if err != nil || len(want) != len(ms) {
				t.Fatalf("the reference walk finds %d values (%v), the scanner %d", len(want), err, len(ms))
			}
		})
	}
}

// TestDenyRoundTrip: a deny-by-default policy protects the canaries of fields it does
// not name (a new top-level field, one nested deeper, a case variant, one inside an
// array element), the receiver restores the body byte for byte from the manifest alone,
// and the manifest is v2 with the default and the keep rules that kept something.
func TestDenyRoundTrip(t *testing.T) {
	e := newTestEnv(t)
	const policy = "default=envelope; keep=order_id,created_at,items[].sku,unused; **.card_number=fpe(bin,luhn)"
	body := `{"order_id":"ord-1","created_at":"2026-12-03","Name":"CANARY-NAME","email":"CANARY-EMAIL",` +
		`"payment":{"card_number":"4111 1111 1111 1111","holder":{"card_number":"5500 0000 0000 0004"},"amount":12.5},` +
		`"items":[{"sku":"BK-1","note":"CANARY-NOTE","qty":2}],"tags":[],"gift":true}`
	out := e.protect1(t, body, map[string]string{"k": "v"}, mustPolicy(t, policy))
	for _, canary := range []string{"CANARY", "4111 1111 1111 1111", "5500 0000 0000 0004", "12.5", "true"} {
		if bytes.Contains(out.Body, []byte(canary)) {
			t.Errorf("%q is in clear in the body sent: %s", canary, out.Body)
		}
	}
	for _, clear := range []string{`"order_id":"ord-1"`, `"created_at":"2026-12-03"`, `"sku":"BK-1"`, `"tags":[]`, `"card_number":"4111 11`} {
		if !bytes.Contains(out.Body, []byte(clear)) {
			t.Errorf("%q should stay readable: %s", clear, out.Body)
		}
	}
	man := out.Metadata[ManifestKey]
	if !strings.HasPrefix(man, "v2;") || !strings.Contains(man, ";r=order_id:k,created_at:k,items[].sku:k,**.card_number:fbc;d=e;t=") {
		t.Errorf("manifest = %s", man)
	}
	got, md, err := e.opener.Open(context.Background(), out.Body, out.Metadata)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != body || md["k"] != "v" {
		t.Errorf("Open = %s %v", got, md)
	}
}

// TestUnmatched: a JSON body whose top-level value is not an object is routed by the
// policy's choice; Protect itself refuses one unless the policy says clear.
func TestUnmatched(t *testing.T) {
	e := newTestEnv(t)
	for _, tc := range []struct {
		policy, body string
		want         Unmatched
		unmatched    bool
	}{
		{"name=transit", `["a"]`, UnmatchedBody, true},
		{"name=transit", ` "a string" `, UnmatchedBody, true},
		{"default=envelope;unmatched=refuse", `42`, UnmatchedRefuse, true},
		{"default=envelope;unmatched=clear", `null`, UnmatchedClear, true},
		{"name=transit", ` {"a":1}`, 0, false},
		{"name=transit", `not json`, 0, false},
		{"name=transit", `[1,`, 0, false},
	} {
		p := mustPolicy(t, tc.policy)
		u, ok := p.Unmatched([]byte(tc.body))
		if u != tc.want || ok != tc.unmatched {
			t.Errorf("%q on %q: Unmatched = %v %t, want %v %t", tc.policy, tc.body, u, ok, tc.want, tc.unmatched)
		}
		if !ok {
			continue
		}
		out, err := e.sealer.Protect(context.Background(), []Input{{Body: []byte(tc.body), Policy: p}})
		if tc.want == UnmatchedClear {
			if err != nil || string(out[0].Body) != tc.body || !strings.Contains(out[0].Metadata[ManifestKey], ";r=;d=e;") {
				t.Errorf("%q: Protect = %v, %v", tc.policy, out, err)
			}
			continue
		}
		if !errors.Is(err, ErrUnmatched) || !fault.IsMessage(err) {
			t.Errorf("%q on %q: Protect = %v, want ErrUnmatched of class message", tc.policy, tc.body, err)
		}
	}
}

// TestManifestV2Strict: a v2 manifest is read as strictly as a v1 one.
func TestManifestV2Strict(t *testing.T) {
	e := newTestEnv(t)
	out := e.protect1(t, `{"id":1,"a":"x"}`, nil, mustPolicy(t, "default=transit;keep=id"))
	man := out.Metadata[ManifestKey]
	if _, err := parseManifest(man, nil); err != nil {
		t.Fatalf("%s: %v", man, err)
	}
	for _, bad := range []string{
		strings.Replace(man, "v2;", "v1;", 1),          // v1 has no default
		strings.Replace(man, ";d=t", ";d=x", 1),        // unknown default mode
		strings.Replace(man, ";d=t", "", 1),            // keep without a default
		strings.Replace(man, ";d=t", ";d=t;d=t", 1),    // twice
		strings.Replace(man, "id:k", "id:k,id.x:e", 1), // literal inside another
		strings.Replace(man, "id:k", "@default:t", 1),  // the default written as a rule
	} {
		if _, err := parseManifest(bad, nil); err == nil {
			t.Errorf("parseManifest(%s) accepted", bad)
		}
	}
	// A v2 manifest whose rules v1 could say is not canonical.
	v1 := e.protect1(t, `{"a":"x"}`, nil, mustPolicy(t, "a=transit")).Metadata[ManifestKey]
	if _, err := parseManifest("v2"+v1[2:], nil); err == nil {
		t.Errorf("v2 with v1 rules accepted")
	}
}
