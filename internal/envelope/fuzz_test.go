package envelope

import (
	"bytes"
	"errors"
	"maps"
	"testing"
	"unicode/utf8"

	"github.com/pubcrypt/pubcrypt/internal/wire"
)

// The fuzz targets of the v1 envelope. scripts/fuzz runs each for a set time; plain
// `go test` runs their seeds (and testdata/fuzz/<Target>/, if any) as unit tests.

// maxFuzzBody bounds the bodies and plaintexts the targets try: the parsers' cost is
// linear, and larger inputs only make each exec slower.
const maxFuzzBody = 64 << 10

// FuzzParse: Parse never panics, fails only with ErrNoEnvelope or ErrMalformed, and
// accepts only headers in canonical form (formatting what it read gives the same string).
func FuzzParse(f *testing.F) {
	s := newSample(f)
	f.Add(s.md[HeaderKey], s.md[DEKKey], "content-type", "text/plain")
	f.Add("v1;alg=A256GCM;kid=k;n=AAAAAAAAAAAAAAAA", "w", "", "")
	f.Add("v1;alg=A256GCM;kid=k;n=AAAAAAAAAAAAAA==", "w", "pubcrypt-x", "")
	f.Add("v1;alg=A256GCM;kid=k;n=AAAAAAAAAAAAAAAA;m=1", "w", "", "")
	f.Add("v1;alg=A256GCM;kid=k;n=AAAAAAAAAAAAAAAA;m=0", "w\x7f", "", "")
	f.Add("v2;alg=A256GCM;kid=k;n=AAAAAAAAAAAAAAAA", "w", "", "")
	f.Fuzz(func(t *testing.T, header, dek, k, v string) {
		md := map[string]string{HeaderKey: header, DEKKey: dek}
		if k != "" {
			md[k] = v
		}
		env, err := Parse(md)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNoEnvelope) {
				t.Fatalf("Parse: unexpected error kind: %v", err)
			}
			return
		}
		if got := wire.FormatHeader(env.KeyID, [12]byte(env.Nonce), env.SensitiveMeta); got != env.Header || got != md[HeaderKey] {
			t.Fatalf("accepted non-canonical header %q (canonical %q)", md[HeaderKey], got)
		}
		if !wire.ValidKeyID(env.KeyID) || len(env.Header) > MaxValueLen {
			t.Fatalf("accepted header %q with key ID %q", env.Header, env.KeyID)
		}
		if !wire.ValidValue(env.Wrapped) || env.Wrapped != md[DEKKey] {
			t.Fatalf("accepted wrapped key %q", env.Wrapped)
		}
		if wire.Reserved(k) && k != HeaderKey && k != DEKKey {
			t.Fatalf("accepted the unknown reserved key %q", k)
		}
	})
}

// FuzzOpen: a valid message changed in any way (header, wrapped key, body, a metadata
// entry changed, added or removed) never opens; Open never panics and fails only with
// ErrAuth or ErrMalformed. Only the message as sent opens, to what was sealed.
func FuzzOpen(f *testing.F) {
	s := newSample(f)
	f.Add(s.md[HeaderKey], s.md[DEKKey], s.body, "", "", "")
	f.Add(s.md[HeaderKey], s.md[DEKKey], s.body, "x-region", "eu-west-1", "")
	f.Add(s.md[HeaderKey], s.md[DEKKey], s.body, "x-region", "eu-west-2", "")
	f.Add(s.md[HeaderKey], s.md[DEKKey], s.body, "", "", "content-type")
	f.Add(s.md[HeaderKey], s.md[DEKKey], s.body[:10], "x-region", "eu-west-2", "")
	f.Add(s.md[HeaderKey], s.md[DEKKey]+"x", s.body, "", "", "")
	f.Add(s.md[HeaderKey][:len(s.md[HeaderKey])-4], s.md[DEKKey], s.body, "a", "b", "")
	f.Add(s.md[HeaderKey][:len(s.md[HeaderKey])-4]+";m=1", s.md[DEKKey], s.body, "", "", "")
	aead := newAEAD(s.key)
	f.Fuzz(func(t *testing.T, header, dek string, body []byte, k, v, drop string) {
		if len(body) > maxFuzzBody {
			return
		}
		md := maps.Clone(s.md)
		md[HeaderKey], md[DEKKey] = header, dek
		if k != "" {
			md[k] = v
		}
		delete(md, drop)
		env, err := Parse(md)
		if err != nil {
			return
		}
		orig := bytes.Clone(body)
		gotBody, gotMD, err := env.Open(aead, body, md)
		if !bytes.Equal(body, orig) {
			t.Fatal("Open modified the received body")
		}
		if err != nil {
			if !errors.Is(err, ErrAuth) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("Open: unexpected error kind: %v", err)
			}
			return
		}
		if !maps.Equal(md, s.md) || !bytes.Equal(body, s.body) {
			t.Fatalf("Open accepted a changed message: %q %x", md, body)
		}
		if !bytes.Equal(gotBody, s.in.Body) || !maps.Equal(gotMD, s.in.Metadata) {
			t.Fatalf("Open = %q %q", gotBody, gotMD)
		}
	})
}

// FuzzOpenBlock: a message that authenticates but whose plaintext need not follow the
// format (what a holder of the data key could send) never makes Open panic; Open either
// fails with ErrMalformed or reads a canonical sensitive block: sealing what it returned
// gives back the very same ciphertext and metadata.
func FuzzOpenBlock(f *testing.F) {
	s := newSample(f)
	// The sample's own plaintext: its sensitive block, then the body.
	f.Add(append(appendBlock(nil, entriesOf([]string{"filename", "owner"}, s.in.Metadata)), s.in.Body...), "content-type", "text/plain")
	f.Add(appendBlock(nil, entriesOf([]string{""}, map[string]string{"": ""})), "", "")
	f.Add(appendBlock(nil, entriesOf([]string{"a", "b"}, map[string]string{"a": "1", "b": "é"})), "b", "2")
	f.Add(appendBlock(nil, entriesOf([]string{"b", "a"}, map[string]string{"a": "1", "b": "2"})), "", "")
	f.Add(appendBlock(nil, entriesOf([]string{"a", "a"}, map[string]string{"a": "1"})), "", "")
	f.Add(appendBlock(nil, entriesOf([]string{"pubcrypt"}, map[string]string{"pubcrypt": "x"})), "", "")
	f.Add(appendBlock(nil, entriesOf([]string{"\xff"}, map[string]string{"\xff": "x"})), "", "")
	f.Add([]byte{0, 0, 0, 0}, "", "")
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1}, "", "")
	f.Add([]byte{0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff}, "", "")
	aead := newAEAD(s.key)
	const seq, kid, wrapped = 7, "k", "w"
	nonce := wire.Nonce(seq)
	header := wire.FormatHeader(kid, nonce, true)
	f.Fuzz(func(t *testing.T, pt []byte, k, v string) {
		if len(pt) > maxFuzzBody || !utf8.ValidString(k) || !utf8.ValidString(v) {
			return // Seal refuses non-UTF-8 clear metadata, so the property needs UTF-8
		}
		md := map[string]string{HeaderKey: header, DEKKey: wrapped}
		if k != "" {
			md[k] = v
		}
		env, err := Parse(md)
		if err != nil {
			return // k is reserved
		}
		body := aead.Seal(nil, nonce[:], pt, buildAD(header, wrapped, clearKeys(nil, md), md))
		gotBody, gotMD, err := env.Open(aead, body, md)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Open: unexpected error kind: %v", err)
			}
			return
		}
		var sensitive []string
		for name := range gotMD {
			if _, clear := md[name]; !clear {
				sensitive = append(sensitive, name)
			}
		}
		if len(sensitive) == 0 {
			t.Fatal("Open accepted m=1 without a sensitive entry")
		}
		sealed, sent, err := Seal(SealInput{AEAD: aead, KeyID: kid, Wrapped: wrapped, Seq: seq,
			Body: gotBody, Metadata: gotMD, Sensitive: sensitive})
		if err != nil {
			t.Fatalf("Seal refuses what Open returned (%q): %v", gotMD, err)
		}
		if !bytes.Equal(sealed, body) || !maps.Equal(sent, md) {
			t.Fatalf("sensitive block %x is not canonical: sealing what was read gives %x", pt, sealed)
		}
	})
}

// FuzzRoundTrip: whatever Seal accepts, receiving gives back, and no sensitive entry is
// sent in clear; what Seal refuses it refuses with ErrInvalidInput.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte("body"), "k1", "v1", "k2", "v2", uint8(1), uint64(0))
	f.Add([]byte{}, "", "", "pubcrypt", "x", uint8(3), uint64(1<<63))
	f.Add([]byte{0xff}, "a\xff", "é", "b", "\xff", uint8(2), uint64(7))
	f.Add([]byte("x"), "same", "v", "same", "w", uint8(3), uint64(1<<64-1))
	aead := newAEAD(testKey("fuzz"))
	f.Fuzz(func(t *testing.T, body []byte, k1, v1, k2, v2 string, sensitive uint8, seq uint64) {
		if len(body) > maxFuzzBody {
			return
		}
		md := map[string]string{k1: v1, k2: v2}
		var names []string
		if sensitive&1 != 0 {
			names = append(names, k1)
		}
		if sensitive&2 != 0 {
			names = append(names, k2)
		}
		sealed, sent, err := Seal(SealInput{AEAD: aead, KeyID: "k", Wrapped: "w", Seq: seq,
			Body: body, Metadata: md, Sensitive: names})
		if err != nil {
			if !errors.Is(err, ErrInvalidInput) {
				t.Fatalf("Seal: unexpected error kind: %v", err)
			}
			return
		}
		for _, n := range names {
			if _, ok := sent[n]; ok {
				t.Fatalf("sensitive key %q sent in clear", n)
			}
		}
		for k, v := range sent {
			if k != HeaderKey && k != DEKKey && md[k] != v {
				t.Fatalf("sent %q=%q, not in the metadata given", k, v)
			}
		}
		gotBody, gotMD, err := receive(testKey("fuzz"), sealed, sent)
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		if !bytes.Equal(gotBody, body) || !maps.Equal(gotMD, md) {
			t.Fatalf("got %q %q, want %q %q", gotBody, gotMD, body, md)
		}
	})
}
