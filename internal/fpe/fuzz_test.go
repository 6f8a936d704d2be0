package fpe

import (
	"errors"
	"slices"
	"testing"
)

// The fuzz targets of FF1 and the card and digit functions, whose input is the value of
// a field of someone's message. scripts/fuzz runs each for a set time; plain `go test`
// runs their seeds (and testdata/fuzz/<Target>/, if any) as unit tests.

// knownError reports whether err is one of the package's documented error kinds.
func knownError(err error) bool {
	for _, kind := range []error{ErrDomainTooSmall, ErrTooLong, ErrTweakTooLong, ErrNumeral, ErrRadix, ErrLuhn} {
		if errors.Is(err, kind) {
			return true
		}
	}
	return false
}

// FuzzCard: EncryptCard, EncryptDigits and the radix-36 string form on any input and
// tweak. What one direction refuses, the other refuses too, with a documented error
// kind; what is accepted keeps its length, every byte that is not a digit and its
// position, the digits the options keep, passes the Luhn check when asked, is the same
// on a second call, and decrypts to the input.
func FuzzCard(f *testing.F) {
	f.Add("4111 1111 1111 1111", []byte("t"), uint8(7))
	f.Add("4111 1111 1111 1111", []byte("t"), uint8(5))
	f.Add("378282246310005", []byte{}, uint8(5))
	f.Add("(555) 123-4567", []byte{0}, uint8(8))
	f.Add("+1 (555) 123-4567", []byte{0}, uint8(3))
	f.Add("12345", []byte{}, uint8(16))
	f.Add("zz0123456789", []byte{}, uint8(16))
	f.Add("٤١١١١١١١١١١١١١١١", []byte{}, uint8(0))
	f.Add("4111-1111-1111-1112", make([]byte, MaxTweakLen-11), uint8(6))
	c, _ := NewFF1(mustHex(f, nistKey256), 10)
	c36, _ := NewFF1(mustHex(f, nistKey256), 36)
	f.Fuzz(func(t *testing.T, s string, tweak []byte, sel uint8) {
		if len(s) > 4*MaxLen || len(tweak) > 2*MaxTweakLen {
			return
		}
		o := CardOptions{KeepBIN: sel&1 != 0, KeepLast4: sel&2 != 0, Luhn: sel&4 != 0}
		mode := (sel >> 3) % 3
		var encrypt, decrypt func(string) (string, error)
		switch mode {
		case 0:
			encrypt = func(x string) (string, error) { return EncryptCard(c, x, tweak, o) }
			decrypt = func(x string) (string, error) { return DecryptCard(c, x, tweak, o) }
		case 1:
			encrypt = func(x string) (string, error) { return EncryptDigits(c, x, tweak) }
			decrypt = func(x string) (string, error) { return DecryptDigits(c, x, tweak) }
		case 2:
			encrypt = func(x string) (string, error) { return c36.Encrypt(x, tweak) }
			decrypt = func(x string) (string, error) { return c36.Decrypt(x, tweak) }
		}
		enc, err := encrypt(s)
		if _, derr := decrypt(s); (err == nil) != (derr == nil) {
			t.Fatalf("%q: encrypt says %v, decrypt %v", s, err, derr)
		}
		if err != nil {
			if !knownError(err) {
				t.Fatalf("%q: unexpected error kind: %v", s, err)
			}
			return
		}
		if again, err := encrypt(s); err != nil || again != enc {
			t.Fatalf("%q: encrypts to %q, then %q (%v)", s, enc, again, err)
		}
		if dec, err := decrypt(enc); err != nil || dec != s {
			t.Fatalf("%q → %q → %q, %v", s, enc, dec, err)
		}
		if len(enc) != len(s) {
			t.Fatalf("%q → %q: length changed", s, enc)
		}
		if mode == 2 {
			return // every byte is a numeral
		}
		for i := 0; i < len(s); i++ {
			if isDigit, encDigit := '0' <= s[i] && s[i] <= '9', '0' <= enc[i] && enc[i] <= '9'; isDigit != encDigit || !isDigit && s[i] != enc[i] {
				t.Fatalf("%q → %q: byte %d changed class or value", s, enc, i)
			}
		}
		if mode == 1 {
			return
		}
		d, e := digitsOf(s), digitsOf(enc)
		if o.KeepBIN && d[:binLen] != e[:binLen] {
			t.Fatalf("%q → %q: BIN not kept", s, enc)
		}
		if o.KeepLast4 && d[len(d)-last4Len:] != e[len(e)-last4Len:] {
			t.Fatalf("%q → %q: last 4 not kept", s, enc)
		}
		if o.Luhn && !luhnOK(e) {
			t.Fatalf("%q → %q: fails the Luhn check", s, enc)
		}
	})
}

// FuzzFF1: FF1 over numerals of any radix, length and tweak. The two implementations
// agree where both apply (machine integers for halves below 2^64, math/big for any),
// in both directions; decryption inverts encryption; numerals stay below the radix.
func FuzzFF1(f *testing.F) {
	f.Add(uint16(10), []byte("0123456789"), []byte{})
	f.Add(uint16(10), []byte("0123456789"), []byte("9876543210"))
	f.Add(uint16(36), []byte("0123456789abcdefghi"), []byte("7777pqrs"))
	f.Add(uint16(2), []byte("0101010101010101010101"), []byte{})
	f.Add(uint16(65535), []byte{1, 2, 3, 4, 5, 6, 7, 8}, []byte{0xff})
	f.Add(uint16(10), make([]byte, 38), []byte("t"))    // halves of 19 digits: machine integers
	f.Add(uint16(10), make([]byte, 39), []byte("t"))    // a half of 20 digits: math/big only
	f.Add(uint16(9), make([]byte, MaxLen), []byte("t")) // the longest input
	f.Add(uint16(10), []byte("12345"), []byte{})        // too short
	f.Add(uint16(0), []byte("0123456789"), make([]byte, MaxTweakLen+1))
	f.Fuzz(func(t *testing.T, r uint16, raw, tweak []byte) {
		if len(raw) > 2*MaxLen+2 || len(tweak) > MaxTweakLen+1 {
			return
		}
		radix := max(int(r), 2)
		key := make([]byte, 16+8*int(r%3))
		copy(key, raw)
		c, err := NewFF1(key, radix)
		if err != nil {
			t.Fatalf("NewFF1(%d-byte key, %d): %v", len(key), radix, err)
		}
		// A numeral per byte up to radix 256, per two bytes above.
		var x []uint16
		if radix <= 256 {
			for _, b := range raw {
				x = append(x, uint16(int(b)%radix))
			}
		} else {
			for i := 0; i+1 < len(raw); i += 2 {
				x = append(x, uint16((int(raw[i])<<8|int(raw[i+1]))%radix))
			}
		}
		enc, err := c.EncryptNumerals(x, tweak)
		if _, derr := c.DecryptNumerals(x, tweak); (err == nil) != (derr == nil) {
			t.Fatalf("radix %d, %d numerals: encrypt says %v, decrypt %v", radix, len(x), err, derr)
		}
		if err != nil {
			if !knownError(err) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			if len(x) >= c.MinLen() && len(x) <= MaxLen && len(tweak) <= MaxTweakLen {
				t.Fatalf("radix %d, %d numerals, %d-byte tweak refused: %v", radix, len(x), len(tweak), err)
			}
			return
		}
		if len(enc) != len(x) {
			t.Fatalf("length %d → %d", len(x), len(enc))
		}
		for i, d := range enc {
			if int(d) >= radix {
				t.Fatalf("numeral %d of the ciphertext is %d, radix %d", i, d, radix)
			}
		}
		if dec, err := c.DecryptNumerals(enc, tweak); err != nil || !slices.Equal(dec, x) {
			t.Fatalf("radix %d: %v → %v → %v, %v", radix, x, enc, dec, err)
		}
		if _, fast := pow64(radix, len(x)-len(x)/2); fast {
			for _, decrypt := range []bool{false, true} {
				in := x
				want := enc
				if decrypt {
					in, want = enc, x
				}
				big := slices.Clone(in)
				c.cryptBig(big, tweak, decrypt)
				if !slices.Equal(big, want) {
					t.Fatalf("radix %d, decrypt %t: %v gives %v with machine integers, %v with math/big", radix, decrypt, in, want, big)
				}
			}
		}
	})
}
