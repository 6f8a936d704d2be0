package fpe

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"math/bits"
)

const (
	// MinDomain is the fewest values a message space may have: radix^len must
	// reach it (NIST SP 800-38G Rev. 1, 2025 draft).
	MinDomain = 1_000_000
	// MaxLen is the most numerals one call encrypts. NIST allows 2^32; card
	// numbers, account numbers and identifiers need far fewer, and a bound keeps
	// the cost of one bad input small.
	MaxLen = 256
	// MaxTweakLen is the longest tweak, in bytes.
	MaxTweakLen = 256
	// MaxRadix is the largest radix NewFF1 accepts.
	MaxRadix = 1 << 16
	// Alphabet spells numerals for the string methods: radix r uses Alphabet[:r].
	Alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"

	rounds = 10
)

var (
	// ErrDomainTooSmall means radix^len < MinDomain; the error is a *DomainError.
	ErrDomainTooSmall = errors.New("fpe: domain too small")
	// ErrTooLong means more than MaxLen numerals.
	ErrTooLong = errors.New("fpe: input too long")
	// ErrTweakTooLong means a tweak of more than MaxTweakLen bytes.
	ErrTweakTooLong = errors.New("fpe: tweak too long")
	// ErrNumeral means a character or numeral outside the cipher's radix, or
	// (for the digit functions) a byte that is neither a digit nor a separator.
	ErrNumeral = errors.New("fpe: invalid numeral")
	// ErrRadix means a radix the call cannot use.
	ErrRadix = errors.New("fpe: unsupported radix")
	// ErrKeySize means a key that is not 16, 24 or 32 bytes.
	ErrKeySize = errors.New("fpe: key must be 16, 24 or 32 bytes")

	errNoCipher = errors.New("fpe: FF1 not created with NewFF1")
)

// DomainError reports an input too short for the cipher's radix. It names the
// length and radix, never the value.
type DomainError struct {
	Len    int // numerals the call would encrypt
	Radix  int
	MinLen int // fewest numerals this radix allows
}

func (e *DomainError) Error() string {
	return fmt.Sprintf("fpe: domain too small: %d numerals of radix %d give fewer than %d values; radix %d needs at least %d",
		e.Len, e.Radix, MinDomain, e.Radix, e.MinLen)
}

// Is makes errors.Is(err, ErrDomainTooSmall) true.
func (e *DomainError) Is(target error) bool { return target == ErrDomainTooSmall }

// FF1 is the FF1 mode of NIST SP 800-38G over AES for one key and radix. It
// holds no mutable state and is safe for concurrent use.
type FF1 struct {
	block  cipher.Block
	radix  int
	minLen int
}

// NewFF1 returns FF1 under an AES-128, -192 or -256 key (16, 24 or 32 bytes)
// for numerals of the given radix, 2 to MaxRadix.
func NewFF1(key []byte, radix int) (*FF1, error) {
	switch len(key) {
	case 16, 24, 32:
	default:
		return nil, ErrKeySize
	}
	if radix < 2 || radix > MaxRadix {
		return nil, fmt.Errorf("%w: %d (want 2 to %d)", ErrRadix, radix, MaxRadix)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("fpe: %w", err)
	}
	// NIST also asks for at least two numerals, so the Feistel halves are not empty.
	minLen, dom := 1, radix
	for minLen < 2 || dom < MinDomain {
		minLen++
		dom *= radix // stops by 1e6·65536, no overflow
	}
	return &FF1{block: block, radix: radix, minLen: minLen}, nil
}

// Radix returns the radix the cipher was created with.
func (c *FF1) Radix() int { return c.radix }

// MinLen returns the fewest numerals the cipher encrypts: the least n ≥ 2 with
// radix^n ≥ MinDomain (6 for radix 10, 4 for radix 36).
func (c *FF1) MinLen() int { return c.minLen }

// Encrypt enciphers x, a string over Alphabet[:radix], under tweak. The result
// has the same length and alphabet. Radix must be at most 36.
func (c *FF1) Encrypt(x string, tweak []byte) (string, error) {
	return c.cryptString(x, tweak, false)
}

// Decrypt inverts Encrypt under the same tweak.
func (c *FF1) Decrypt(x string, tweak []byte) (string, error) {
	return c.cryptString(x, tweak, true)
}

// EncryptNumerals enciphers x, numerals each below the radix, under tweak,
// into a new slice of the same length. It serves every radix.
func (c *FF1) EncryptNumerals(x []uint16, tweak []byte) ([]uint16, error) {
	return c.cryptNumerals(x, tweak, false)
}

// DecryptNumerals inverts EncryptNumerals under the same tweak.
func (c *FF1) DecryptNumerals(x []uint16, tweak []byte) ([]uint16, error) {
	return c.cryptNumerals(x, tweak, true)
}

func (c *FF1) cryptString(x string, tweak []byte, decrypt bool) (string, error) {
	if err := c.check(len(x), tweak); err != nil {
		return "", err
	}
	if c.radix > len(Alphabet) {
		return "", fmt.Errorf("%w: %d has no string form (use the Numerals methods)", ErrRadix, c.radix)
	}
	num := make([]uint16, len(x))
	for i := 0; i < len(x); i++ {
		d := numeralOf(x[i])
		if d >= c.radix {
			return "", fmt.Errorf("%w: character %d is not in radix %d", ErrNumeral, i, c.radix)
		}
		num[i] = uint16(d)
	}
	c.crypt(num, tweak, decrypt)
	out := make([]byte, len(num))
	for i, d := range num {
		out[i] = Alphabet[d]
	}
	return string(out), nil
}

func (c *FF1) cryptNumerals(x []uint16, tweak []byte, decrypt bool) ([]uint16, error) {
	if err := c.check(len(x), tweak); err != nil {
		return nil, err
	}
	for i, d := range x {
		if int(d) >= c.radix {
			return nil, fmt.Errorf("%w: numeral %d is not in radix %d", ErrNumeral, i, c.radix)
		}
	}
	out := append([]uint16(nil), x...)
	c.crypt(out, tweak, decrypt)
	return out, nil
}

// numeralOf maps a character of Alphabet to its value and anything else to a
// value no radix accepts.
func numeralOf(ch byte) int {
	switch {
	case '0' <= ch && ch <= '9':
		return int(ch - '0')
	case 'a' <= ch && ch <= 'z':
		return int(ch-'a') + 10
	}
	return MaxRadix
}

// check validates everything but the numerals themselves.
func (c *FF1) check(n int, tweak []byte) error {
	if c == nil || c.block == nil {
		return errNoCipher
	}
	if n < c.minLen {
		return &DomainError{Len: n, Radix: c.radix, MinLen: c.minLen}
	}
	if n > MaxLen {
		return fmt.Errorf("%w: %d numerals, at most %d", ErrTooLong, n, MaxLen)
	}
	if len(tweak) > MaxTweakLen {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrTweakTooLong, len(tweak), MaxTweakLen)
	}
	return nil
}

// crypt runs FF1 (SP 800-38G, Algorithms 7 and 8) over x in place. The caller
// has checked lengths and numerals.
func (c *FF1) crypt(x []uint16, tweak []byte, decrypt bool) {
	u := len(x) / 2
	v := len(x) - u
	if modV, ok := pow64(c.radix, v); ok {
		modU, _ := pow64(c.radix, u)
		c.cryptUint64(x, tweak, decrypt, modU, modV)
		return
	}
	c.cryptBig(x, tweak, decrypt)
}

// pow64 returns r^e and whether it fits in a uint64.
func pow64(r, e int) (uint64, bool) {
	p := uint64(1)
	for range e {
		hi, lo := bits.Mul64(p, uint64(r))
		if hi != 0 {
			return 0, false
		}
		p = lo
	}
	return p, true
}

// cryptUint64 is FF1 for halves below 2^64 (up to 38 decimal digits), where
// numeral strings are machine integers; it gives the same results as cryptBig.
func (c *FF1) cryptUint64(x []uint16, tweak []byte, decrypt bool, modU, modV uint64) {
	u := len(x) / 2
	b := (bits.Len64(modV-1) + 7) / 8 // byte length of NUM(B): ⌈⌈v·log2(radix)⌉/8⌉, computed exactly
	f := newPRF(c.block, c.radix, len(x), u, tweak, b)
	r := uint64(c.radix)
	a, bb := num64(x[:u], r), num64(x[u:], r)
	var nb [8]byte
	for k := range rounds {
		i := k
		if decrypt {
			i = rounds - 1 - k
		}
		m := modU
		if i%2 == 1 {
			m = modV
		}
		in := bb
		if decrypt {
			in = a
		}
		binary.BigEndian.PutUint64(nb[:], in)
		copy(f.num(), nb[8-b:])
		s := f.round(i)
		// b ≤ 8, so d is 8 or 12 bytes.
		var hi, lo uint64
		if len(s) == 12 {
			hi, lo = uint64(binary.BigEndian.Uint32(s)), binary.BigEndian.Uint64(s[4:])
		} else {
			lo = binary.BigEndian.Uint64(s)
		}
		y := bits.Rem64(hi, lo, m)
		if !decrypt {
			// a, y < m, so a+y < 2m: one conditional subtraction, mod 2^64.
			sum, carry := bits.Add64(a, y, 0)
			if carry != 0 || sum >= m {
				sum -= m
			}
			a, bb = bb, sum
		} else {
			diff := bb - y
			if bb < y {
				diff += m
			}
			a, bb = diff, a
		}
	}
	str64(x[:u], a, r)
	str64(x[u:], bb, r)
}

func num64(x []uint16, r uint64) uint64 {
	var n uint64
	for _, d := range x {
		n = n*r + uint64(d)
	}
	return n
}

func str64(dst []uint16, n, r uint64) {
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = uint16(n % r)
		n /= r
	}
}

// cryptBig is FF1 for any length, with math/big numeral strings.
func (c *FF1) cryptBig(x []uint16, tweak []byte, decrypt bool) {
	u := len(x) / 2
	v := len(x) - u
	r := big.NewInt(int64(c.radix))
	modU := new(big.Int).Exp(r, big.NewInt(int64(u)), nil)
	modV := new(big.Int).Exp(r, big.NewInt(int64(v)), nil)
	b := (new(big.Int).Sub(modV, big.NewInt(1)).BitLen() + 7) / 8
	f := newPRF(c.block, c.radix, len(x), u, tweak, b)
	a, bb := numBig(x[:u], r), numBig(x[u:], r)
	y := new(big.Int)
	for k := range rounds {
		i := k
		if decrypt {
			i = rounds - 1 - k
		}
		m := modU
		if i%2 == 1 {
			m = modV
		}
		if decrypt {
			a.FillBytes(f.num())
		} else {
			bb.FillBytes(f.num())
		}
		y.SetBytes(f.round(i))
		if !decrypt {
			cc := new(big.Int).Add(a, y)
			a, bb = bb, cc.Mod(cc, m) // Mod is Euclidean: never negative
		} else {
			cc := new(big.Int).Sub(bb, y)
			a, bb = cc.Mod(cc, m), a
		}
	}
	strBig(x[:u], a, r)
	strBig(x[u:], bb, r)
}

func numBig(x []uint16, r *big.Int) *big.Int {
	n, d := new(big.Int), new(big.Int)
	for _, v := range x {
		n.Mul(n, r).Add(n, d.SetUint64(uint64(v)))
	}
	return n
}

func strBig(dst []uint16, n, r *big.Int) {
	q, m := new(big.Int).Set(n), new(big.Int)
	for i := len(dst) - 1; i >= 0; i-- {
		q.DivMod(q, r, m)
		dst[i] = uint16(m.Uint64())
	}
}

// prf computes S for each Feistel round: the CBC-MAC of P || Q, extended with
// CIPH(R ⊕ [j]^16) to d bytes. P and the whole blocks of Q that hold only
// tweak and padding are the same in every round, so their MAC state is
// computed once.
type prf struct {
	block cipher.Block
	h     [16]byte // CBC-MAC state after P and the constant blocks of Q
	tail  []byte   // the rest of Q, whole blocks, ending [i]^1 || [NUM(B)]^b
	s     []byte   // S, whole blocks; its first d bytes are returned
	b, d  int
	small [48]byte // tail and S for card-sized inputs, saving an allocation
}

func newPRF(block cipher.Block, radix, n, u int, tweak []byte, b int) *prf {
	t := len(tweak)
	var p [16]byte
	p[0], p[1], p[2] = 1, 2, 1
	p[3], p[4], p[5] = byte(radix>>16), byte(radix>>8), byte(radix)
	p[6], p[7] = 10, byte(u)
	binary.BigEndian.PutUint32(p[8:], uint32(n))
	binary.BigEndian.PutUint32(p[12:], uint32(t))

	f := &prf{block: block, b: b, d: 4*((b+3)/4) + 4}
	block.Encrypt(f.h[:], p[:])
	pad := ((-t-b-1)%16 + 16) % 16
	full := (t + pad) / 16
	for j := range full {
		var blk [16]byte
		copy(blk[:], tweak[min(16*j, t):min(16*j+16, t)])
		xor16(f.h[:], blk[:])
		block.Encrypt(f.h[:], f.h[:])
	}
	tailLen := t + pad + 1 + b - 16*full
	var buf []byte
	if need := tailLen + 16*((f.d+15)/16); need <= len(f.small) {
		buf = f.small[:need]
	} else {
		buf = make([]byte, need)
	}
	f.tail, f.s = buf[:tailLen], buf[tailLen:]
	copy(f.tail, tweak[min(16*full, t):]) // padding zeros follow
	return f
}

// num is where the caller writes [NUM_radix(B)]^b before round.
func (f *prf) num() []byte { return f.tail[len(f.tail)-f.b:] }

func (f *prf) round(i int) []byte {
	f.tail[len(f.tail)-f.b-1] = byte(i)
	r := f.s[:16]
	copy(r, f.h[:])
	for off := 0; off < len(f.tail); off += 16 {
		xor16(r, f.tail[off:off+16])
		f.block.Encrypt(r, r)
	}
	for j := 1; j < len(f.s)/16; j++ {
		blk := f.s[16*j : 16*j+16]
		copy(blk, r)
		var jb [8]byte
		binary.BigEndian.PutUint64(jb[:], uint64(j))
		for k := range jb {
			blk[8+k] ^= jb[k]
		}
		f.block.Encrypt(blk, blk)
	}
	return f.s[:f.d]
}

func xor16(dst, src []byte) {
	binary.LittleEndian.PutUint64(dst, binary.LittleEndian.Uint64(dst)^binary.LittleEndian.Uint64(src))
	binary.LittleEndian.PutUint64(dst[8:], binary.LittleEndian.Uint64(dst[8:])^binary.LittleEndian.Uint64(src[8:]))
}
