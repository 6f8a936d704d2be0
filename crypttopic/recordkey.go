package crypttopic

import (
	"fmt"
	neturl "net/url"
	"strings"

	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/codec"
)

// RecordKey names the metadata entry that is a message's Kafka record key, and how it
// travels (docs/FORMAT.md section 3.2). By default the key is protected: encrypted
// deterministically under the deterministic field key (FieldKeys.Deterministic), so that
// equal keys give equal record keys — partitioning and compaction keep working — and the
// broker never reads one. A readable key needs Mode RecordKeyClear.
//
// Equal plaintext keys give equal ciphertext keys, so the broker learns which records
// share a key (and how often) but not the key. A rotation of the deterministic key
// changes every ciphertext key: compaction stops merging a key's records across it, and
// its records may move partition (see docs/FORMAT.md section 3.2).
type RecordKey struct {
	// Entry is the metadata entry that holds the record key. On kgo:// and kafka://
	// topics it is the entry named by key_name, which the driver sends as the record key;
	// Open sets it from the URL when empty. A message without the entry has no key.
	Entry string
	// Field, if set, is a dotted path into a JSON object body ("user.id"): the string or
	// number there, read from the plaintext body before it is sealed, becomes the value
	// of Entry (URL: key_field, with key_name naming the entry). A message whose body has
	// no such value, and no Entry either, is not sent (a fault of the message).
	Field string
	// Mode is RecordKeyDeterministic (the default) or RecordKeyClear (URL: record_key=).
	Mode RecordKeyMode
}

// RecordKeyMode is how a record key travels.
type RecordKeyMode string

const (
	// RecordKeyDeterministic encrypts the key deterministically (the default, "").
	RecordKeyDeterministic RecordKeyMode = "deterministic"
	// RecordKeyClear sends the key readable: it is still authenticated, so a changed key
	// fails decryption, but the broker and anyone reading it see it.
	RecordKeyClear RecordKeyMode = "clear"
)

// ErrRecordKey is matched (errors.Is) by the error of a send refused because its record
// key cannot be sent: the key field missing from the body, a key field and entry that
// disagree, a key that is not UTF-8 or too long. The error is of class fault.Message and
// names the entry and the field, never the key.
var ErrRecordKey = codec.ErrRecordKey

// codecRecordKey is rk for the codec, with detKey the deterministic key.
func (rk RecordKey) codec(detKey string) (codec.RecordKey, error) {
	out := codec.RecordKey{Entry: rk.Entry, Key: detKey}
	switch rk.Mode {
	case "", RecordKeyDeterministic:
	case RecordKeyClear:
		out.Clear = true
	default:
		return out, fmt.Errorf("Options.RecordKey.Mode %q: want %q or %q", rk.Mode, RecordKeyDeterministic, RecordKeyClear)
	}
	if rk.Field != "" {
		out.Field = strings.Split(rk.Field, ".")
	}
	return out, nil
}

// RecordKeyFromURL reads the record-key settings of a Kafka topic URL (kgo://, kafka://)
// and returns the URL for the driver: key_name=ENTRY names the entry (and stays, for the
// driver), record_key=deterministic|clear says how it travels (default deterministic),
// and key_field=PATH takes it from the plaintext body, which the driver would only see
// sealed: it needs key_name, and is read here instead. Other URLs come back unchanged.
// Open calls it; a caller that opens the driver itself and calls New passes the result
// in Options.RecordKey, so that a key named in the URL is never sent readable unless the
// URL says record_key=clear.
func RecordKeyFromURL(rawURL string) (string, RecordKey, error) {
	u, err := neturl.Parse(rawURL)
	if err != nil || !broker.IsKafka(u.Scheme) {
		return rawURL, RecordKey{}, nil
	}
	q := u.Query()
	if !q.Has("key_name") && !q.Has("key_field") && !q.Has("record_key") {
		return rawURL, RecordKey{}, nil
	}
	one := func(name string) (string, error) {
		if v := q[name]; len(v) > 1 || len(v) == 1 && v[0] == "" {
			return "", fmt.Errorf("crypttopic: %s: %s wants one value", redact(u), name)
		}
		return q.Get(name), nil
	}
	var rk RecordKey
	if rk.Entry, err = one("key_name"); err != nil {
		return "", rk, err
	}
	if rk.Field, err = one("key_field"); err != nil {
		return "", rk, err
	}
	mode, err := one("record_key")
	if err != nil {
		return "", rk, err
	}
	rk.Mode = RecordKeyMode(mode)
	if rk.Mode != "" && rk.Mode != RecordKeyDeterministic && rk.Mode != RecordKeyClear {
		return "", rk, fmt.Errorf("crypttopic: %s: record_key=%q: want deterministic or clear", redact(u), mode)
	}
	if rk.Entry == "" {
		return "", rk, fmt.Errorf("crypttopic: %s: key_field and record_key need key_name=ENTRY, the metadata entry that carries the key to the receiver (whose subscription names the same key_name)", redact(u))
	}
	q.Del("key_field")
	q.Del("record_key")
	u.RawQuery = q.Encode()
	return u.String(), rk, nil
}

// withURL fills the empty settings of rk from the URL's.
func (rk RecordKey) withURL(from RecordKey) (RecordKey, error) {
	if rk.Entry != "" && from.Entry != "" && rk.Entry != from.Entry {
		return rk, fmt.Errorf("crypttopic: Options.RecordKey.Entry %q and the URL's key_name %q differ", rk.Entry, from.Entry)
	}
	if rk.Entry == "" {
		rk.Entry = from.Entry
	}
	if rk.Field == "" {
		rk.Field = from.Field
	}
	if rk.Mode == "" {
		rk.Mode = from.Mode
	}
	return rk, nil
}

// redact drops userinfo from a URL before it is printed.
func redact(u *neturl.URL) string {
	c := *u
	c.User = nil
	return c.String()
}
