package codec

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/envelope"
	"github.com/pubcrypt/pubcrypt/internal/wire"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// Record keys (docs/FORMAT.md section 3.2): one metadata entry, which a Kafka topic opened
// with key_name=ENTRY sends as the record key, is protected deterministically — equal keys
// give equal ciphertexts, so partitioning and compaction keep working — with the
// deterministic field mode's primitive (a convergent Vault Transit key) under a context
// of its own, and flagged by an authenticated entry so that the receiver opens it.

// RecordKey says which metadata entry is a message's record key and how it travels.
type RecordKey struct {
	// Entry is the metadata entry that holds the record key ("" for none).
	Entry string
	// Field, if not nil, is a path of JSON object keys: the record key is the scalar found
	// there in the plaintext body (a string's text, a number's JSON text), put into Entry
	// before the message is sealed.
	Field []string
	// Clear sends the key readable (section 3.1) instead of protecting it.
	Clear bool
	// Key is the Vault key of the deterministic encryption (derived, convergent).
	Key string
}

// ErrRecordKey is the fault of a message whose record key cannot be sent: not found in
// the body, disagreeing with the entry, not UTF-8, too long once encrypted.
var ErrRecordKey = fault.New(fault.Message, "record key cannot be sent")

const (
	flagPrefix = "v1;dk="
	flagEntry  = ";e="
	keyContext = "pubcrypt-key/v1:"
	// maxEntryLen is the longest entry name a flag carries.
	maxEntryLen = 255
)

// KeyContext is the key-derivation context of the record key in entry (KeyCtx).
func KeyContext(entry string) []byte { return []byte(keyContext + entry) }

// FormatKeyFlag is the value of the pubcrypt-key entry for entry protected under kid.
func FormatKeyFlag(kid, entry string) string { return flagPrefix + kid + flagEntry + entry }

// ParseKeyFlag reads a pubcrypt-key value (errors wrap envelope.ErrMalformed).
func ParseKeyFlag(flag string) (kid, entry string, err error) {
	rest, ok := strings.CutPrefix(flag, flagPrefix)
	if !ok {
		return "", "", fmt.Errorf("%w: %q entry: not a version 1 flag", envelope.ErrMalformed, wire.RecordKeyFlag)
	}
	kid, entry, ok = strings.Cut(rest, flagEntry)
	if !ok || !wire.ValidKeyID(kid) || !validEntry(entry) {
		return "", "", fmt.Errorf("%w: %q entry: want v1;dk=KEY;e=ENTRY", envelope.ErrMalformed, wire.RecordKeyFlag)
	}
	return kid, entry, nil
}

// validEntry reports whether name can be the record-key entry of a flag.
func validEntry(name string) bool {
	if name == "" || len(name) > maxEntryLen || wire.Reserved(name) {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// checkRecordKey validates rk for a sealer with field keyring fk (nil: none).
func checkRecordKey(rk RecordKey, fk keyring.FieldKeyring, sensitive []string) error {
	if rk.Entry == "" {
		if rk.Field != nil || rk.Clear {
			return errors.New("record key: a field or a mode without an entry to carry the key")
		}
		return nil
	}
	if !validEntry(rk.Entry) {
		return fmt.Errorf("record key: entry %.64q: want 1-%d printable ASCII characters, not starting with %q", rk.Entry, maxEntryLen, wire.ReservedPrefix)
	}
	for _, k := range sensitive {
		if k == rk.Entry {
			return fmt.Errorf("record key: entry %q is also sensitive metadata: it cannot be both in the ciphertext and the record key", rk.Entry)
		}
	}
	if rk.Field != nil {
		if len(rk.Field) == 0 {
			return errors.New("record key: empty field path")
		}
		for _, step := range rk.Field {
			if step == "" {
				return fmt.Errorf("record key: field %q has an empty step", strings.Join(rk.Field, "."))
			}
		}
	}
	if rk.Clear {
		return nil
	}
	if fk == nil {
		return errors.New("record key: a protected record key needs a key service with deterministic encryption (keyring.Vault); send it in clear only if it may be read on the broker")
	}
	if !wire.ValidKeyID(rk.Key) {
		return fmt.Errorf("record key: no valid deterministic key configured (1-%d characters from [A-Za-z0-9._-])", wire.MaxKeyIDLen)
	}
	return nil
}

// recordKeys returns msgs with their record keys in place: read from the body, protected
// and flagged as s.recordKey says. It refuses (fail) a message whose metadata already has
// the flag, whatever the configuration: only the sender adds it. A message failed is nil
// in the result. The returned error is the environment's (the key service down), for the
// batch.
func (s *Sealer) recordKeys(ctx context.Context, msgs []*pubsub.Message, fail func(int, error)) ([]*pubsub.Message, error) {
	rk := s.recordKey
	out := make([]*pubsub.Message, len(msgs))
	var items []keyring.TransitItem
	var refs []int
	for i, m := range msgs {
		if m == nil {
			continue
		}
		if _, ok := m.Metadata[wire.RecordKeyFlag]; ok {
			fail(i, fmt.Errorf("%w: metadata key %q is reserved (prefix %q)", envelope.ErrInvalidInput, wire.RecordKeyFlag, wire.ReservedPrefix))
			continue
		}
		out[i] = m
		if rk.Entry == "" {
			continue
		}
		v, has := m.Metadata[rk.Entry]
		if rk.Field != nil {
			fv, problem := wire.ScalarAt(m.Body, rk.Field)
			switch {
			case problem == wire.ScalarFound && has && fv != v:
				fail(i, fmt.Errorf("%w: entry %q and field %q differ", ErrRecordKey, rk.Entry, strings.Join(rk.Field, ".")))
				out[i] = nil
				continue
			case problem == wire.ScalarFound:
				v, has = fv, true
			case !has:
				fail(i, fmt.Errorf("%w: field %q is not a string or number in the body, and there is no entry %q", ErrRecordKey, strings.Join(rk.Field, "."), rk.Entry))
				out[i] = nil
				continue
			}
		}
		if !has {
			continue // no record key: sent without one
		}
		if !utf8.ValidString(v) {
			fail(i, fmt.Errorf("%w: entry %q is not valid UTF-8", ErrRecordKey, rk.Entry))
			out[i] = nil
			continue
		}
		md := make(map[string]string, len(m.Metadata)+2)
		for k, x := range m.Metadata {
			md[k] = x
		}
		md[rk.Entry] = v
		out[i] = &pubsub.Message{Body: m.Body, Metadata: md, BeforeSend: m.BeforeSend, AfterSend: m.AfterSend}
		if !rk.Clear {
			items = append(items, keyring.TransitItem{Plaintext: []byte(v), Context: KeyContext(rk.Entry)})
			refs = append(refs, i)
		}
	}
	if len(items) == 0 {
		return out, nil
	}
	if err := s.fk.EncryptBatch(ctx, rk.Key, items); err != nil {
		err = fmt.Errorf("record keys: encrypt %d with key %q: %w", len(items), rk.Key, err)
		if !fault.IsMessage(err) {
			return nil, err
		}
		for _, i := range refs {
			fail(i, err)
			out[i] = nil
		}
		return out, nil
	}
	for j, it := range items {
		i := refs[j]
		if it.Err != nil {
			err := fmt.Errorf("record key %q: encrypt with key %q: %w", rk.Entry, rk.Key, it.Err)
			if !fault.IsMessage(err) {
				return nil, fmt.Errorf("message %d: %w", i, err)
			}
			fail(i, err)
			out[i] = nil
			continue
		}
		if _, ok := keyring.CiphertextVersion(it.Ciphertext); !ok || !printable(it.Ciphertext) {
			return nil, fault.Mark(fmt.Errorf("record keys: key service returned a ciphertext that is not vault:vN:... in printable ASCII"), fault.Environment)
		}
		if !wire.ValidValue(it.Ciphertext) {
			fail(i, fmt.Errorf("%w: entry %q: the protected key exceeds %d bytes", ErrRecordKey, rk.Entry, wire.MaxValueLen))
			out[i] = nil
			continue
		}
		out[i].Metadata[rk.Entry] = it.Ciphertext
		out[i].Metadata[wire.RecordKeyFlag] = FormatKeyFlag(rk.Key, rk.Entry)
	}
	return out, nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// keyOpen is a message opened whose record key is still to be decrypted.
type keyOpen struct {
	i     int
	flag  string // the pubcrypt-key entry as received
	body  []byte // the message as received, to leave it so on failure
	md    map[string]string
	entry string
	item  keyring.TransitItem
}

// restoreKeys decrypts the protected record keys of opened messages (those of pending),
// one call per key for all of them, and puts the plaintext keys in their entries; a
// message whose key fails is set back to pending's copy as received, with errs[i] set.
// Only messages whose envelope verified are given: the flag and the ciphertext key are
// authenticated.
func (o *Opener) restoreKeys(ctx context.Context, msgs []*pubsub.Message, pending []keyOpen, infos []Info, errs []error) {
	groups := map[string][]int{} // kid → indexes into pending
	var kids []string
	for j := range pending {
		p := &pending[j]
		m := msgs[p.i]
		kid, entry, err := ParseKeyFlag(p.flag)
		if err == nil {
			ct, ok := m.Metadata[entry]
			if _, vok := keyring.CiphertextVersion(ct); !ok || !vok {
				err = fmt.Errorf("%w: record key entry %q missing or not a ciphertext", envelope.ErrMalformed, entry)
			}
			p.item = keyring.TransitItem{Ciphertext: ct, Context: KeyContext(entry)}
		}
		if err == nil && o.fk == nil {
			err = fault.Mark(errors.New("record key: a protected record key needs a key service with deterministic encryption (keyring.Vault)"), fault.Environment)
		}
		if err != nil {
			m.Body, m.Metadata = p.body, p.md
			errs[p.i] = err
			continue
		}
		p.entry = entry
		if _, ok := groups[kid]; !ok {
			kids = append(kids, kid)
		}
		groups[kid] = append(groups[kid], j)
	}
	for _, kid := range kids {
		idx := groups[kid]
		items := make([]keyring.TransitItem, len(idx))
		for k, j := range idx {
			items[k] = pending[j].item
		}
		callErr := o.fk.DecryptBatch(ctx, kid, items)
		for k, j := range idx {
			p := &pending[j]
			m := msgs[p.i]
			err := callErr
			if err == nil {
				err = items[k].Err
			}
			if err == nil && !utf8.Valid(items[k].Plaintext) {
				err = fmt.Errorf("%w: record key entry %q: decrypted key is not UTF-8", envelope.ErrMalformed, p.entry)
			}
			if err != nil {
				m.Body, m.Metadata = p.body, p.md
				errs[p.i] = fmt.Errorf("record key %q: decrypt with key %q: %w", p.entry, kid, err)
				continue
			}
			m.Metadata[p.entry] = string(items[k].Plaintext)
			delete(m.Metadata, wire.RecordKeyFlag)
			infos[p.i].RecordKey = p.entry
		}
	}
}
