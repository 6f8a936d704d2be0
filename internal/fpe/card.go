package fpe

import (
	"errors"
	"fmt"
)

// ErrLuhn means a card number that fails the Luhn check while CardOptions.Luhn
// asks for Luhn-valid numbers.
var ErrLuhn = errors.New("fpe: card number fails the Luhn check")

// Separators are the bytes the digit functions leave in place. Anything else
// that is not an ASCII digit is refused: a letter or a non-ASCII digit would
// otherwise pass through in clear.
const Separators = " -./()+"

const (
	binLen   = 6
	last4Len = 4
	// cardTweakVersion starts every EncryptCard tweak; change it when the
	// construction changes.
	cardTweakVersion = 1
)

// CardOptions choose which digits of a card number EncryptCard keeps. The
// zero value encrypts every digit.
type CardOptions struct {
	// KeepBIN keeps the first 6 digits (issuer identification number).
	KeepBIN bool
	// KeepLast4 keeps the last 4 digits.
	KeepLast4 bool
	// Luhn makes the output pass the Luhn check; the input must pass it too.
	Luhn bool
}

// EncryptCard enciphers the digits of the card number s with c, which must
// have radix 10. Separators keep their positions and the length stays.
//
// Digits kept by o are copied unchanged, and FF1 encrypts the rest under the
// tweak
//
//	0x01 || flags || kept BIN (6 ASCII digits) || kept last 4 (4 ASCII digits) || tweak
//
// where flags has bit 0 for KeepBIN, bit 1 for KeepLast4, bit 2 for Luhn and a
// kept group appears only when its flag is set; equal middle digits under
// different kept digits thus encrypt differently. With o.Luhn one more digit is
// left out of FF1 and recomputed so that the result passes the Luhn check: the
// check digit, or with KeepLast4 the digit just before the last 4. The input
// must pass the Luhn check, which makes that digit redundant, so DecryptCard
// restores it exactly.
//
// FF1 needs at least 6 encrypted digits (a domain of 10^6): digits − 6·KeepBIN
// − 4·KeepLast4 − 1·Luhn ≥ 6, else the error is ErrDomainTooSmall. A 16-digit
// card allows any options except all three (5 digits left); a 13- or 15-digit
// card allows neither KeepBIN with KeepLast4 nor all three; 19 digits allow
// all. The tweak may be up to MaxTweakLen-12 bytes.
func EncryptCard(c *FF1, s string, tweak []byte, o CardOptions) (string, error) {
	return cryptCard(c, s, tweak, o, false)
}

// DecryptCard inverts EncryptCard under the same tweak and options.
func DecryptCard(c *FF1, s string, tweak []byte, o CardOptions) (string, error) {
	return cryptCard(c, s, tweak, o, true)
}

// EncryptDigits enciphers every ASCII digit of s with c (radix 10) under tweak
// as one FF1 numeral string, leaving the Separators in place: for SSNs, phone
// and account numbers. Without separators it is FF1 itself.
func EncryptDigits(c *FF1, s string, tweak []byte) (string, error) {
	return cryptDigits(c, s, tweak, false)
}

// DecryptDigits inverts EncryptDigits under the same tweak.
func DecryptDigits(c *FF1, s string, tweak []byte) (string, error) {
	return cryptDigits(c, s, tweak, true)
}

func cryptDigits(c *FF1, s string, tweak []byte, decrypt bool) (string, error) {
	var buf [32]uint16
	d, err := parseDigits(c, s, buf[:0])
	if err != nil {
		return "", err
	}
	if err := c.check(len(d), tweak); err != nil {
		return "", err
	}
	c.crypt(d, tweak, decrypt)
	return spellDigits(s, d), nil
}

func cryptCard(c *FF1, s string, tweak []byte, o CardOptions, decrypt bool) (string, error) {
	var buf [32]uint16
	d, err := parseDigits(c, s, buf[:0])
	if err != nil {
		return "", err
	}
	// Encrypt d[lo:hi]; with Luhn, d[hi] is the digit recomputed afterwards.
	lo, hi := 0, len(d)
	var flags byte
	if o.KeepBIN {
		lo = binLen
		flags |= 1
	}
	if o.KeepLast4 {
		hi -= last4Len
		flags |= 2
	}
	if o.Luhn {
		hi--
		flags |= 4
	}
	if n := hi - lo; n < c.minLen {
		return "", fmt.Errorf("fpe: card of %d digits leaves %d to encrypt with these options: %w",
			len(d), max(n, 0), &DomainError{Len: max(n, 0), Radix: c.radix, MinLen: c.minLen})
	}
	if o.Luhn && !luhnValid(d) {
		return "", ErrLuhn
	}
	var tb [MaxTweakLen + 1]byte
	t := append(tb[:0], cardTweakVersion, flags)
	if o.KeepBIN {
		t = appendASCII(t, d[:binLen])
	}
	if o.KeepLast4 {
		t = appendASCII(t, d[len(d)-last4Len:])
	}
	if len(tweak) > MaxTweakLen-len(t) {
		return "", fmt.Errorf("%w: %d bytes, at most %d for cards", ErrTweakTooLong, len(tweak), MaxTweakLen-len(t))
	}
	t = append(t, tweak...)
	if err := c.check(hi-lo, t); err != nil {
		return "", err
	}
	c.crypt(d[lo:hi], t, decrypt)
	if o.Luhn {
		fixLuhn(d, hi)
	}
	return spellDigits(s, d), nil
}

// parseDigits appends the digits of s to dst and refuses bytes that are
// neither digits nor separators.
func parseDigits(c *FF1, s string, dst []uint16) ([]uint16, error) {
	if c == nil || c.block == nil {
		return nil, errNoCipher
	}
	if c.radix != 10 {
		return nil, fmt.Errorf("%w: digit functions need radix 10, not %d", ErrRadix, c.radix)
	}
	for i := 0; i < len(s); i++ {
		switch ch := s[i]; {
		case '0' <= ch && ch <= '9':
			if len(dst) == MaxLen {
				return nil, fmt.Errorf("%w: more than %d digits", ErrTooLong, MaxLen)
			}
			dst = append(dst, uint16(ch-'0'))
		case !isSeparator(ch):
			return nil, fmt.Errorf("%w: byte %d is neither a digit nor one of %q", ErrNumeral, i, Separators)
		}
	}
	return dst, nil
}

func isSeparator(ch byte) bool {
	for i := range len(Separators) {
		if Separators[i] == ch {
			return true
		}
	}
	return false
}

// spellDigits writes d over the digits of s.
func spellDigits(s string, d []uint16) string {
	out := []byte(s)
	k := 0
	for i, ch := range out {
		if '0' <= ch && ch <= '9' {
			out[i] = byte('0' + d[k])
			k++
		}
	}
	return string(out)
}

func appendASCII(dst []byte, d []uint16) []byte {
	for _, v := range d {
		dst = append(dst, byte('0'+v))
	}
	return dst
}

// luhnSum is the Luhn sum mod 10 of d, the last digit being the check digit,
// leaving out d[skip] (skip < 0 leaves out none).
func luhnSum(d []uint16, skip int) int {
	sum := 0
	for i, v := range d {
		if i == skip {
			continue
		}
		x := int(v)
		if (len(d)-1-i)%2 == 1 {
			x = int(luhnDouble[x] - '0')
		}
		sum += x
	}
	return sum % 10
}

func luhnValid(d []uint16) bool { return luhnSum(d, -1) == 0 }

// fixLuhn sets d[at] to the one digit that makes d pass the Luhn check.
func fixLuhn(d []uint16, at int) {
	need := (10 - luhnSum(d, at)) % 10
	if (len(d)-1-at)%2 == 1 {
		need = int(luhnHalve[need] - '0')
	}
	d[at] = uint16(need)
}

// Luhn doubling of a digit (2x, minus 9 past 9) and its inverse, as tables.
const (
	luhnDouble = "0246813579"
	luhnHalve  = "0516273849"
)
