// Package envelope implements version 1 of the pubcrypt wire format, specified in
// docs/FORMAT.md; testdata/envelope/v1.json holds vectors any implementation can be
// checked against.
//
// An encrypted message stays an ordinary pub/sub message. Its body is the AES-256-GCM
// ciphertext, and two metadata entries carry what a receiver needs: "pubcrypt" (version,
// algorithm, key ID, nonce) and "pubcrypt-dek" (the data key as the key service wrapped
// it). Both are short printable ASCII, so the envelope survives Kafka headers, SQS
// message attributes and Pub/Sub attributes unchanged; the producer's own metadata stays
// in clear, readable for routing and filtering, except the entries named sensitive,
// which travel inside the ciphertext.
//
// The associated data binds the envelope entries and every clear metadata entry, so a
// receiver gets exactly what the sender sent or an error: a changed, added or removed
// entry fails authentication like a changed body byte. A broker that adds metadata of
// its own must have it removed before Open.
//
// Nonces are not random: the sender's key source numbers the messages it encrypts under
// each data key, and the nonce is that number. A data key belongs to one sender and is
// retired long before its counter could wrap, so a nonce never repeats under a key
// however many messages the key encrypts; docs/FORMAT.md gives the argument and the
// limits that remain.
package envelope

import (
	"crypto/cipher"
	"fmt"
	"math"
	"slices"
	"sync"
	"unicode/utf8"

	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/wire"
)

const (
	// HeaderKey is the metadata key of the header entry.
	HeaderKey = "pubcrypt"
	// DEKKey is the metadata key of the wrapped data key entry.
	DEKKey = "pubcrypt-dek"
	// Version is the format version this package reads and writes.
	Version = 1
	// MaxValueLen is the longest envelope entry value, in bytes.
	MaxValueLen = wire.MaxValueLen
)

// Error kinds, matched with errors.Is. Errors wrap them with detail that names a field,
// never a key, a metadata value or plaintext. Each is of class fault.Message: it is a
// property of the message, and trying the same message again never helps.
var (
	// ErrNoEnvelope: the message carries no pubcrypt entries; it was not encrypted.
	ErrNoEnvelope = fault.New(fault.Message, "envelope: message is not encrypted")
	// ErrMalformed: pubcrypt entries are present but do not follow the format (one
	// missing, bad header, unknown version, bad sensitive block, ...).
	ErrMalformed = fault.New(fault.Message, "envelope: malformed encrypted message")
	// ErrAuth: the ciphertext does not authenticate under the given key, nonce and
	// associated data: something was changed, or the key is wrong.
	ErrAuth = fault.New(fault.Message, "envelope: message authentication failed")
	// ErrInvalidInput: Seal was given a message the format cannot carry (reserved key,
	// invalid key ID, non-UTF-8 metadata, ...), or Open an unusable AEAD.
	//
	// Class Message, because what Seal refuses is usually in the producer's message
	// (metadata, size); the refusals of the key ID, the wrapped key and the AEAD, which
	// come from the keyring and not from the message, are marked fault.Environment
	// where they are made.
	ErrInvalidInput = fault.New(fault.Message, "envelope: invalid input")
)

// SealInput is one message to encrypt.
type SealInput struct {
	// AEAD is AES-256-GCM under the data key (keyring.DataKey.AEAD).
	AEAD cipher.AEAD
	// KeyID names the key-encryption key: 1 to 128 characters from [A-Za-z0-9._-].
	KeyID string
	// Wrapped is the data key as the key service wrapped it: 1 to MaxValueLen bytes of
	// printable ASCII.
	Wrapped string
	// Seq is the sequence number the key source handed out with the data key; it is the
	// nonce, so it must never repeat under one data key.
	Seq uint64
	// Body is the plaintext body. Seal does not modify it.
	Body []byte
	// Metadata is the producer's metadata, keys and values valid UTF-8, no key starting
	// with "pubcrypt". Seal does not modify it.
	Metadata map[string]string
	// Sensitive names keys of Metadata to encrypt instead of sending in clear. Names
	// absent from Metadata are ignored.
	Sensitive []string
}

// Seal encrypts one message. It returns the ciphertext body and the complete metadata to
// send: the producer's clear entries plus the two envelope entries.
func Seal(in SealInput) (body []byte, md map[string]string, err error) {
	if err := checkAEAD(in.AEAD); err != nil {
		return nil, nil, err
	}
	if !wire.ValidKeyID(in.KeyID) {
		return nil, nil, notMessage(invalid("key ID must be 1-%d characters from [A-Za-z0-9._-]", wire.MaxKeyIDLen))
	}
	if !wire.ValidValue(in.Wrapped) {
		return nil, nil, notMessage(invalid("wrapped data key must be 1-%d bytes of printable ASCII", MaxValueLen))
	}

	// Entry lists of up to eight entries stay on the stack.
	var visibleArr, hiddenArr [8]entry
	visible, hidden := visibleArr[:0], hiddenArr[:0]
	for k, v := range in.Metadata {
		switch {
		case wire.ReservedNotClear(k):
			return nil, nil, invalid("metadata key %.64q is reserved (prefix %q)", k, wire.ReservedPrefix)
		case !utf8.ValidString(k):
			return nil, nil, invalid("metadata key %.64q is not valid UTF-8", k)
		case !utf8.ValidString(v):
			return nil, nil, invalid("value of metadata key %.64q is not valid UTF-8", k)
		case !wire.FitsU32(len(k)) || !wire.FitsU32(len(v)):
			return nil, nil, invalid("metadata entry %.64q longer than 2^32-1 bytes", k)
		}
		if len(in.Sensitive) > 0 && slices.Contains(in.Sensitive, k) {
			hidden = append(hidden, entry{k, v})
		} else {
			visible = append(visible, entry{k, v})
		}
	}
	if !wire.FitsU32(len(visible)) {
		return nil, nil, invalid("more than 2^32-1 metadata entries")
	}
	slices.SortFunc(visible, byKey)
	slices.SortFunc(hidden, byKey)
	var blockLen uint64
	if len(hidden) > 0 {
		blockLen = blockSize(hidden)
	}
	if ptLen := blockLen + uint64(len(in.Body)); ptLen > maxPlaintext || ptLen > math.MaxInt-wire.TagSize {
		return nil, nil, invalid("body and sensitive metadata longer than GCM's %d-byte limit", maxPlaintext)
	}

	nonceArr := wire.Nonce(in.Seq)
	header := wire.FormatHeader(in.KeyID, nonceArr, len(hidden) > 0)
	// Nonce and associated data live in a pooled scratch buffer: they are needed only
	// during the AEAD call.
	scratch := getScratch()
	buf := append((*scratch)[:0], nonceArr[:]...)
	buf = appendAD(buf, header, in.Wrapped, visible)
	nonce, ad := buf[:wire.NonceSize], buf[wire.NonceSize:]

	if len(hidden) == 0 {
		body = in.AEAD.Seal(make([]byte, 0, len(in.Body)+wire.TagSize), nonce, in.Body, ad)
	} else {
		// plaintext = block || body, encrypted in place: the body is copied once.
		n := int(blockLen) + len(in.Body)
		pt := appendBlock(make([]byte, 0, n+wire.TagSize), hidden)
		pt = append(pt, in.Body...)
		body = in.AEAD.Seal(pt[:0], nonce, pt, ad)
	}
	putScratch(scratch, buf)

	md = make(map[string]string, len(visible)+2)
	for _, e := range visible {
		md[e.k] = e.v
	}
	md[HeaderKey] = header
	md[DEKKey] = in.Wrapped
	return body, md, nil
}

// Envelope is the parsed envelope of a received message.
type Envelope struct {
	// Header is the raw value of the "pubcrypt" entry.
	Header string
	// KeyID names the key-encryption key that wrapped the data key.
	KeyID string
	// Wrapped is the wrapped data key, to unwrap with the key service.
	Wrapped string
	// Nonce is the 12-byte GCM nonce.
	Nonce []byte
	// SensitiveMeta reports whether the plaintext starts with a block of sensitive
	// metadata (m=1).
	SensitiveMeta bool

	nonce [wire.NonceSize]byte // backs Nonce: one allocation per Parse

	// What Parse read and checked, so that Open checks again only what was changed since.
	parsed parsed
}

type parsed struct {
	header, keyID, wrapped string
	nonce                  [wire.NonceSize]byte
	sensitive              bool
}

// Parse reads the envelope entries of received metadata. It returns ErrNoEnvelope if the
// message has no pubcrypt entries, and an error wrapping ErrMalformed if they do not
// follow the format. Nothing is authenticated yet: trust the result only after Open.
func Parse(md map[string]string) (*Envelope, error) {
	header, hasHeader := md[HeaderKey]
	wrapped, hasDEK := md[DEKKey]
	if len(md) > envelopeEntries(md) { // other entries: none may be reserved
		for k := range md {
			if wire.ReservedNotClear(k) && k != HeaderKey && k != DEKKey {
				return nil, malformed("unknown reserved metadata key %.64q", k)
			}
		}
	}
	switch {
	case !hasHeader && !hasDEK:
		return nil, ErrNoEnvelope
	case !hasHeader:
		return nil, malformed("%q entry missing", HeaderKey)
	case !hasDEK:
		return nil, malformed("%q entry missing", DEKKey)
	}
	keyID, nonce, sensitive, err := parseHeader(header)
	if err != nil {
		return nil, err
	}
	if !wire.ValidValue(wrapped) {
		return nil, malformed("%q value must be 1-%d bytes of printable ASCII", DEKKey, MaxValueLen)
	}
	e := &Envelope{
		Header:        header,
		KeyID:         keyID,
		Wrapped:       wrapped,
		SensitiveMeta: sensitive,
		nonce:         nonce,
		parsed:        parsed{header, keyID, wrapped, nonce, sensitive},
	}
	e.Nonce = e.nonce[:]
	return e, nil
}

// Open authenticates and decrypts a message with AES-256-GCM under the unwrapped data
// key. It returns the plaintext body and the producer's metadata: the clear entries plus
// the decrypted sensitive ones, without the envelope entries. md is the metadata as
// received; whether it still holds the envelope entries does not matter. Open returns
// an error wrapping ErrAuth if anything was changed or the key is wrong, and one
// wrapping ErrMalformed if the envelope does not follow the format.
func (e *Envelope) Open(aead cipher.AEAD, body []byte, md map[string]string) ([]byte, map[string]string, error) {
	if err := checkAEAD(aead); err != nil {
		return nil, nil, err
	}
	if e == nil {
		return nil, nil, malformed("nil envelope")
	}
	// The header is what the associated data binds; the fields must agree with it, since
	// e.Nonce is what goes to GCM and SensitiveMeta decides how the plaintext is read.
	// Fields as Parse left them were checked there.
	p := &e.parsed
	if p.header == "" || e.Header != p.header || e.KeyID != p.keyID || string(e.Nonce) != string(p.nonce[:]) || e.SensitiveMeta != p.sensitive {
		keyID, nonce, sensitive, err := parseHeader(e.Header)
		if err != nil {
			return nil, nil, err
		}
		if keyID != e.KeyID || string(nonce[:]) != string(e.Nonce) || sensitive != e.SensitiveMeta {
			return nil, nil, malformed("envelope fields disagree with its header")
		}
	}
	if (p.wrapped == "" || e.Wrapped != p.wrapped) && !wire.ValidValue(e.Wrapped) {
		return nil, nil, malformed("%q value must be 1-%d bytes of printable ASCII", DEKKey, MaxValueLen)
	}
	if len(body) < wire.TagSize {
		return nil, nil, malformed("body shorter than the %d-byte tag", wire.TagSize)
	}
	if uint64(len(body)-wire.TagSize) > maxPlaintext {
		return nil, nil, malformed("body longer than GCM allows")
	}

	var visibleArr [8]entry
	visible := clearEntries(visibleArr[:0], md)
	if !wire.FitsU32(len(visible)) {
		return nil, nil, malformed("more than 2^32-1 metadata entries")
	}
	for _, c := range visible {
		if !wire.FitsU32(len(c.k)) || !wire.FitsU32(len(c.v)) {
			return nil, nil, malformed("metadata entry longer than 2^32-1 bytes")
		}
	}
	scratch := getScratch()
	ad := appendAD((*scratch)[:0], e.Header, e.Wrapped, visible)
	pt, err := aead.Open(make([]byte, 0, len(body)-wire.TagSize), e.Nonce, body, ad)
	putScratch(scratch, ad)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (key %q)", ErrAuth, e.KeyID)
	}

	var out map[string]string
	if len(visible) == 0 && !e.SensitiveMeta {
		out = make(map[string]string) // no group allocated until an entry is added
	} else {
		out = make(map[string]string, len(visible)+1)
	}
	for _, c := range visible {
		out[c.k] = c.v
	}
	if e.SensitiveMeta {
		n, err := parseBlock(pt, out)
		if err != nil {
			return nil, nil, err
		}
		pt = pt[n:]
	}
	return pt, out, nil
}

// checkAEAD refuses AEADs that cannot be AES-GCM as the format uses it; a wrong nonce
// size would make cipher.AEAD panic.
func checkAEAD(aead cipher.AEAD) error {
	if aead == nil {
		return notMessage(invalid("nil AEAD"))
	}
	if aead.NonceSize() != wire.NonceSize || aead.Overhead() != wire.TagSize {
		return notMessage(invalid("AEAD must be AES-GCM with a %d-byte nonce and a %d-byte tag", wire.NonceSize, wire.TagSize))
	}
	return nil
}

// notMessage marks a refusal of what the keyring or the caller's code supplied (key ID,
// wrapped key, AEAD) as a fault of the environment: another message would fail the same
// way, so it must not be dead-lettered or skipped as if the message were at fault.
func notMessage(err error) error { return fault.Mark(err, fault.Environment) }

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidInput}, args...)...)
}

// scratchPool holds buffers for the nonce and the associated data, which live only for
// one AEAD call.
var scratchPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

func getScratch() *[]byte { return scratchPool.Get().(*[]byte) }

// putScratch returns a buffer, as grown to used, unless it grew beyond what is worth
// keeping.
func putScratch(p *[]byte, used []byte) {
	if cap(used) > 64<<10 {
		return
	}
	*p = used[:0]
	scratchPool.Put(p)
}
