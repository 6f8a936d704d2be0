package envelope

import (
	"bytes"
	"errors"
	"maps"
	"testing"
)

// FuzzParse: Parse never panics, fails only with ErrNoEnvelope or ErrMalformed, and
// accepts only headers in canonical form (formatting what it read gives the same string).
func FuzzParse(f *testing.F) {
	s := newSample(f)
	f.Add(s.md[HeaderKey], s.md[DEKKey], "content-type", "text/plain")
	f.Add("v1;alg=A256GCM;kid=k;n=AAAAAAAAAAAAAAAA", "w", "", "")
	f.Add("v1;alg=A256GCM;kid=k;n=AAAAAAAAAAAAAA==", "w", "pubcrypt-x", "")
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
		if got := formatHeader(env.KeyID, [12]byte(env.Nonce), env.SensitiveMeta); got != env.Header || got != md[HeaderKey] {
			t.Fatalf("accepted non-canonical header %q (canonical %q)", md[HeaderKey], got)
		}
		if !ValidValue(env.Wrapped) || env.Wrapped != md[DEKKey] {
			t.Fatalf("accepted wrapped key %q", env.Wrapped)
		}
	})
}

// FuzzOpen: receiving arbitrary changes of a valid message never panics and succeeds
// only for the message as sent.
func FuzzOpen(f *testing.F) {
	s := newSample(f)
	f.Add(s.md[HeaderKey], s.md[DEKKey], s.body, "", "")
	f.Add(s.md[HeaderKey], s.md[DEKKey], s.body, "x-region", "eu-west-1")
	f.Add(s.md[HeaderKey], s.md[DEKKey], s.body[:10], "x-region", "eu-west-2")
	f.Add(s.md[HeaderKey][:len(s.md[HeaderKey])-4], s.md[DEKKey], s.body, "a", "b")
	aead := newAEAD(s.key)
	f.Fuzz(func(t *testing.T, header, dek string, body []byte, k, v string) {
		md := maps.Clone(s.md)
		md[HeaderKey], md[DEKKey] = header, dek
		if k != "" {
			md[k] = v
		}
		env, err := Parse(md)
		if err != nil {
			return
		}
		gotBody, gotMD, err := env.Open(aead, body, md)
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

// FuzzRoundTrip: whatever Seal accepts, receiving gives back.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte("body"), "k1", "v1", "k2", "v2", uint8(1), uint64(0))
	f.Add([]byte{}, "", "", "pubcrypt", "x", uint8(3), uint64(1<<63))
	f.Add([]byte{0xff}, "a\xff", "é", "b", "\xff", uint8(2), uint64(7))
	aead := newAEAD(testKey("fuzz"))
	f.Fuzz(func(t *testing.T, body []byte, k1, v1, k2, v2 string, sensitive uint8, seq uint64) {
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
		gotBody, gotMD, err := receive(testKey("fuzz"), sealed, sent)
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		if !bytes.Equal(gotBody, body) || !maps.Equal(gotMD, md) {
			t.Fatalf("got %q %q, want %q %q", gotBody, gotMD, body, md)
		}
	})
}
