package wire

import (
	"bytes"
	"encoding/hex"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func TestHeaderRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		kid       string
		seq       uint64
		sensitive bool
		want      string
	}{
		{"orders", 0, false, "v1;alg=A256GCM;kid=orders;n=AAAAAAAAAAAAAAAA"},
		{"orders", 1, true, "v1;alg=A256GCM;kid=orders;n=AAAAAAAAAAAAAAAB;m=1"},
		{"a.b_c-D9", 1<<64 - 1, false, "v1;alg=A256GCM;kid=a.b_c-D9;n=AAAAAP__________"},
		{strings.Repeat("k", MaxKeyIDLen), 1 << 40, true, "v1;alg=A256GCM;kid=" + strings.Repeat("k", MaxKeyIDLen) + ";n=AAAAAAAAAQAAAAAA;m=1"},
	} {
		h := FormatHeader(tc.kid, Nonce(tc.seq), tc.sensitive)
		if h != tc.want {
			t.Errorf("FormatHeader(%q, Nonce(%d), %v) = %q, want %q", tc.kid, tc.seq, tc.sensitive, h, tc.want)
		}
		kid, nonce, sensitive, err := ParseHeader(h)
		if err != nil || kid != tc.kid || nonce != Nonce(tc.seq) || sensitive != tc.sensitive {
			t.Errorf("ParseHeader(%q) = %q %x %v %v", h, kid, nonce, sensitive, err)
		}
	}
	// A nonce the sequence numbers never give still round-trips: the header does not
	// interpret it (docs/FORMAT.md, section 6).
	var n [NonceSize]byte
	copy(n[:], "\xff\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\xfe")
	if _, got, _, err := ParseHeader(FormatHeader("k", n, false)); err != nil || got != n {
		t.Errorf("nonce %x: got %x, %v", n, got, err)
	}
	// The longest valid header (docs/FORMAT.md, section 4).
	if n := len(FormatHeader(strings.Repeat("k", MaxKeyIDLen), Nonce(0), true)); n != 170 {
		t.Errorf("longest header is %d bytes, want 170", n)
	}
}

func TestParseHeaderRefuses(t *testing.T) {
	const good = "v1;alg=A256GCM;kid=orders;n=AAAAAAAAAAAAAAAB"
	for _, h := range []string{
		"",
		"v1",
		"v1;",
		"v2;alg=A256GCM;kid=orders;n=AAAAAAAAAAAAAAAB",
		"V1;alg=A256GCM;kid=orders;n=AAAAAAAAAAAAAAAB",
		"v1;alg=A128GCM;kid=orders;n=AAAAAAAAAAAAAAAB",
		"v1;alg=a256gcm;kid=orders;n=AAAAAAAAAAAAAAAB",
		"v1;kid=orders;n=AAAAAAAAAAAAAAAB",
		"v1;alg=A256GCM;n=AAAAAAAAAAAAAAAB;kid=orders",
		"v1;alg=A256GCM;kid=orders",
		"v1;alg=A256GCM;kid=;n=AAAAAAAAAAAAAAAB",
		"v1;alg=A256GCM;kid=ord/ers;n=AAAAAAAAAAAAAAAB",
		"v1;alg=A256GCM;kid=ord ers;n=AAAAAAAAAAAAAAAB",
		"v1;alg=A256GCM;kid=" + strings.Repeat("k", MaxKeyIDLen+1) + ";n=AAAAAAAAAAAAAAAB",
		"v1;alg=A256GCM;kid=orders;kid=orders;n=AAAAAAAAAAAAAAAB",
		"v1;alg=A256GCM;kid=orders;x=1;n=AAAAAAAAAAAAAAAB",
		"v1;alg=A256GCM;kid=orders;N=AAAAAAAAAAAAAAAB",
		"v1;alg=A256GCM;kid=orders;n=",
		"v1;alg=A256GCM;kid=orders;n=AAAAAAAAAAAAAAA",    // 15 characters
		"v1;alg=A256GCM;kid=orders;n=AAAAAAAAAAAAAAAAB",  // 17 characters
		"v1;alg=A256GCM;kid=orders;n=AAAAAAAAAAAAAAA=",   // padding
		"v1;alg=A256GCM;kid=orders;n=AAAAAAAAAAAAAAA+",   // standard alphabet
		"v1;alg=A256GCM;kid=orders;n=AAAAAAAAAAAAAAA/",   // standard alphabet
		"v1;alg=A256GCM;kid=orders;n=AAAAAAAA\nAAAAAAAB", // the decoder skips newlines
		"v1;alg=A256GCM;kid=orders;n=AAAAAAAA\rAAAAAAA",
		good + ";",
		good + ";m=1;m=1",
		good + ";m=0",
		good + ";M=1",
		good + ";x=1",
		good + " ",
		" " + good,
		good + ";m=1" + strings.Repeat("x", MaxValueLen),
	} {
		if kid, nonce, sensitive, err := ParseHeader(h); err == nil {
			t.Errorf("ParseHeader(%q) = %q %x %v, want an error", h, kid, nonce, sensitive)
		} else if !strings.HasPrefix(err.Error(), "header") {
			t.Errorf("ParseHeader(%q): error %q does not say it is the header", h, err)
		}
	}
}

func TestValid(t *testing.T) {
	for _, tc := range []struct {
		s            string
		keyID, value bool
		reserved     bool
		desc         string
	}{
		{"orders", true, true, false, ""},
		{"A-Z.a_z.0-9", true, true, false, ""},
		{"", false, false, false, "empty"},
		{strings.Repeat("k", MaxKeyIDLen), true, true, false, "longest key ID"},
		{strings.Repeat("k", MaxKeyIDLen+1), false, true, false, "key ID too long"},
		{strings.Repeat("v", MaxValueLen), false, true, false, "longest value"},
		{strings.Repeat("v", MaxValueLen+1), false, false, false, "value too long"},
		{"with space", false, true, false, ""},
		{"~!", false, true, false, ""},
		{"tab\t", false, false, false, "control character"},
		{"\x7f", false, false, false, "DEL"},
		{"é", false, false, false, "not ASCII"},
		{"pubcrypt", true, true, true, ""},
		{"pubcrypt-anything", true, true, true, ""},
		{"Pubcrypt", true, true, false, "case-sensitive"},
		{"xpubcrypt", true, true, false, "prefix only"},
	} {
		if got := ValidKeyID(tc.s); got != tc.keyID {
			t.Errorf("ValidKeyID(%.40q) = %v (%s)", tc.s, got, tc.desc)
		}
		if got := ValidValue(tc.s); got != tc.value {
			t.Errorf("ValidValue(%.40q) = %v (%s)", tc.s, got, tc.desc)
		}
		if got := Reserved(tc.s); got != tc.reserved {
			t.Errorf("Reserved(%.40q) = %v (%s)", tc.s, got, tc.desc)
		}
	}
}

func TestNonce(t *testing.T) {
	for seq, want := range map[uint64]string{
		0:                  "000000000000000000000000",
		1:                  "000000000000000000000001",
		1<<64 - 1:          "00000000ffffffffffffffff",
		0x0102030405060708: "000000000102030405060708",
	} {
		if n := Nonce(seq); hex.EncodeToString(n[:]) != want {
			t.Errorf("Nonce(%d) = %x, want %s", seq, n, want)
		}
	}
}

func TestDecodeFixed(t *testing.T) {
	for _, tc := range []struct {
		size int
		text string
		want string // hex; "" for refused
	}{
		{16, "AAECAwQFBgcICQoLDA0ODw", "000102030405060708090a0b0c0d0e0f"},
		{16, "_____________________w", "ffffffffffffffffffffffffffffffff"},
		{16, "_____________________x", ""}, // non-zero padding bits
		{16, "AAECAwQFBgcICQoLDA0ODw==", ""},
		{16, "AAECAwQFBgcICQoLDA0OD", ""},
		{16, "AAECAwQFBgcICQoLDA0ODwA", ""},
		{16, "AAECAwQFBgcICQoLDA0OD\n", ""},
		{16, "AAECAwQFBgcICQoLDA0OD+", ""},
		{12, "AAAAAAAAAAAAAAAB", "000000000000000000000001"},
		{12, "AAAAAAAAAAAAAAA", ""},
	} {
		dst := make([]byte, tc.size)
		ok := DecodeFixed(dst, tc.text)
		switch {
		case tc.want == "" && ok:
			t.Errorf("DecodeFixed(%d, %q) = %x, want refused", tc.size, tc.text, dst)
		case tc.want != "" && (!ok || hex.EncodeToString(dst) != tc.want):
			t.Errorf("DecodeFixed(%d, %q) = %x %v, want %s", tc.size, tc.text, dst, ok, tc.want)
		}
	}
}

func TestLengthPrefix(t *testing.T) {
	b := AppendString(nil, "key")
	b = AppendString(b, []byte{})
	b = AppendString(b, strings.Repeat("v", 300))
	if want := "\x00\x00\x00\x03key\x00\x00\x00\x00\x00\x00\x01\x2c"; !bytes.HasPrefix(b, []byte(want)) || len(b) != len(want)+300 {
		t.Fatalf("AppendString: %q", b)
	}
	var got []string
	for rest := b; len(rest) > 0; {
		s, n, ok := ReadString(rest)
		if !ok {
			t.Fatalf("ReadString(%q) refused", rest)
		}
		got = append(got, s)
		rest = rest[n:]
	}
	if len(got) != 3 || got[0] != "key" || got[1] != "" || got[2] != strings.Repeat("v", 300) {
		t.Errorf("read back %q", got)
	}

	// Every truncation is refused, never read short.
	one := AppendString(nil, "abcdef")
	for i := range len(one) {
		if s, n, ok := ReadString(one[:i]); ok {
			t.Errorf("ReadString of %d of %d bytes = %q %d, want refused", i, len(one), s, n)
		}
	}
	// A length larger than anything that could follow.
	if _, _, ok := ReadString([]byte("\xff\xff\xff\xffabc")); ok {
		t.Error("ReadString accepted a length of 2^32-1 with 3 bytes")
	}
}

func TestFitsU32(t *testing.T) {
	if !FitsU32(0) || !FitsU32(1<<32-1) {
		t.Error("FitsU32 refuses a 32-bit length")
	}
	if FitsU32(1<<32) || FitsU32(-1) {
		t.Error("FitsU32 accepts a length beyond 32 bits")
	}
}

func BenchmarkParseHeader(b *testing.B) {
	h := FormatHeader("orders", Nonce(1<<40), true)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, err := ParseHeader(h); err != nil {
			b.Fatal(err)
		}
	}
}

// TestValidValueWords checks the word-at-a-time ValidValue against the byte-by-byte
// rule, for every byte value at every position of a word and on random strings.
func TestValidValueWords(t *testing.T) {
	naive := func(v string) bool {
		if len(v) == 0 || len(v) > MaxValueLen {
			return false
		}
		for i := 0; i < len(v); i++ {
			if v[i] < 0x20 || v[i] > 0x7e {
				return false
			}
		}
		return true
	}
	base := []byte("vault:v1:ABCDEFGHIJKLMNOPQRSTUVWXYZ~ 0123456789")
	for pos := range base {
		for c := range 256 {
			b := slices.Clone(base)
			b[pos] = byte(c)
			if got, want := ValidValue(string(b)), naive(string(b)); got != want {
				t.Fatalf("byte %#x at %d: ValidValue = %v, want %v", c, pos, got, want)
			}
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = byte(0x1e + r.IntN(0x63)) // mostly printable, edges on both sides
			if r.IntN(50) == 0 {
				b[i] = byte(r.IntN(256))
			}
		}
		if got, want := ValidValue(string(b)), naive(string(b)); got != want {
			t.Fatalf("%q: ValidValue = %v, want %v", b, got, want)
		}
	}
}
