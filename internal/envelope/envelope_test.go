package envelope

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"

	"github.com/pubcrypt/pubcrypt/internal/wire"
)

// sample is a valid message with clear and sensitive metadata.
type sample struct {
	key  []byte
	in   SealInput
	body []byte
	md   map[string]string
}

func newSample(t testing.TB) sample {
	t.Helper()
	key := testKey("unit")
	in := SealInput{
		AEAD:    newAEAD(key),
		KeyID:   "orders",
		Wrapped: "vault:v1:dW5pdCB0ZXN0IHdyYXBwZWQga2V5",
		Seq:     12345,
		Body:    []byte("body of the message, longer than one AES block"),
		Metadata: map[string]string{
			"content-type": "text/plain",
			"x-region":     "eu-west-1",
			"x-note":       "née à Zürich",
			"filename":     "salaries.pdf",
			"owner":        "ops",
		},
		Sensitive: []string{"filename", "owner"},
	}
	body, md, err := Seal(in)
	if err != nil {
		t.Fatal(err)
	}
	return sample{key: key, in: in, body: body, md: md}
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name      string
		body      []byte
		md        map[string]string
		sensitive []string
	}{
		{"empty", nil, nil, nil},
		{"empty body with metadata", []byte{}, map[string]string{"a": "b"}, nil},
		{"one byte", []byte{0}, nil, nil},
		{"block sized", bytes.Repeat([]byte{1}, 16), map[string]string{"a": ""}, nil},
		{"sensitive", []byte("x"), map[string]string{"a": "1", "b": "2"}, []string{"b"}},
		{"sensitive with empty body", nil, map[string]string{"a": "1", "b": "2"}, []string{"a", "b"}},
		{"sensitive names absent", []byte("x"), map[string]string{"a": "1"}, []string{"zz"}},
		{"64 KiB", bytes.Repeat([]byte("0123456789abcdef"), 4096), map[string]string{"k": "v"}, []string{"k"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := testKey(tc.name)
			mdBefore := maps.Clone(tc.md)
			bodyBefore := bytes.Clone(tc.body)
			body, md, err := Seal(SealInput{
				AEAD: newAEAD(key), KeyID: "k1", Wrapped: "vault:v1:abc", Seq: 9,
				Body: tc.body, Metadata: tc.md, Sensitive: tc.sensitive,
			})
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(tc.md, mdBefore) || !bytes.Equal(tc.body, bodyBefore) {
				t.Fatal("Seal modified its input")
			}
			if len(body) != len(tc.body)+wire.TagSize && len(tc.sensitive) == 0 {
				t.Errorf("ciphertext is %d bytes for a %d-byte body", len(body), len(tc.body))
			}
			if cap(body) != len(body) {
				t.Errorf("ciphertext capacity %d, length %d: output not allocated once at the right size", cap(body), len(body))
			}
			gotBody, gotMD, err := receive(key, body, md)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(gotBody, tc.body) {
				t.Errorf("body %q, want %q", gotBody, tc.body)
			}
			want := tc.md
			if want == nil {
				want = map[string]string{}
			}
			if !maps.Equal(gotMD, want) {
				t.Errorf("metadata %q, want %q", gotMD, want)
			}
		})
	}
}

func TestSensitiveHidden(t *testing.T) {
	s := newSample(t)
	for _, k := range []string{"filename", "owner"} {
		if _, ok := s.md[k]; ok {
			t.Errorf("sensitive key %q sent in clear", k)
		}
	}
	for _, secret := range []string{"filename", "salaries.pdf", "owner"} {
		for k, v := range s.md {
			if strings.Contains(k, secret) || strings.Contains(v, secret) {
				t.Errorf("%q visible in clear metadata entry %q", secret, k)
			}
		}
		if bytes.Contains(s.body, []byte(secret)) {
			t.Errorf("%q visible in the ciphertext", secret)
		}
	}
	for _, k := range []string{"content-type", "x-region", "x-note"} {
		if s.md[k] != s.in.Metadata[k] {
			t.Errorf("clear entry %q = %q, want %q", k, s.md[k], s.in.Metadata[k])
		}
	}
	if len(s.md) != 5 {
		t.Errorf("sent %d metadata entries, want 3 clear + 2 envelope", len(s.md))
	}
	if !strings.HasSuffix(s.md[HeaderKey], ";m=1") {
		t.Errorf("header %q lacks m=1", s.md[HeaderKey])
	}
	body, md, err := receive(s.key, s.body, s.md)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(body, s.in.Body) || !maps.Equal(md, s.in.Metadata) {
		t.Errorf("opened %q %q, want %q %q", body, md, s.in.Body, s.in.Metadata)
	}
}

func TestEnvelopeEntries(t *testing.T) {
	s := newSample(t)
	for _, k := range []string{HeaderKey, DEKKey} {
		v := s.md[k]
		if !wire.ValidValue(v) {
			t.Errorf("%s = %q is not 1-%d bytes of printable ASCII", k, v, MaxValueLen)
		}
	}
	want := "v1;alg=A256GCM;kid=orders;n=AAAAAAAAAAAAADA5;m=1"
	if got := s.md[HeaderKey]; got != want {
		t.Errorf("header %q, want %q", got, want)
	}
	env, err := Parse(s.md)
	if err != nil {
		t.Fatal(err)
	}
	if env.KeyID != "orders" || env.Wrapped != s.in.Wrapped || !env.SensitiveMeta ||
		!bytes.Equal(env.Nonce, []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x30, 0x39}) {
		t.Errorf("Parse = %+v", env)
	}
}

func TestSealRefuses(t *testing.T) {
	aead := newAEAD(testKey("refuse"))
	ok := SealInput{AEAD: aead, KeyID: "k", Wrapped: "w", Body: []byte("b")}
	for _, tc := range []struct {
		name   string
		change func(*SealInput)
		field  string // the error names it
	}{
		{"reserved key", func(in *SealInput) { in.Metadata = map[string]string{"pubcrypt": "x"} }, "reserved"},
		{"reserved dek key", func(in *SealInput) { in.Metadata = map[string]string{"pubcrypt-dek": "x"} }, "reserved"},
		{"reserved prefix", func(in *SealInput) { in.Metadata = map[string]string{"pubcryptfoo": "x"} }, "reserved"},
		{"reserved key marked sensitive", func(in *SealInput) {
			in.Metadata = map[string]string{"pubcrypt-x": "x"}
			in.Sensitive = []string{"pubcrypt-x"}
		}, "reserved"},
		{"key not UTF-8", func(in *SealInput) { in.Metadata = map[string]string{"a\xff": "x"} }, "UTF-8"},
		{"value not UTF-8", func(in *SealInput) { in.Metadata = map[string]string{"a": "\xffsecret"} }, "UTF-8"},
		{"sensitive value not UTF-8", func(in *SealInput) {
			in.Metadata = map[string]string{"a": "\xffsecret"}
			in.Sensitive = []string{"a"}
		}, "UTF-8"},
		{"empty key ID", func(in *SealInput) { in.KeyID = "" }, "key ID"},
		{"key ID with slash", func(in *SealInput) { in.KeyID = "a/b" }, "key ID"},
		{"key ID with semicolon", func(in *SealInput) { in.KeyID = "a;n=x" }, "key ID"},
		{"key ID too long", func(in *SealInput) { in.KeyID = strings.Repeat("a", 129) }, "key ID"},
		{"empty wrapped key", func(in *SealInput) { in.Wrapped = "" }, "wrapped"},
		{"wrapped key with newline", func(in *SealInput) { in.Wrapped = "vault:v1:x\n" }, "wrapped"},
		{"wrapped key non-ASCII", func(in *SealInput) { in.Wrapped = "vault:v1:é" }, "wrapped"},
		{"wrapped key too long", func(in *SealInput) { in.Wrapped = strings.Repeat("a", 1025) }, "wrapped"},
		{"nil AEAD", func(in *SealInput) { in.AEAD = nil }, "AEAD"},
		{"AEAD with other nonce size", func(in *SealInput) { in.AEAD = otherNonceAEAD(t) }, "AEAD"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := ok
			tc.change(&in)
			body, md, err := Seal(in)
			if !errors.Is(err, ErrInvalidInput) {
				t.Fatalf("Seal = %v, want ErrInvalidInput", err)
			}
			if body != nil || md != nil {
				t.Error("Seal returned output with an error")
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("error %q does not name %q", err, tc.field)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q shows a metadata value", err)
			}
		})
	}
	if _, _, err := Seal(ok); err != nil {
		t.Fatalf("the valid input was refused: %v", err)
	}
	if _, _, err := Seal(SealInput{AEAD: aead, KeyID: strings.Repeat("a", 128), Wrapped: strings.Repeat("~", 1024)}); err != nil {
		t.Fatalf("the longest key ID and wrapped key were refused: %v", err)
	}
}

func otherNonceAEAD(t *testing.T) cipher.AEAD {
	block, err := aes.NewCipher(testKey("x"))
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCMWithNonceSize(block, 16)
	if err != nil {
		t.Fatal(err)
	}
	return aead
}

func TestOpenRefusesBadAEAD(t *testing.T) {
	s := newSample(t)
	env, err := Parse(s.md)
	if err != nil {
		t.Fatal(err)
	}
	for _, aead := range []cipher.AEAD{nil, otherNonceAEAD(t)} {
		if _, _, err := env.Open(aead, s.body, s.md); !errors.Is(err, ErrInvalidInput) {
			t.Errorf("Open with %T = %v, want ErrInvalidInput", aead, err)
		}
	}
	var nilEnv *Envelope
	if _, _, err := nilEnv.Open(newAEAD(s.key), s.body, s.md); !errors.Is(err, ErrMalformed) {
		t.Errorf("Open on nil envelope = %v, want ErrMalformed", err)
	}
}

// TestOpenInconsistentEnvelope: a hand-made Envelope whose fields disagree with its
// header must not decrypt with the wrong nonce or skip the sensitive block.
func TestOpenInconsistentEnvelope(t *testing.T) {
	s := newSample(t)
	for _, tc := range []struct {
		name   string
		change func(*Envelope)
	}{
		{"SensitiveMeta cleared", func(e *Envelope) { e.SensitiveMeta = false }},
		{"other nonce", func(e *Envelope) { e.Nonce = make([]byte, 12) }},
		{"short nonce", func(e *Envelope) { e.Nonce = e.Nonce[:8] }},
		{"nil nonce", func(e *Envelope) { e.Nonce = nil }},
		{"other key ID", func(e *Envelope) { e.KeyID = "other" }},
		{"bad wrapped", func(e *Envelope) { e.Wrapped = "" }},
		{"bad header", func(e *Envelope) { e.Header = "v1" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, err := Parse(s.md)
			if err != nil {
				t.Fatal(err)
			}
			tc.change(env)
			if _, _, err := env.Open(newAEAD(s.key), s.body, s.md); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Open = %v, want ErrMalformed", err)
			}
		})
	}
}

// TestOpenWithoutEnvelopeEntries: Open reads the envelope from the Envelope, so the
// caller may strip the entries from the metadata first.
func TestOpenWithoutEnvelopeEntries(t *testing.T) {
	s := newSample(t)
	env, err := Parse(s.md)
	if err != nil {
		t.Fatal(err)
	}
	md := maps.Clone(s.md)
	delete(md, HeaderKey)
	delete(md, DEKKey)
	body, out, err := env.Open(newAEAD(s.key), s.body, md)
	if err != nil || !bytes.Equal(body, s.in.Body) || !maps.Equal(out, s.in.Metadata) {
		t.Fatalf("Open = %q, %q, %v", body, out, err)
	}
}

// TestSingleByteChanges changes every byte of the body and of every metadata key and
// value, one at a time: receiving must fail with ErrAuth or ErrMalformed.
func TestSingleByteChanges(t *testing.T) {
	s := newSample(t)
	check := func(t *testing.T, what string, body []byte, md map[string]string) {
		t.Helper()
		var err error
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("%s: panic: %v", what, r)
				}
			}()
			_, _, err = receive(s.key, body, md)
		}()
		if !errors.Is(err, ErrAuth) && !errors.Is(err, ErrMalformed) {
			t.Fatalf("%s: got %v, want ErrAuth or ErrMalformed", what, err)
		}
	}
	masks := []byte{0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff}
	t.Run("body", func(t *testing.T) {
		for i := range s.body {
			for _, m := range masks {
				b := bytes.Clone(s.body)
				b[i] ^= m
				check(t, fmt.Sprintf("body[%d]^%#x", i, m), b, s.md)
			}
		}
	})
	for k, v := range s.md {
		t.Run("value/"+k, func(t *testing.T) {
			for i := range len(v) {
				for _, m := range masks {
					b := []byte(v)
					b[i] ^= m
					md := maps.Clone(s.md)
					md[k] = string(b)
					check(t, fmt.Sprintf("%s[%d]^%#x", k, i, m), s.body, md)
				}
			}
			md := maps.Clone(s.md)
			md[k] = v + "x"
			check(t, "appended to "+k, s.body, md)
			if len(v) > 0 {
				md[k] = v[:len(v)-1]
				check(t, "truncated "+k, s.body, md)
			}
		})
		t.Run("key/"+k, func(t *testing.T) {
			for i := range len(k) {
				for _, m := range masks {
					b := []byte(k)
					b[i] ^= m
					md := maps.Clone(s.md)
					delete(md, k)
					md[string(b)] = v
					check(t, fmt.Sprintf("key %s[%d]^%#x", k, i, m), s.body, md)
				}
			}
		})
	}
	t.Run("entries", func(t *testing.T) {
		for k := range s.md {
			md := maps.Clone(s.md)
			delete(md, k)
			check(t, "removed "+k, s.body, md)
		}
		for _, k := range []string{"x-added", "filename", "owner", "", "pubcrypt-x", "pubcryptx"} {
			md := maps.Clone(s.md)
			md[k] = ""
			check(t, "added "+k, s.body, md)
		}
		check(t, "truncated body", s.body[:len(s.body)-1], s.md)
		check(t, "extended body", append(bytes.Clone(s.body), 0), s.md)
		check(t, "empty body", nil, s.md)
	})
	t.Run("wrong key", func(t *testing.T) {
		env, err := Parse(s.md)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := env.Open(newAEAD(testKey("other")), s.body, s.md); !errors.Is(err, ErrAuth) {
			t.Fatalf("Open with the wrong key = %v, want ErrAuth", err)
		}
	})
}

func TestParse(t *testing.T) {
	good := "v1;alg=A256GCM;kid=orders;n=AAAAAAAAAAAAAAAB"
	for _, tc := range []struct {
		name string
		md   map[string]string
		want error // nil: valid
	}{
		{"valid", map[string]string{HeaderKey: good, DEKKey: "w"}, nil},
		{"valid m=1", map[string]string{HeaderKey: good + ";m=1", DEKKey: "w"}, nil},
		{"valid with clear metadata", map[string]string{HeaderKey: good, DEKKey: "w", "a": "\xff"}, nil},
		{"valid kid of 128", map[string]string{HeaderKey: "v1;alg=A256GCM;kid=" + strings.Repeat("a", 128) + ";n=AAAAAAAAAAAAAAAB", DEKKey: "w"}, nil},
		{"valid kid charset", map[string]string{HeaderKey: "v1;alg=A256GCM;kid=azAZ09._-;n=-_-_-_-_-_-_-_-_", DEKKey: "w"}, nil},
		{"nil map", nil, ErrNoEnvelope},
		{"no envelope", map[string]string{"a": "b"}, ErrNoEnvelope},
		{"header only", map[string]string{HeaderKey: good}, ErrMalformed},
		{"dek only", map[string]string{DEKKey: "w"}, ErrMalformed},
		{"other reserved only", map[string]string{"pubcrypt-v2": "x"}, ErrMalformed},
		{"extra reserved", map[string]string{HeaderKey: good, DEKKey: "w", "pubcrypt-x": ""}, ErrMalformed},
		{"header key case", map[string]string{"Pubcrypt": good, DEKKey: "w"}, ErrMalformed},
		{"dek empty", map[string]string{HeaderKey: good, DEKKey: ""}, ErrMalformed},
		{"dek tab", map[string]string{HeaderKey: good, DEKKey: "a\tb"}, ErrMalformed},
		{"dek DEL", map[string]string{HeaderKey: good, DEKKey: "a\x7f"}, ErrMalformed},
		{"dek too long", map[string]string{HeaderKey: good, DEKKey: strings.Repeat("a", 1025)}, ErrMalformed},
		{"header too long", map[string]string{HeaderKey: good + strings.Repeat(";", 1024), DEKKey: "w"}, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, err := Parse(tc.md)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Parse = %v", err)
				}
				if env.Header != tc.md[HeaderKey] || env.Wrapped != tc.md[DEKKey] || len(env.Nonce) != wire.NonceSize {
					t.Errorf("Parse = %+v", env)
				}
				return
			}
			if !errors.Is(err, tc.want) || env != nil {
				t.Fatalf("Parse = %v, %v; want %v", env, err, tc.want)
			}
		})
	}
}

func TestParseHeader(t *testing.T) {
	valid := []struct {
		h         string
		kid       string
		nonce     [12]byte
		sensitive bool
	}{
		{"v1;alg=A256GCM;kid=k;n=AAAAAAAAAAAAAAAA", "k", [12]byte{}, false},
		{"v1;alg=A256GCM;kid=k;n=AAAAAAAAAAAAAAAB;m=1", "k", [12]byte{11: 1}, true},
		{"v1;alg=A256GCM;kid=a.b_c-D9;n=________________", "a.b_c-D9",
			[12]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, false},
	}
	for _, v := range valid {
		kid, nonce, sensitive, err := parseHeader(v.h)
		if err != nil || kid != v.kid || nonce != v.nonce || sensitive != v.sensitive {
			t.Errorf("parseHeader(%q) = %q %x %v %v", v.h, kid, nonce, sensitive, err)
		}
		if got := wire.FormatHeader(v.kid, v.nonce, v.sensitive); got != v.h {
			t.Errorf("formatHeader = %q, want %q", got, v.h)
		}
	}
	const n = "AAAAAAAAAAAAAAAB"
	for _, h := range []string{
		"",
		"v1",
		"v1;",
		"v2;alg=A256GCM;kid=k;n=" + n,
		"v10;alg=A256GCM;kid=k;n=" + n,
		"V1;alg=A256GCM;kid=k;n=" + n,
		"v1;alg=A128GCM;kid=k;n=" + n,
		"v1;alg=A256GCM",
		"v1;alg=A256GCM;kid=k",
		"v1;alg=A256GCM;kid=k;",
		"v1;alg=A256GCM;kid=;n=" + n,
		"v1;alg=A256GCM;kid=k;n=",
		"v1;alg=A256GCM;kid=k;n=" + n + ";",
		"v1;alg=A256GCM;kid=k;n=" + n + ";m=1;",
		"v1;alg=A256GCM;kid=k;n=" + n + ";m=0",
		"v1;alg=A256GCM;kid=k;n=" + n + ";m=2",
		"v1;alg=A256GCM;kid=k;n=" + n + ";m=1;m=1",
		"v1;alg=A256GCM;kid=k;n=" + n + ";x=1",
		"v1;alg=A256GCM;kid=k;n=" + n + ";m=11",
		"v1;alg=A256GCM;kid=k;n=" + n + "m=1",
		"v1;alg=A256GCM;kid=k;n=" + n + "A",
		"v1;alg=A256GCM;kid=k;n=" + n[1:],
		"v1;alg=A256GCM;kid=k;n=" + n[:14] + "==",
		"v1;alg=A256GCM;kid=k;n=" + n[:14] + "+/",
		"v1;alg=A256GCM;kid=k;n=" + n[:14] + "\r\n",
		"v1;alg=A256GCM;kid=k;n=" + n[:15] + " ",
		"v1;alg=A256GCM;kid=k;kid=k;n=" + n,
		"v1;alg=A256GCM;alg=A256GCM;kid=k;n=" + n,
		"v1;kid=k;alg=A256GCM;n=" + n,
		"v1;alg=A256GCM;n=" + n + ";kid=k",
		"v1;alg=A256GCM;kid=k;n=" + n + ";kid=k",
		"v1;alg=A256GCM;kid=k/l;n=" + n,
		"v1;alg=A256GCM;kid=k l;n=" + n,
		"v1;alg=A256GCM;kid=k=l;n=" + n,
		"v1;alg=A256GCM;kid=é;n=" + n,
		"v1;alg=A256GCM;kid=" + strings.Repeat("a", 129) + ";n=" + n,
		"v1;alg=A256GCM;kid=k;N=" + n,
		"v1;ALG=A256GCM;kid=k;n=" + n,
		"v1;alg=A256GCM;KID=k;n=" + n,
		"v1 ;alg=A256GCM;kid=k;n=" + n,
		" v1;alg=A256GCM;kid=k;n=" + n,
		"v1;alg=A256GCM;kid=k;n=" + n + "\x00",
		"v1;alg=A256GCM;kid=k;n=" + n + "\n",
	} {
		if _, _, _, err := parseHeader(h); !errors.Is(err, ErrMalformed) {
			t.Errorf("parseHeader(%q) = %v, want ErrMalformed", h, err)
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	s := newSample(t)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				in := s.in
				in.Seq = uint64(g*1000 + i)
				body, md, err := Seal(in)
				if err != nil {
					t.Error(err)
					return
				}
				if _, _, err := receive(s.key, body, md); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestSealAllocations: with no sensitive metadata the body is sealed straight into
// the output, allocated once.
func TestSealAllocations(t *testing.T) {
	aead := newAEAD(testKey("allocs"))
	body := make([]byte, 64<<10)
	in := SealInput{AEAD: aead, KeyID: "k", Wrapped: "vault:v1:abc", Body: body,
		Metadata: map[string]string{"content-type": "text/plain"}}
	var sealed []byte
	var md map[string]string
	allocs := testing.AllocsPerRun(20, func() {
		var err error
		sealed, md, err = Seal(in)
		if err != nil {
			t.Fatal(err)
		}
	})
	// output, header, nonce text, AD, clear key list, metadata map (and its buckets)
	if allocs > 8 {
		t.Errorf("Seal: %v allocations", allocs)
	}
	env, err := Parse(md)
	if err != nil {
		t.Fatal(err)
	}
	allocs = testing.AllocsPerRun(20, func() {
		if _, _, err := env.Open(aead, sealed, md); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 8 {
		t.Errorf("Open: %v allocations", allocs)
	}
}

// TestOpenChecksFieldsChangedAfterParse: Open skips checking again only what Parse
// checked; an envelope built or changed by hand is checked in full.
func TestOpenChecksFieldsChangedAfterParse(t *testing.T) {
	aead := newAEAD(testKey("k"))
	body, md, err := Seal(SealInput{AEAD: aead, KeyID: "orders", Wrapped: "vault:v1:abc", Seq: 7, Body: []byte("hello")})
	if err != nil {
		t.Fatal(err)
	}
	for name, change := range map[string]func(e *Envelope){
		"wrapped emptied":   func(e *Envelope) { e.Wrapped = "" },
		"wrapped not ASCII": func(e *Envelope) { e.Wrapped = "vault:v1:\x00" },
		"key ID changed":    func(e *Envelope) { e.KeyID = "other" },
		"nonce changed":     func(e *Envelope) { e.Nonce[11] ^= 1 },
		"header changed":    func(e *Envelope) { e.Header += ";m=1" },
		"built by hand":     func(e *Envelope) { *e = Envelope{Header: e.Header, KeyID: e.KeyID, Wrapped: "", Nonce: e.Nonce} },
	} {
		e, err := Parse(md)
		if err != nil {
			t.Fatal(err)
		}
		change(e)
		if _, _, err := e.Open(aead, body, md); !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrAuth) {
			t.Errorf("%s: Open = %v, want ErrMalformed or ErrAuth", name, err)
		}
	}
	e, _ := Parse(md)
	if pt, _, err := e.Open(aead, body, md); err != nil || string(pt) != "hello" {
		t.Fatalf("unchanged: %q, %v", pt, err)
	}
}
