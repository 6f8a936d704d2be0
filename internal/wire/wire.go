// Package wire holds the primitives shared by the envelope, field and file formats of
// docs/FORMAT.md, docs/FIELDS.md and docs/FILES.md: the reserved metadata namespace, the
// rules for key IDs and entry values, the GCM nonce of a sequence number, the v1 header
// (the "pubcrypt" entry) and u32be length-prefixed strings.
//
// The package knows no error kinds of its own: ParseHeader's errors say what is wrong
// with a header, and each format wraps them into its own malformed error, so that the
// kind and the fault class of every error stay those of the format.
package wire

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
)

const (
	// ReservedPrefix starts every metadata key the formats keep for themselves.
	ReservedPrefix = "pubcrypt"
	// MaxKeyIDLen is the longest key ID, in characters (see ValidKeyID).
	MaxKeyIDLen = 128
	// MaxValueLen is the longest value of a format's metadata entry, in bytes: what every
	// broker pubcrypt targets carries (see ValidValue).
	MaxValueLen = 1024
	// NonceSize is the size of an AES-GCM nonce, in bytes.
	NonceSize = 12
	// TagSize is the size of an AES-GCM tag, in bytes.
	TagSize = 16
)

// The v1 header (docs/FORMAT.md, section 4).
const (
	headerVersion = "v1"
	headerPrefix  = "v1;alg=A256GCM;kid="
	nonceField    = ";n="
	sensitiveFlag = ";m=1"
	nonceTextLen  = 16 // base64url of NonceSize bytes, no padding
)

// Reserved reports whether a metadata key is in the reserved namespace: every key
// starting with "pubcrypt" (case-sensitive).
func Reserved(key string) bool { return strings.HasPrefix(key, ReservedPrefix) }

// RecordKeyFlag is the metadata key of the flag of a protected record key
// (docs/FORMAT.md section 3.2). It is reserved, so no producer sets it, but once the
// sender has added it, it is a clear entry like any other: in the associated data of
// both formats, and accepted by their receivers.
const RecordKeyFlag = "pubcrypt-key"

// ReservedNotClear reports whether a metadata key is reserved and not RecordKeyFlag: a
// key that a sealed message's clear metadata cannot hold.
func ReservedNotClear(key string) bool { return Reserved(key) && key != RecordKeyFlag }

// ValidKeyID reports whether id may name a key: 1 to MaxKeyIDLen characters from
// [A-Za-z0-9._-].
func ValidKeyID(id string) bool {
	if len(id) == 0 || len(id) > MaxKeyIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// ValidValue reports whether v fits a metadata entry of the formats on every broker
// pubcrypt targets: 1 to MaxValueLen bytes of printable ASCII (0x20-0x7E).
func ValidValue(v string) bool {
	if len(v) == 0 || len(v) > MaxValueLen {
		return false
	}
	// Eight bytes at a time (a wrapped data key is about 90): a word holds a byte below
	// 0x20 exactly when subtracting 0x20 from each byte borrows into a clear top bit, and
	// one above 0x7E exactly when adding 0x01 sets a top bit or one is set already.
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	i := 0
	for ; i+8 <= len(v); i += 8 {
		w := v[i : i+8]
		x := uint64(w[0]) | uint64(w[1])<<8 | uint64(w[2])<<16 | uint64(w[3])<<24 |
			uint64(w[4])<<32 | uint64(w[5])<<40 | uint64(w[6])<<48 | uint64(w[7])<<56
		if (x-0x20*ones)&^x&highs != 0 || (x+ones|x)&highs != 0 {
			return false
		}
	}
	for ; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			return false
		}
	}
	return true
}

// Nonce is the GCM nonce of sequence number seq: four zero bytes, then seq as a
// big-endian uint64 (docs/FORMAT.md, section 6).
func Nonce(seq uint64) [NonceSize]byte {
	var n [NonceSize]byte
	binary.BigEndian.PutUint64(n[4:], seq)
	return n
}

// FormatHeader builds the value of the "pubcrypt" entry:
// "v1;alg=A256GCM;kid=<keyID>;n=<nonce in base64url>", then ";m=1" if sensitive.
// keyID must be valid.
func FormatHeader(keyID string, nonce [NonceSize]byte, sensitive bool) string {
	var text [nonceTextLen]byte
	base64.RawURLEncoding.Encode(text[:], nonce[:])
	m := ""
	if sensitive {
		m = sensitiveFlag
	}
	return headerPrefix + keyID + nonceField + string(text[:]) + m
}

// ParseHeader reads a "pubcrypt" entry. It accepts exactly the strings FormatHeader
// produces: fixed field order, no unknown or repeated fields, no whitespace. An error
// describes the fault ("header: ...") and is of no kind: the caller wraps it into its
// format's malformed error.
func ParseHeader(h string) (keyID string, nonce [NonceSize]byte, sensitive bool, err error) {
	if len(h) > MaxValueLen {
		return "", nonce, false, errTooLong
	}
	if v, _, _ := strings.Cut(h, ";"); v != headerVersion {
		return "", nonce, false, errVersion
	}
	rest, ok := strings.CutPrefix(h, headerPrefix)
	if !ok {
		return "", nonce, false, errAlg
	}
	end := strings.IndexByte(rest, ';')
	if end < 0 {
		return "", nonce, false, errNoNonce
	}
	keyID, rest = rest[:end], rest[end:]
	if !ValidKeyID(keyID) {
		return "", nonce, false, errKeyID
	}
	rest, ok = strings.CutPrefix(rest, nonceField)
	if !ok {
		return "", nonce, false, errNonceField
	}
	// Sixteen characters carry exactly 96 bits: every such string is canonical.
	if len(rest) < nonceTextLen || !DecodeFixed(nonce[:], rest[:nonceTextLen]) {
		return "", [NonceSize]byte{}, false, errNonce
	}
	switch rest[nonceTextLen:] {
	case "":
	case sensitiveFlag:
		sensitive = true
	default:
		return "", [NonceSize]byte{}, false, errTrailer
	}
	return keyID, nonce, sensitive, nil
}

// The faults ParseHeader reports.
var (
	errTooLong    = fmt.Errorf("header longer than %d bytes", MaxValueLen)
	errVersion    = fmt.Errorf("header: unsupported version (want %q)", headerVersion)
	errAlg        = fmt.Errorf("header: want %q after the version", headerPrefix[len(headerVersion):])
	errNoNonce    = errors.New("header: missing nonce field")
	errKeyID      = fmt.Errorf("header: kid must be 1-%d characters from [A-Za-z0-9._-]", MaxKeyIDLen)
	errNonceField = fmt.Errorf("header: want %q after kid", nonceField)
	errNonce      = fmt.Errorf("header: nonce must be %d base64url characters", nonceTextLen)
	errTrailer    = fmt.Errorf("header: unexpected text after the nonce (only %q may follow)", sensitiveFlag)
)

var strict = base64.RawURLEncoding.Strict()

// DecodeFixed decodes text, the base64url encoding without padding of exactly len(dst)
// bytes, into dst. It reports false, dst then undefined, unless text is that encoding in
// its one canonical form: the right length, only characters of the base64url alphabet
// (the decoder would skip '\r' and '\n'), and zero padding bits.
func DecodeFixed(dst []byte, text string) bool {
	if len(text) != base64.RawURLEncoding.EncodedLen(len(dst)) {
		return false
	}
	for i := 0; i < len(text); i++ {
		c := text[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	n, err := strict.Decode(dst, []byte(text))
	return err == nil && n == len(dst)
}

// FitsU32 reports whether n can be written as a u32be length or count.
func FitsU32(n int) bool { return uint64(n) <= math.MaxUint32 }

// AppendString appends s with its length in front: u32be(len(s)) || s. len(s) must fit
// in 32 bits (FitsU32).
func AppendString[S ~string | ~[]byte](b []byte, s S) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// ReadString reads what AppendString appends from the start of b: it returns the string,
// the number of bytes it took, and false if b is too short for the length or the bytes.
func ReadString(b []byte) (s string, n int, ok bool) {
	if len(b) < 4 {
		return "", 0, false
	}
	l := uint64(binary.BigEndian.Uint32(b))
	if l > uint64(len(b)-4) {
		return "", 0, false
	}
	return string(b[4 : 4+int(l)]), 4 + int(l), true
}
