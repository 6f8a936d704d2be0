package fpe

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
)

// ff1Vector is one entry of testdata/fpe/ff1_nist.json or ff1_long.json.
type ff1Vector struct {
	Sample     int    `json:"sample"`
	Alg        string `json:"alg"`
	Key        string `json:"key"`
	Radix      int    `json:"radix"`
	Tweak      string `json:"tweak"`
	Plaintext  string `json:"plaintext"`
	Ciphertext string `json:"ciphertext"`
}

func loadVectors(t *testing.T, path string) []ff1Vector {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Vectors []ff1Vector `json:"vectors"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return f.Vectors
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestNISTSamples(t *testing.T) {
	vs := loadVectors(t, "../../testdata/fpe/ff1_nist.json")
	if len(vs) != 9 {
		t.Fatalf("%d NIST samples, want 9", len(vs))
	}
	for _, v := range vs {
		t.Run(fmt.Sprintf("sample%d", v.Sample), func(t *testing.T) {
			testVector(t, v)
		})
	}
}

// TestLongVectors covers the math/big path (halves of 2^64 and more), which the
// NIST samples never reach; the expected values come from capitalone/fpe v1.2.1,
// an independent implementation (see testdata/fpe/compare).
func TestLongVectors(t *testing.T) {
	vs := loadVectors(t, "../../testdata/fpe/ff1_long.json")
	if len(vs) == 0 {
		t.Fatal("no vectors")
	}
	for _, v := range vs {
		t.Run(v.Alg, func(t *testing.T) { testVector(t, v) })
	}
}

func testVector(t *testing.T, v ff1Vector) {
	key, tweak := mustHex(t, v.Key), mustHex(t, v.Tweak)
	c, err := NewFF1(key, v.Radix)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Plaintext) < c.MinLen() {
		t.Fatalf("%d numerals below the domain minimum %d", len(v.Plaintext), c.MinLen())
	}
	got, err := c.Encrypt(v.Plaintext, tweak)
	if err != nil || got != v.Ciphertext {
		t.Errorf("Encrypt = %q, %v; want %q", got, err, v.Ciphertext)
	}
	got, err = c.Decrypt(v.Ciphertext, tweak)
	if err != nil || got != v.Plaintext {
		t.Errorf("Decrypt = %q, %v; want %q", got, err, v.Plaintext)
	}
	// Both arithmetic paths must agree with the vector whichever crypt picks.
	for _, decrypt := range []bool{false, true} {
		in, want := v.Plaintext, v.Ciphertext
		if decrypt {
			in, want = want, in
		}
		x := numerals(t, in)
		c.cryptBig(x, tweak, decrypt)
		if s := spell(x); s != want {
			t.Errorf("cryptBig(decrypt=%v) = %q, want %q", decrypt, s, want)
		}
	}
}

func numerals(t testing.TB, s string) []uint16 {
	t.Helper()
	x := make([]uint16, len(s))
	for i := range len(s) {
		d := numeralOf(s[i])
		if d >= len(Alphabet) {
			t.Fatalf("bad numeral in %q", s)
		}
		x[i] = uint16(d)
	}
	return x
}

func spell(x []uint16) string {
	var sb strings.Builder
	for _, d := range x {
		sb.WriteByte(Alphabet[d])
	}
	return sb.String()
}

// TestFastMatchesBig checks the uint64 path against the math/big path, which
// the long vectors tie to an independent implementation.
func TestFastMatchesBig(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	radixes := []int{2, 3, 7, 10, 16, 26, 36, 62, 255, 256, 1000, 4096, 65535, 65536}
	for range 3000 {
		radix := radixes[rng.IntN(len(radixes))]
		key := make([]byte, []int{16, 24, 32}[rng.IntN(3)])
		fill(rng, key)
		c, err := NewFF1(key, radix)
		if err != nil {
			t.Fatal(err)
		}
		// Longest n whose upper half still fits in a uint64.
		maxN := c.MinLen()
		for {
			if _, ok := pow64(radix, (maxN+2)/2); !ok {
				break
			}
			maxN++
		}
		n := c.MinLen() + rng.IntN(maxN-c.MinLen()+1)
		x := make([]uint16, n)
		for i := range x {
			x[i] = uint16(rng.IntN(radix))
		}
		tweak := make([]byte, rng.IntN(40))
		fill(rng, tweak)
		u := n / 2
		modU, _ := pow64(radix, u)
		modV, ok := pow64(radix, n-u)
		if !ok {
			t.Fatalf("radix %d n %d: half does not fit", radix, n)
		}
		fast, slow := slices.Clone(x), slices.Clone(x)
		c.cryptUint64(fast, tweak, false, modU, modV)
		c.cryptBig(slow, tweak, false)
		if !slices.Equal(fast, slow) {
			t.Fatalf("radix %d n %d tweak %d: uint64 and big paths differ", radix, n, len(tweak))
		}
		c.cryptUint64(fast, tweak, true, modU, modV)
		if !slices.Equal(fast, x) {
			t.Fatalf("radix %d n %d: decrypt does not invert", radix, n)
		}
	}
}

func TestRoundTripAllLengths(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, radix := range []int{2, 10, 36, 65536} {
		key := make([]byte, 32)
		fill(rng, key)
		c, err := NewFF1(key, radix)
		if err != nil {
			t.Fatal(err)
		}
		for n := c.MinLen(); n <= MaxLen; n++ {
			x := make([]uint16, n)
			for i := range x {
				x[i] = uint16(rng.IntN(radix))
			}
			tweak := make([]byte, rng.IntN(MaxTweakLen+1))
			fill(rng, tweak)
			y, err := c.EncryptNumerals(x, tweak)
			if err != nil {
				t.Fatal(err)
			}
			if len(y) != n || (n > 8 && slices.Equal(x, y)) {
				t.Fatalf("radix %d n %d: bad ciphertext", radix, n)
			}
			z, err := c.DecryptNumerals(y, tweak)
			if err != nil || !slices.Equal(z, x) {
				t.Fatalf("radix %d n %d: round trip failed: %v", radix, n, err)
			}
		}
	}
}

func TestMinLen(t *testing.T) {
	for radix, want := range map[int]int{2: 20, 3: 13, 10: 6, 16: 5, 36: 4, 99: 4, 100: 3, 999: 3, 1000: 2, 65536: 2} {
		c, err := NewFF1(make([]byte, 16), radix)
		if err != nil {
			t.Fatal(err)
		}
		if c.MinLen() != want {
			t.Errorf("radix %d: MinLen %d, want %d", radix, c.MinLen(), want)
		}
	}
}

func TestErrors(t *testing.T) {
	for _, n := range []int{0, 8, 15, 17, 31, 33, 64} {
		if _, err := NewFF1(make([]byte, n), 10); !errors.Is(err, ErrKeySize) {
			t.Errorf("key of %d bytes: %v", n, err)
		}
	}
	for _, r := range []int{-1, 0, 1, MaxRadix + 1} {
		if _, err := NewFF1(make([]byte, 16), r); !errors.Is(err, ErrRadix) {
			t.Errorf("radix %d: %v", r, err)
		}
	}
	c10, _ := NewFF1(make([]byte, 16), 10)
	c1000, _ := NewFF1(make([]byte, 16), 1000)

	_, err := c10.Encrypt("98765", nil)
	var de *DomainError
	if !errors.Is(err, ErrDomainTooSmall) || !errors.As(err, &de) || de.Len != 5 || de.Radix != 10 || de.MinLen != 6 {
		t.Errorf("5 digits: %v", err)
	}
	if err != nil && strings.Contains(err.Error(), "98765") {
		t.Errorf("error %q names the value", err)
	}
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"too long", second(c10.Encrypt(strings.Repeat("1", MaxLen+1), nil)), ErrTooLong},
		{"tweak too long", second(c10.Decrypt("123456", make([]byte, MaxTweakLen+1))), ErrTweakTooLong},
		{"letter in radix 10", second(c10.Encrypt("12345a", nil)), ErrNumeral},
		{"upper case", second(c10.Encrypt("12345A", nil)), ErrNumeral},
		{"non-ASCII", second(c10.Encrypt("12345\u0663", nil)), ErrNumeral},
		{"sign", second(c10.Encrypt("-123456", nil)), ErrNumeral},
		{"numeral above radix", second(c10.EncryptNumerals([]uint16{1, 2, 3, 4, 5, 10}, nil)), ErrNumeral},
		{"string form of radix 1000", second(c1000.Encrypt("123", nil)), ErrRadix},
		{"domain, numerals", second(c1000.DecryptNumerals([]uint16{999}, nil)), ErrDomainTooSmall},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, tc.err, tc.want)
		}
	}
	var zero FF1
	if _, err := zero.Encrypt("123456", nil); err == nil {
		t.Error("zero FF1 encrypted")
	}
	var nilc *FF1
	if _, err := nilc.DecryptNumerals(make([]uint16, 6), nil); err == nil {
		t.Error("nil FF1 decrypted")
	}
	if _, err := EncryptCard(nilc, "4111111111111111", nil, CardOptions{}); err == nil {
		t.Error("nil FF1 encrypted a card")
	}
}

func second[T any](_ T, err error) error { return err }

func TestEncryptNumeralsKeepsInput(t *testing.T) {
	c, _ := NewFF1(make([]byte, 16), 10)
	x := []uint16{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	y, err := c.EncryptNumerals(x, nil)
	if err != nil || !slices.Equal(x, []uint16{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}) || slices.Equal(x, y) {
		t.Fatalf("input changed or not encrypted: %v %v %v", x, y, err)
	}
}

// TestConcurrent shares one FF1 between goroutines; run with -race.
func TestConcurrent(t *testing.T) {
	c, _ := NewFF1(mustHex(t, "2b7e151628aed2a6abf7158809cf4f3c"), 10)
	want := make([]string, 50)
	for i := range want {
		x := strings.Repeat(string(rune('0'+i%10)), 10+i%30)
		want[i], _ = c.Encrypt(x, []byte{byte(i)})
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				x := strings.Repeat(string(rune('0'+i%10)), 10+i%30)
				if got, err := c.Encrypt(x, []byte{byte(i)}); err != nil || got != want[i] {
					t.Errorf("goroutine %d: %q, %v", g, got, err)
				}
			}
		})
	}
	wg.Wait()
}

func fill(rng *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
}
