package fields

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"testing"

	"github.com/pubcrypt/pubcrypt/internal/envelope"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// The fuzz targets of the field format. scripts/fuzz runs each for a set time; plain
// `go test` runs their seeds (and testdata/fuzz/<Target>/, if any) as unit tests.

// maxFuzzDoc bounds the JSON documents the targets try: the scanner is linear, and
// larger inputs only make each exec slower. A policy or manifest is far shorter.
const (
	maxFuzzDoc  = 64 << 10
	maxFuzzText = 4 << 10
)

// FuzzParseManifest: parsing never panics, fails only with ErrManifest (and
// envelope.ErrMalformed), and what parses formats back to itself, with and without the
// Opener's cache of compiled rules.
func FuzzParseManifest(f *testing.F) {
	for _, s := range []string{
		"v1;id=AAAAAAAAAAAAAAAAAAAAAA;r=;t=AAAAAAAAAAAAAAAAAAAAAA",
		"v1;id=AAAAAAAAAAAAAAAAAAAAAA;tk=pii;dk=d;fk=f@3;r=a:t,b[].c:d,e:fbc,g:e;t=AAAAAAAAAAAAAAAAAAAAAA",
		"v1;id=AAAAAAAAAAAAAAAAAAAAAA;r=ssn:x(pii/ssn-fpe),n:x(r);t=AAAAAAAAAAAAAAAAAAAAAA",
		"v1;id=AAAAAAAAAAAAAAAAAAAAAA;fk=f@01;r=a:f;t=AAAAAAAAAAAAAAAAAAAAAA",
		"v1;id=AAAAAAAAAAAAAAAAAAAAAA;tk=pii;r=a:t,a.b:t;t=AAAAAAAAAAAAAAAAAAAAAA",
		"v1;id=AAAAAAAAAAAAAAAAAAAAAA;r=a:fcb;t=AAAAAAAAAAAAAAAAAAAAAA",
	} {
		f.Add(s)
	}
	var rc ruleCache
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > maxFuzzText {
			return
		}
		m, err := parseManifest(s, nil)
		if err != nil {
			if !errors.Is(err, ErrManifest) && !errors.Is(err, envelope.ErrMalformed) {
				t.Fatalf("parseManifest: unexpected error kind: %v", err)
			}
			if _, err := parseManifest(s, &rc); err == nil {
				t.Fatalf("parseManifest(%q) with the rule cache accepts what it refuses without", s)
			}
			return
		}
		if m.format() != s || len(s) > MaxManifestLen {
			t.Fatalf("parseManifest(%q) formats back as %q", s, m.format())
		}
		if err := m.rules.Validate(); err != nil {
			t.Fatalf("parseManifest(%q) accepted rules that do not validate: %v", s, err)
		}
		for range 2 { // a miss, then a hit
			mc, err := parseManifest(s, &rc)
			if err != nil || mc.format() != s || !reflect.DeepEqual(mc.rules, m.rules) {
				t.Fatalf("parseManifest(%q) with the rule cache = %v, %v", s, mc, err)
			}
		}
	})
}

// FuzzParseHeader: the "pubcrypt" entry of a field-protected message parses only in
// the form formatHeader writes, and only where the envelope format's own parser reads
// the same key ID and nonce without sensitive metadata (the two copies agree).
func FuzzParseHeader(f *testing.F) {
	for _, s := range []string{
		formatHeader("orders", 0), formatHeader("k", 1<<64-1),
		"v1;alg=A256GCM;kid=k;n=AAAAAAAAAAAAAAAA;m=1", "v1;alg=A256GCM;kid=k;n=AQAAAAAAAAAAAAAA",
		"v1;alg=A256GCM;kid=k;n=AAAAAAAAAAAAAAA=", "v1;alg=A256GCM;kid=;n=AAAAAAAAAAAAAAAA", "v2;alg=A256GCM;kid=k;n=AAAAAAAAAAAAAAAA",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		if len(h) > maxFuzzText {
			return
		}
		kid, seq0, err := parseHeader(h)
		if err != nil {
			if !errors.Is(err, envelope.ErrMalformed) {
				t.Fatalf("parseHeader: unexpected error kind: %v", err)
			}
			return
		}
		if got := formatHeader(kid, seq0); got != h {
			t.Fatalf("parseHeader(%q) accepted a non-canonical header (canonical %q)", h, got)
		}
		env, err := envelope.Parse(map[string]string{envelope.HeaderKey: h, envelope.DEKKey: "w"})
		if err != nil || env.KeyID != kid || env.SensitiveMeta || !bytes.Equal(env.Nonce, nonceFor(seq0)) {
			t.Fatalf("parseHeader(%q) = %q, %d; the envelope format reads %+v, %v", h, kid, seq0, env, err)
		}
	})
}

// FuzzParsePolicy: ParsePolicy never panics and fails only with ErrPolicy; a policy it
// accepts is valid, reads back from its String unchanged (ParsePolicy(p.String()) == p,
// and String is a fixed point), and every rule survives its manifest code.
func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{
		mixedPolicy,
		"name=transit, card_number=fpe(bin,luhn), items[].sku=envelope",
		" a = fpe ( luhn , last4 , bin ) ,b=deterministic",
		"ssn=transform(pii/ssn-fpe),n=transform( r )",
		"a[][].b_c-d=envelope",
		"a=transit,a.b=transit",
		"a=fpe(bin,bin)",
		"a=transform(r/)",
		"a=transit(bin)",
		",",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > maxFuzzText {
			return
		}
		p, err := ParsePolicy(s)
		if err != nil {
			if !errors.Is(err, ErrPolicy) {
				t.Fatalf("ParsePolicy: unexpected error kind: %v", err)
			}
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("ParsePolicy(%q) accepted an invalid policy: %v", s, err)
		}
		text := p.String()
		q, err := ParsePolicy(text)
		if err != nil || !reflect.DeepEqual(q, p) {
			t.Fatalf("ParsePolicy(%q) = %#v; its String %q reads as %#v, %v", s, p, text, q, err)
		}
		if q.String() != text {
			t.Fatalf("String of %q is not a fixed point: %q then %q", s, text, q.String())
		}
		for _, r := range p {
			code := r.Path + ":" + r.code()
			if got, err := parseRuleCode(code); err != nil || got != r {
				t.Fatalf("rule %v: manifest code %q reads as %v, %v", r, code, got, err)
			}
		}
	})
}

// FuzzScan checks the JSON path scanner (locate) against encoding/json on any document
// and any policy:
//   - on what json.Valid accepts, locate never fails and finds exactly the values a
//     walk with encoding/json's Decoder finds: same rules, concrete paths and bytes;
//   - on what it rejects, locate does not panic, and Protect's check of a body refuses
//     exactly the documents json.Valid refuses (ErrNotJSON);
//   - splicing the matches back is the identity, and replacing them with JSON strings
//     keeps the document valid.
func FuzzScan(f *testing.F) {
	const policy = "a.b=transit,c[].d=envelope,ab=transit"
	for _, s := range []struct{ doc, policy string }{
		{`{"a":{"b":[1,"x"]},"c":[{"d":null}]}`, policy},
		{`{"a\u0062":1}`, policy},
		{`[]`, policy},
		{`{"a":"\\\""}`, policy},
		{purchaseJSON, mixedPolicy},
		{`{"a":1,"a":2,"c":[{"d":1},{"d":[{}]},{"e":1,"d":"x"}]}`, policy},
		{` {"a" : { "b" : {"c":[1,2]} } , "ab" : "\ud83d\ude00" } `, policy},
		{`[[{"x":1}],{"x":2}]`, "x=transit"},
		{`{"items":[[{"sku":1}],[{"sku":2},{"sku":"3"}]]}`, "items[][].sku=deterministic"},
		{`{"a":{"b":1}`, policy},
		{`{"a":1,}`, policy},
		{`{"a":01}`, policy},
		{"{\"a\":\"\x01\"}", policy},
		{`{"a":{"card_number":1,"b":[{"card_number":{"x":2}}]},"card_number":"3"}`, "**.card_number=transit"},
		{`{"items":[{"a":1,"b":{"c":2}},"x",[{"d":3}]],"Name":"Ann"}`, "items[].*=envelope,*.c=transit"},
		{`{"id":1,"Name":"Ann","payment":{"card_number":"4111","k":[1,{"e":null}]},"e mail":"x","":{"":true}}`,
			"default=envelope;keep=id,payment.k;**.card_number=transit"},
		{`{"meta":{"ssn":"1","src":"web"},"user":{"ssn":"2"},"ssn":"3"}`, "default=transit;keep=meta;**.ssn=envelope;user.ssn=transit"},
		{`["a",{"b":1}]`, "default=envelope;unmatched=clear"},
	} {
		f.Add(s.doc, s.policy)
	}
	fallback, err := compile(mustPolicy(f, policy))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, doc, policy string) {
		if len(doc) > maxFuzzDoc || len(policy) > maxFuzzText {
			return
		}
		c := fallback
		if p, err := ParsePolicy(policy); err == nil && len(p) > 0 {
			if c, err = compile(p); err != nil {
				t.Fatalf("compile(%q): %v", policy, err)
			}
		}
		body := []byte(doc)
		ms, err := locate(body, c)
		valid := json.Valid(body)
		_, perr := prepare(&Input{Body: body}, c)
		if errors.Is(perr, ErrNotJSON) == valid {
			t.Fatalf("json.Valid(%q) = %t, but prepare says %v", doc, valid, perr)
		}
		if !valid {
			return
		}
		if err != nil {
			t.Fatalf("locate(%q): %v", doc, err)
		}
		want, err := refLocate(body, c)
		if err != nil {
			t.Fatalf("encoding/json walk of %q: %v", doc, err)
		}
		if len(ms) != len(want) {
			t.Fatalf("locate(%q, %q) found %d values, encoding/json %d: %v, want %v", doc, policy, len(ms), len(want), ms, want)
		}
		prev := 0
		orig := make([][]byte, len(ms))
		strs := make([][]byte, len(ms))
		for k, m := range ms {
			if m.start < prev || m.end < m.start || m.end > len(doc) {
				t.Fatalf("locate(%q): bad span %d:%d", doc, m.start, m.end)
			}
			prev = m.end
			if w := want[k]; m.rule != w.rule || m.path != w.path || doc[m.start:m.end] != w.raw {
				t.Fatalf("locate(%q) match %d = rule %d %s %q, encoding/json says rule %d %s %q",
					doc, k, m.rule, m.path, doc[m.start:m.end], w.rule, w.path, w.raw)
			}
			orig[k] = body[m.start:m.end]
			strs[k] = quoted("x" + strconv.Itoa(k))
		}
		if got := splice(body, ms, orig); !bytes.Equal(got, body) {
			t.Fatalf("splicing the values back into %q gives %q", doc, got)
		}
		if got := splice(body, ms, strs); !json.Valid(got) {
			t.Fatalf("replacing the values of %q with strings gives invalid JSON %q", doc, got)
		}
	})
}

// refMatch is a value refLocate found: its rule, concrete path and raw bytes.
type refMatch struct {
	rule      int
	path, raw string
}

// refLocate is locate written with encoding/json's Decoder and plain recursion: a second
// implementation of section 4.4 to check the scanner against. It reads every value as a
// json.RawMessage (the exact bytes), keys unescaped by encoding/json, every occurrence of
// a repeated key, and matches each rule's path against the concrete path by backtracking
// rather than by the scanner's sets of states.
func refLocate(doc []byte, c *compiled) ([]refMatch, error) {
	var out []refMatch
	var walk func(raw json.RawMessage, cs []refStep, path string, kept bool) error
	walk = func(raw json.RawMessage, cs []refStep, path string, kept bool) error {
		best := -1
		for k := range c.pats {
			pt := &c.pats[k]
			if !refMatchPath(pt.steps, cs) {
				continue
			}
			if pt.keep {
				kept = true
				continue
			}
			if b := c.pats[max(best, 0)]; best < 0 || pt.deep < b.deep || pt.deep == b.deep && pt.any < b.any {
				best = k
			}
		}
		if best >= 0 {
			out = append(out, refMatch{rule: c.pats[best].rule, path: path, raw: string(raw)})
			return nil
		}
		if raw[0] != '{' && raw[0] != '[' {
			if c.def >= 0 && !kept {
				out = append(out, refMatch{rule: c.def, path: path, raw: string(raw)})
			}
			return nil
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		if _, err := dec.Token(); err != nil {
			return err
		}
		for i := 0; dec.More(); i++ {
			next := append(slices.Clone(cs), refStep{elem: true})
			p := path + "[" + strconv.Itoa(i) + "]"
			if raw[0] == '{' {
				kt, err := dec.Token()
				if err != nil {
					return err
				}
				key, _ := kt.(string)
				next[len(next)-1] = refStep{key: key}
				p = refKey(key)
				if path != "" {
					p = path + "." + p
				}
			}
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				return err
			}
			if err := walk(v, next, p, kept); err != nil {
				return err
			}
		}
		return nil
	}
	var top json.RawMessage
	if err := json.Unmarshal(doc, &top); err != nil {
		return nil, err
	}
	top = bytes.TrimSpace(top)
	if top[0] != '{' { // section 4.5: a policy addresses objects only
		return nil, nil
	}
	if err := walk(top, nil, "", false); err != nil {
		return nil, err
	}
	return out, nil
}

// refStep is one step of a concrete path: a member key or an array element.
type refStep struct {
	key  string
	elem bool
}

// refMatchPath reports whether the rule path p matches the concrete path cs, "**"
// trying every number of steps.
func refMatchPath(p []step, cs []refStep) bool {
	if len(p) == 0 {
		return len(cs) == 0
	}
	if p[0].kind == stepDeep {
		for k := 0; k <= len(cs); k++ {
			if refMatchPath(p[1:], cs[k:]) {
				return true
			}
		}
		return false
	}
	if len(cs) == 0 {
		return false
	}
	var ok bool
	switch p[0].kind {
	case stepName:
		ok = !cs[0].elem && cs[0].key == p[0].key
	case stepAny:
		ok = !cs[0].elem
	case stepElem:
		ok = cs[0].elem
	}
	return ok && refMatchPath(p[1:], cs[1:])
}

// refKey writes a key in a concrete path as section 4.2 says.
func refKey(k string) string {
	for i := 0; i < len(k); i++ {
		if c := k[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return "{" + base64.RawURLEncoding.EncodeToString([]byte(k)) + "}"
		}
	}
	if k == "" {
		return "{}"
	}
	return k
}

// fixedEnv is a testEnv whose Sealer makes the same bytes in every process: a fixed data
// key, message IDs and transit nonces from a seeded stream. The fuzzing engine runs the
// target in worker processes of its own, so a sample made at random in each would
// differ from the seeds the coordinator made.
func fixedEnv(t testing.TB) *testEnv {
	t.Helper()
	e := newTestEnv(t)
	e.vault.rand = rand.NewChaCha8([32]byte{1})
	dk, err := keyring.NewDataKeys(oneKeyKMS{e.kms}, keyring.ReusePolicy{})
	if err != nil {
		t.Fatal(err)
	}
	e.dk = dk
	e.sealer = NewSealer(e.vault, dk, testKeys, SealerOptions{})
	e.sealer.rand = rand.NewChaCha8([32]byte{2})
	e.opener = NewOpener(strictVault{e.vault}, keyring.NewUnwrapCache(e.kms, keyring.CacheOptions{}))
	return e
}

// oneKeyKMS hands out one data key, wrapped as fakeKMS wraps (so fakeKMS unwraps it).
type oneKeyKMS struct{ *fakeKMS }

func (oneKeyKMS) GenerateDataKey(ctx context.Context) (*keyring.DataKey, error) {
	pt := bytes.Repeat([]byte{0x42}, keyring.DataKeySize)
	nonce := make([]byte, 12)
	w := "vault:v1:" + base64.StdEncoding.EncodeToString(kmsKEK.Seal(nonce, nonce, pt, nil))
	return &keyring.DataKey{Plaintext: pt, Wrapped: w, KeyID: "orders", Version: 1}, nil
}

// strictVault reports the fake's failures to decrypt an item as the real keyring does,
// as a *keyring.Error of kind ErrDecrypt, so that error kinds can be checked.
type strictVault struct{ *fakeVault }

func (v strictVault) DecryptBatch(ctx context.Context, name string, items []TransitItem) error {
	err := v.fakeVault.DecryptBatch(ctx, name, items)
	for i := range items {
		var ke *keyring.Error
		if it := &items[i]; it.Err != nil && !errors.As(it.Err, &ke) {
			it.Err = &keyring.Error{Op: "decrypt", KeyID: name, Kind: keyring.ErrDecrypt, Err: it.Err}
		}
	}
	return err
}

// fixedSample is the mixed-policy purchase protected by a fixedEnv; it checks that two
// such environments agree.
func fixedSample(t testing.TB) (*testEnv, Output) {
	t.Helper()
	e := fixedEnv(t)
	out := e.protect1(t, purchaseJSON, purchaseMeta, mustPolicy(t, mixedPolicy))
	again := fixedEnv(t).protect1(t, purchaseJSON, purchaseMeta, mustPolicy(t, mixedPolicy))
	if !bytes.Equal(out.Body, again.Body) || !maps.Equal(out.Metadata, again.Metadata) {
		t.Fatal("fixedEnv is not deterministic")
	}
	return e, out
}

// FuzzOpen: a valid field-protected message changed in any way (body, manifest, envelope
// entries, a clear metadata entry changed, added or removed) never opens, and Open never
// panics; the message as sent opens to what was protected.
func FuzzOpen(f *testing.F) {
	e, out := fixedSample(f)
	hdr, dek, man := out.Metadata[envelope.HeaderKey], out.Metadata[envelope.DEKKey], out.Metadata[ManifestKey]
	f.Add(out.Body, man, hdr, dek, "", "", "")
	f.Add(out.Body, man, hdr, dek, "trace-id", "4bf92f3577b34da7", "")
	f.Add(out.Body, man, hdr, dek, "x", "y", "")
	f.Add(out.Body, man, hdr, dek, "", "", "content-type")
	f.Add(out.Body, man, hdr[:len(hdr)-1]+"B", dek, "", "", "")
	f.Add(out.Body, man, hdr, dek[:len(dek)-2], "", "", "")
	f.Add(out.Body[:len(out.Body)-1], man, hdr, dek, "", "", "")
	f.Add(out.Body, man[:len(man)-1]+"A", hdr, dek, "", "", "")
	f.Add(out.Body, man[:len(man)-5]+"\n"+man[len(man)-5:], hdr, dek, "", "", "") // opened before the tag's length was checked
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, body []byte, manifest, header, wrapped, k, v, drop string) {
		if len(body) > maxFuzzDoc {
			return
		}
		md := maps.Clone(out.Metadata)
		md[envelope.HeaderKey], md[envelope.DEKKey], md[ManifestKey] = header, wrapped, manifest
		if k != "" {
			md[k] = v
		}
		delete(md, drop)
		e.vault.resetCounts() // its call log would grow with every exec
		gotBody, gotMD, err := e.opener.Open(ctx, body, md)
		if err != nil {
			return
		}
		if !bytes.Equal(body, out.Body) || !maps.Equal(md, out.Metadata) {
			t.Fatalf("Open accepted a changed message: %q %q", body, md)
		}
		if string(gotBody) != purchaseJSON || !maps.Equal(gotMD, purchaseMeta) {
			t.Fatalf("Open = %q %q", gotBody, gotMD)
		}
	})
}

// FuzzOpenAuthenticated: a message whose MAC is right but whose body and manifest need
// not follow the format (what a holder of the data key could send: the MAC is computed
// here with it) never makes Open panic. Open fails with a classified error (malformed,
// authentication, a keyring kind), or returns valid JSON and the clear metadata.
func FuzzOpenAuthenticated(f *testing.F) {
	e, out := fixedSample(f)
	ctx := context.Background()
	f.Add(out.Body, out.Metadata[ManifestKey], out.Metadata[envelope.HeaderKey])
	for _, tc := range []struct{ doc, policy string }{
		{`{"a":"x","b":[1,{"c":2}],"d":"4111111111111111","e":"123-45-6789"}`, "a=envelope,b[].c=envelope,d=fpe(bin,luhn),e=fpe"},
		{`{"a":"x","b":"y"}`, "a=transit,b=deterministic"},
		{`{"a":{"b":"c"}}`, "a=envelope"},
		{`[{"a":"1"},{"a":"2"}]`, "a=envelope;unmatched=clear"}, // readable as the user chose: MAC only
		{`{"id":1,"a":{"b":"c","d":[true,null]},"x":"4111111111111111"}`, "default=envelope;keep=id;**.x=fpe(luhn)"},
		{`{"a":{"b":1},"c":[{"b":2}]}`, "default=transit;**.b=envelope"},
	} {
		o := e.protect1(f, tc.doc, nil, mustPolicy(f, tc.policy))
		f.Add(o.Body, o.Metadata[ManifestKey], o.Metadata[envelope.HeaderKey])
	}
	// Every message is under the sample's data key; the header gives the first nonce.
	dek := out.Metadata[envelope.DEKKey]
	r, err := parseReceived(out.Metadata, nil)
	if err != nil {
		f.Fatal(err)
	}
	dk, err := e.kms.UnwrapDataKey(ctx, r.kid, r.dek)
	if err != nil {
		f.Fatal(err)
	}
	aead := gcmOf(dk)
	clear := clearKeys(out.Metadata)
	f.Fuzz(func(t *testing.T, body []byte, manifest, header string) {
		if len(body) > maxFuzzDoc {
			return
		}
		_, seq0, err := parseHeader(header)
		if err != nil {
			return
		}
		m, err := parseManifest(manifest, nil)
		if err != nil {
			return // refused before the MAC: FuzzParseManifest's ground
		}
		tag := aead.Seal(nil, nonceFor(seq0), nil, macAD(header, dek, m.unsigned, clear, out.Metadata, body))
		copy(m.tag[:], tag)
		md := maps.Clone(out.Metadata)
		md[envelope.HeaderKey], md[ManifestKey] = header, m.format()
		e.vault.resetCounts() // its call log would grow with every exec
		gotBody, gotMD, err := e.opener.Open(ctx, body, md)
		if err != nil {
			var ke *keyring.Error
			if !errors.Is(err, envelope.ErrMalformed) && !errors.Is(err, envelope.ErrAuth) && !errors.As(err, &ke) {
				t.Fatalf("Open: unexpected error kind: %v", err)
			}
			return
		}
		if !json.Valid(gotBody) || !maps.Equal(gotMD, purchaseMeta) {
			t.Fatalf("Open = %q %q", gotBody, gotMD)
		}
	})
}
