package envelope

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"
	"unicode/utf8"
)

// The pieces of the v1 wire format (docs/FORMAT.md, "Header", "Associated data",
// "Sensitive metadata block").
const (
	reservedPrefix = "pubcrypt"
	adLabel        = "pubcrypt/v1\x00"

	headerVersion = "v1"
	headerPrefix  = "v1;alg=A256GCM;kid="
	nonceField    = ";n="
	sensitiveFlag = ";m=1"

	nonceSize    = 12
	nonceTextLen = 16 // base64url of 12 bytes, no padding
	tagSize      = 16
	maxKeyIDLen  = 128

	// maxPlaintext is GCM's limit for one message (NIST SP 800-38D): 2^39-256 bits.
	maxPlaintext uint64 = 1<<36 - 32
)

// Reserved reports whether a metadata key is in the namespace pubcrypt's formats keep for
// themselves (every key starting with "pubcrypt"); the field and file formats share it.
func Reserved(key string) bool { return strings.HasPrefix(key, reservedPrefix) }

// ValidKeyID reports whether id may name a key in an envelope entry: 1 to 128 characters
// from [A-Za-z0-9._-]. The field and file formats use the same rule.
func ValidKeyID(id string) bool {
	if len(id) == 0 || len(id) > maxKeyIDLen {
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

// ValidValue reports whether v fits an envelope entry on every broker pubcrypt targets:
// 1 to MaxValueLen bytes of printable ASCII.
func ValidValue(v string) bool {
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

// fitsU32 reports whether n can be written as a u32be length or count.
func fitsU32(n int) bool { return uint64(n) <= math.MaxUint32 }

// nonceFor is the 12-byte nonce of sequence number seq: four zero bytes, then seq as a
// big-endian uint64.
func nonceFor(seq uint64) [nonceSize]byte {
	var n [nonceSize]byte
	binary.BigEndian.PutUint64(n[4:], seq)
	return n
}

// formatHeader builds the value of the "pubcrypt" entry. keyID must be valid.
func formatHeader(keyID string, nonce [nonceSize]byte, sensitive bool) string {
	var text [nonceTextLen]byte
	base64.RawURLEncoding.Encode(text[:], nonce[:])
	m := ""
	if sensitive {
		m = sensitiveFlag
	}
	return headerPrefix + keyID + nonceField + string(text[:]) + m
}

// parseHeader reads a "pubcrypt" entry. It accepts exactly the strings formatHeader
// produces: fixed field order, no unknown or repeated fields, no whitespace.
func parseHeader(h string) (keyID string, nonce [nonceSize]byte, sensitive bool, err error) {
	if len(h) > MaxValueLen {
		return "", nonce, false, malformed("header longer than %d bytes", MaxValueLen)
	}
	if v, _, _ := strings.Cut(h, ";"); v != headerVersion {
		return "", nonce, false, malformed("header: unsupported version (want %q)", headerVersion)
	}
	rest, ok := strings.CutPrefix(h, headerPrefix)
	if !ok {
		return "", nonce, false, malformed("header: want %q after the version", headerPrefix[len(headerVersion):])
	}
	end := strings.IndexByte(rest, ';')
	if end < 0 {
		return "", nonce, false, malformed("header: missing nonce field")
	}
	keyID, rest = rest[:end], rest[end:]
	if !ValidKeyID(keyID) {
		return "", nonce, false, malformed("header: kid must be 1-%d characters from [A-Za-z0-9._-]", maxKeyIDLen)
	}
	rest, ok = strings.CutPrefix(rest, nonceField)
	if !ok {
		return "", nonce, false, malformed("header: want %q after kid", nonceField)
	}
	if len(rest) < nonceTextLen {
		return "", nonce, false, malformed("header: nonce must be %d base64url characters", nonceTextLen)
	}
	text, rest := rest[:nonceTextLen], rest[nonceTextLen:]
	for i := 0; i < len(text); i++ {
		c := text[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return "", nonce, false, malformed("header: nonce must be %d base64url characters", nonceTextLen)
		}
	}
	// Sixteen characters carry exactly 96 bits: every such string is canonical.
	if n, err := base64.RawURLEncoding.Decode(nonce[:], []byte(text)); err != nil || n != nonceSize {
		return "", nonce, false, malformed("header: nonce must be %d base64url characters", nonceTextLen)
	}
	switch rest {
	case "":
	case sensitiveFlag:
		sensitive = true
	default:
		return "", nonce, false, malformed("header: unexpected text after the nonce (only %q may follow)", sensitiveFlag)
	}
	return keyID, nonce, sensitive, nil
}

// buildAD returns the associated data: the label, the two envelope values and every
// clear metadata entry (keys sorted by bytes), each length-prefixed.
func buildAD(header, wrapped string, keys []string, md map[string]string) []byte {
	return appendAD(make([]byte, 0, adSize(header, wrapped, keys, md)), header, wrapped, keys, md)
}

func adSize(header, wrapped string, keys []string, md map[string]string) int {
	size := len(adLabel) + 4 + len(header) + 4 + len(wrapped) + 4
	for _, k := range keys {
		size += 8 + len(k) + len(md[k])
	}
	return size
}

func appendAD(ad []byte, header, wrapped string, keys []string, md map[string]string) []byte {
	ad = append(ad, adLabel...)
	ad = appendString(ad, header)
	ad = appendString(ad, wrapped)
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(keys)))
	for _, k := range keys {
		ad = appendString(ad, k)
		ad = appendString(ad, md[k])
	}
	return ad
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// clearKeys returns the keys of md that the associated data covers (all but the two
// envelope entries), sorted by bytes.
func clearKeys(md map[string]string) []string {
	keys := make([]string, 0, len(md))
	for k := range md {
		if k != HeaderKey && k != DEKKey {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// blockSize is the encoded size of the sensitive block holding keys.
func blockSize(keys []string, md map[string]string) uint64 {
	size := uint64(4)
	for _, k := range keys {
		size += 8 + uint64(len(k)) + uint64(len(md[k]))
	}
	return size
}

// appendBlock appends the sensitive block: u32be(count), then each entry (keys sorted by
// bytes) as u32be(len(k)) k u32be(len(v)) v.
func appendBlock(b []byte, keys []string, md map[string]string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(keys)))
	for _, k := range keys {
		b = appendString(b, k)
		b = appendString(b, md[k])
	}
	return b
}

// parseBlock reads the sensitive block at the start of pt into out, which holds the clear
// metadata, and returns the block's length. It accepts only what appendBlock produces
// for a valid message: at least one entry, keys strictly ascending, UTF-8, not reserved
// and not also sent in clear.
func parseBlock(pt []byte, out map[string]string) (int, error) {
	if len(pt) < 4 {
		return 0, malformed("sensitive block: truncated count")
	}
	count := uint64(binary.BigEndian.Uint32(pt))
	off := 4
	if count == 0 {
		return 0, malformed("sensitive block: no entries although the header has m=1")
	}
	if count > uint64(len(pt)-off)/8 {
		return 0, malformed("sensitive block: count exceeds the plaintext")
	}
	prev := ""
	for i := uint64(0); i < count; i++ {
		k, n, ok := readString(pt[off:])
		if !ok {
			return 0, malformed("sensitive block: entry %d: truncated key", i)
		}
		off += n
		v, n, ok := readString(pt[off:])
		if !ok {
			return 0, malformed("sensitive block: entry %d: truncated value", i)
		}
		off += n
		switch {
		case i > 0 && k <= prev:
			return 0, malformed("sensitive block: entry %d: keys not in strictly ascending order", i)
		case !utf8.ValidString(k) || !utf8.ValidString(v):
			return 0, malformed("sensitive block: entry %d: not valid UTF-8", i)
		case Reserved(k):
			return 0, malformed("sensitive block: entry %d: reserved key", i)
		}
		if _, dup := out[k]; dup {
			return 0, malformed("sensitive block: entry %d: key also present in clear metadata", i)
		}
		out[k] = v
		prev = k
	}
	return off, nil
}

// readString reads u32be(len) then len bytes.
func readString(b []byte) (s string, n int, ok bool) {
	if len(b) < 4 {
		return "", 0, false
	}
	l := uint64(binary.BigEndian.Uint32(b))
	if l > uint64(len(b)-4) {
		return "", 0, false
	}
	return string(b[4 : 4+int(l)]), 4 + int(l), true
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}
