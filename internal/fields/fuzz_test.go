package fields

import (
	"testing"
)

// FuzzParseManifest: parsing never panics, and what parses formats back to itself.
func FuzzParseManifest(f *testing.F) {
	for _, s := range []string{
		"v1;id=AAAAAAAAAAAAAAAAAAAAAA;r=;t=AAAAAAAAAAAAAAAAAAAAAA",
		"v1;id=AAAAAAAAAAAAAAAAAAAAAA;tk=pii;dk=d;fk=f@3;r=a:t,b[].c:d,e:fbc,g:e;t=AAAAAAAAAAAAAAAAAAAAAA",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := parseManifest(s, nil)
		if err != nil {
			return
		}
		if m.format() != s {
			t.Fatalf("parseManifest(%q) formats back as %q", s, m.format())
		}
	})
}

// FuzzOpen: Open of arbitrary bodies under a well-formed envelope never panics and never
// succeeds without the MAC.
func FuzzOpen(f *testing.F) {
	e := newTestEnv(f)
	out := e.protect1(f, purchaseJSON, nil, mustPolicy(f, mixedPolicy))
	f.Add(out.Body, out.Metadata[ManifestKey])
	f.Fuzz(func(t *testing.T, body []byte, manifest string) {
		md := map[string]string{"pubcrypt": out.Metadata["pubcrypt"], "pubcrypt-dek": out.Metadata["pubcrypt-dek"], ManifestKey: manifest}
		_, _, err := e.opener.Open(t.Context(), body, md)
		if err == nil && (string(body) != string(out.Body) || manifest != out.Metadata[ManifestKey]) {
			t.Fatalf("Open accepted a changed message")
		}
	})
}
