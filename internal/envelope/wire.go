package envelope

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/pubcrypt/pubcrypt/internal/wire"
)

// The pieces of the v1 wire format that are the envelope's own (docs/FORMAT.md,
// "Associated data", "Sensitive metadata block"); the header, the nonce, the key and
// value rules and the length prefix are in package wire, shared with the field and file
// formats.
const (
	adLabel = "pubcrypt/v1\x00"

	// maxPlaintext is GCM's limit for one message (NIST SP 800-38D): 2^39-256 bits.
	maxPlaintext uint64 = 1<<36 - 32
)

// parseHeader reads a "pubcrypt" entry (wire.ParseHeader); its errors wrap ErrMalformed.
func parseHeader(h string) (keyID string, nonce [wire.NonceSize]byte, sensitive bool, err error) {
	keyID, nonce, sensitive, err = wire.ParseHeader(h)
	if err != nil {
		return "", nonce, false, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return keyID, nonce, sensitive, nil
}

// entry is one metadata entry. The entries a message is sealed or opened with are read
// from its map once, into a slice sorted by key, and every later step (the associated
// data, the sensitive block, the metadata sent or returned) reads the slice.
type entry struct{ k, v string }

func byKey(a, b entry) int { return strings.Compare(a.k, b.k) }

// appendAD appends the associated data: the label, the two envelope values and every
// clear metadata entry (sorted by key bytes), each length-prefixed.
func appendAD(ad []byte, header, wrapped string, visible []entry) []byte {
	ad = append(ad, adLabel...)
	ad = wire.AppendString(ad, header)
	ad = wire.AppendString(ad, wrapped)
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(visible)))
	for _, e := range visible {
		ad = wire.AppendString(ad, e.k)
		ad = wire.AppendString(ad, e.v)
	}
	return ad
}

// clearEntries appends to visible the entries of md that the associated data covers (all
// but the two envelope entries), sorted by key bytes.
func clearEntries(visible []entry, md map[string]string) []entry {
	if len(md) == envelopeEntries(md) {
		return visible // the envelope entries only
	}
	for k, v := range md {
		if k != HeaderKey && k != DEKKey {
			visible = append(visible, entry{k, v})
		}
	}
	slices.SortFunc(visible, byKey)
	return visible
}

// envelopeEntries counts the envelope entries present in md (0, 1 or 2).
func envelopeEntries(md map[string]string) int {
	n := 0
	if _, ok := md[HeaderKey]; ok {
		n++
	}
	if _, ok := md[DEKKey]; ok {
		n++
	}
	return n
}

// blockSize is the encoded size of the sensitive block holding hidden.
func blockSize(hidden []entry) uint64 {
	size := uint64(4)
	for _, e := range hidden {
		size += 8 + uint64(len(e.k)) + uint64(len(e.v))
	}
	return size
}

// appendBlock appends the sensitive block: u32be(count), then each entry (sorted by key
// bytes) as u32be(len(k)) k u32be(len(v)) v.
func appendBlock(b []byte, hidden []entry) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(hidden)))
	for _, e := range hidden {
		b = wire.AppendString(b, e.k)
		b = wire.AppendString(b, e.v)
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
		k, n, ok := wire.ReadString(pt[off:])
		if !ok {
			return 0, malformed("sensitive block: entry %d: truncated key", i)
		}
		off += n
		v, n, ok := wire.ReadString(pt[off:])
		if !ok {
			return 0, malformed("sensitive block: entry %d: truncated value", i)
		}
		off += n
		switch {
		case i > 0 && k <= prev:
			return 0, malformed("sensitive block: entry %d: keys not in strictly ascending order", i)
		case !utf8.ValidString(k) || !utf8.ValidString(v):
			return 0, malformed("sensitive block: entry %d: not valid UTF-8", i)
		case wire.Reserved(k):
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

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}
