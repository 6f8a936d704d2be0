package keyring

import (
	"strconv"
	"strings"
	"testing"
)

// The fuzz targets of keyring: what it parses of the ciphertexts and wrapped keys that
// arrive with messages. scripts/fuzz runs each for a set time; plain `go test` runs
// their seeds (and testdata/fuzz/<Target>/, if any) as unit tests. The package's
// TestMain starts a Vault dev server in every test process, fuzz workers included.

// FuzzWrappedVersion: wrappedVersion reads N from "vault:vN:..." exactly when the text
// has that form (N a decimal number without sign or leading zero, at least 1, and
// something after the second colon), and then the text starts with "vault:v" + N + ":":
// one spelling per version.
func FuzzWrappedVersion(f *testing.F) {
	for _, s := range []string{
		"vault:v1:AAAA", "vault:v12:x", "vault:v0:x", "vault:v01:x", "vault:v1:", "vault:v:x",
		"vault:v-1:x", "vault:v+1:x", "vault:v 1:x", "vault:v1", "vault:v9223372036854775807:x",
		"vault:v9223372036854775808:x", "vault:v1:a:b", "vault:V1:x", "Vault:v1:x", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, ok := wrappedVersion(s)
		want, wantOK := 0, false
		if rest, found := strings.CutPrefix(s, "vault:v"); found {
			num, body, found := strings.Cut(rest, ":")
			digits := num != "" && num[0] != '0' && strings.Trim(num, "0123456789") == ""
			if v, err := strconv.ParseUint(num, 10, 63); found && digits && body != "" && err == nil {
				want, wantOK = int(v), true
			}
		}
		if n != want || ok != wantOK {
			t.Fatalf("wrappedVersion(%q) = %d, %t; want %d, %t", s, n, ok, want, wantOK)
		}
		if ok && !strings.HasPrefix(s, "vault:v"+strconv.Itoa(n)+":") {
			t.Fatalf("wrappedVersion(%q) = %d: not the version's one spelling", s, n)
		}
	})
}
