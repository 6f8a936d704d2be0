package fields

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/pubcrypt/pubcrypt/internal/envelope"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// Opener restores the protected fields of received messages. It needs no policy: each
// message's manifest says what to restore. It is safe for concurrent use.
type Opener struct {
	fk    keyring.FieldKeyring
	cache *keyring.UnwrapCache
	fpe   *fpeKeys
	rules ruleCache
}

// NewOpener returns an Opener that unwraps data keys through cache and asks fk for
// Transit, deterministic and FPE decryption. fk may be nil if only envelope fields are
// received.
func NewOpener(fk keyring.FieldKeyring, cache *keyring.UnwrapCache) *Opener {
	return &Opener{fk: fk, cache: cache, fpe: newFPEKeys(fk, DefaultFPERefresh)}
}

// received is a parsed field-protected message.
type received struct {
	kid, dek, header string
	seq0             uint64
	m                *manifest
}

// parseReceived reads the three reserved entries. Nothing is authenticated yet.
func parseReceived(md map[string]string, rc *ruleCache) (*received, error) {
	for k := range md {
		if envelope.Reserved(k) && k != envelope.HeaderKey && k != envelope.DEKKey && k != ManifestKey {
			return nil, malformed("unknown reserved metadata key %.64q", k)
		}
	}
	r := &received{}
	var ok bool
	manifestText, hasManifest := md[ManifestKey]
	if !hasManifest {
		return nil, malformed("%q entry missing", ManifestKey)
	}
	if r.header, ok = md[envelope.HeaderKey]; !ok {
		return nil, malformed("%q entry missing", envelope.HeaderKey)
	}
	if r.dek, ok = md[envelope.DEKKey]; !ok {
		return nil, malformed("%q entry missing", envelope.DEKKey)
	}
	var err error
	if r.kid, r.seq0, err = parseHeader(r.header); err != nil {
		return nil, err
	}
	if !envelope.ValidValue(r.dek) {
		return nil, malformed("%q value must be 1-%d bytes of printable ASCII", envelope.DEKKey, envelope.MaxValueLen)
	}
	if r.m, err = parseManifest(manifestText, rc); err != nil {
		return nil, err
	}
	return r, nil
}

// Open verifies the message MAC, then restores every protected field: one DecryptBatch
// call per Vault key the message uses, local decryption for envelope fields. It returns
// the producer's body and metadata (the reserved entries removed). md is not modified.
//
// A message that was changed in any byte (body, manifest, envelope entries, clear
// metadata) fails with an error wrapping envelope.ErrAuth, before any key-service call
// other than unwrapping the data key; one that does not follow the format, with
// envelope.ErrMalformed. Key-service errors keep their keyring kinds.
func (o *Opener) Open(ctx context.Context, body []byte, md map[string]string) ([]byte, map[string]string, error) {
	r, err := parseReceived(md, &o.rules)
	if err != nil {
		return nil, nil, fmt.Errorf("fields: %w", err)
	}
	id := r.m.idText()
	fail := func(err error) ([]byte, map[string]string, error) {
		return nil, nil, fmt.Errorf("fields: message %s: %w", id, err)
	}
	keys := clearKeys(md)
	if !fitsU32(len(body)) || !fitsU32(len(keys)) {
		return fail(malformed("body or metadata too large"))
	}
	for _, k := range keys {
		if !fitsU32(len(k)) || !fitsU32(len(md[k])) {
			return fail(malformed("metadata entry longer than 2^32-1 bytes"))
		}
	}
	if o.cache == nil {
		return fail(errors.New("Opener has no UnwrapCache"))
	}
	key, err := o.cache.Get(ctx, r.kid, r.dek)
	if err != nil {
		return fail(err)
	}
	aead, err := key.AEAD()
	if err != nil {
		return fail(err)
	}
	ad := macAD(r.header, r.dek, r.m.unsigned, keys, md, body)
	if _, err := aead.Open(nil, nonceFor(r.seq0), r.m.tag[:], ad); err != nil {
		return fail(fmt.Errorf("%w (key %q)", envelope.ErrAuth, r.kid))
	}

	// Authenticated from here on: what follows fails only for a producer that does not
	// follow the format, or for the key service.
	c := r.m.c
	if !json.Valid(body) {
		return fail(malformed("body is not JSON"))
	}
	ms, err := locate(body, c)
	if err != nil {
		return fail(malformed("body: %v", err))
	}
	repl := make([][]byte, len(ms))
	var transit, det []keyring.TransitItem
	var transitRefs, detRefs []int
	var transforms transformBatches
	var env uint64
	for k, mt := range ms {
		rule := c.rules[mt.rule]
		s, ok := unquotePlain(body[mt.start:mt.end])
		if !ok {
			return fail(malformed("field %q: not a string the %s mode writes", mt.path, rule.Mode))
		}
		switch rule.Mode {
		case Transit, Deterministic:
			if !strings.HasPrefix(s, "vault:") {
				return fail(malformed("field %q: not a vault: ciphertext", mt.path))
			}
			if rule.Mode == Transit {
				transit = append(transit, keyring.TransitItem{Ciphertext: s, AssociatedData: fieldAD(r.m.id[:], mt.path)})
				transitRefs = append(transitRefs, k)
			} else {
				det = append(det, keyring.TransitItem{Ciphertext: s, Context: []byte(detContext + rule.Path)})
				detRefs = append(detRefs, k)
			}
		case Envelope:
			env++
			if r.seq0+env < r.seq0 {
				return fail(malformed("sequence numbers overflow"))
			}
			text, ok := strings.CutPrefix(s, envPrefix)
			ct, err := b64.DecodeString(text)
			if !ok || err != nil || len(ct) < tagSize {
				return fail(malformed("field %q: not a %s envelope ciphertext", mt.path, envPrefix))
			}
			pt, err := aead.Open(ct[:0], nonceFor(r.seq0+env), ct, fieldAD(r.m.id[:], mt.path))
			if err != nil {
				return fail(fmt.Errorf("%w: field %q", envelope.ErrAuth, mt.path))
			}
			repl[k] = pt
		case FPE:
			ff, err := o.fpe.get(ctx, r.m.fpe, r.m.fpeVersion)
			if err != nil {
				return fail(err)
			}
			pt, err := cryptFPE(ff, rule, s, true)
			if err != nil {
				return fail(malformed("field %q: %w", mt.path, err))
			}
			repl[k] = quoted(pt)
		case Transform:
			transforms.add(rule, s, itemRef{match: k})
		}
	}
	var calls []func() error
	if len(transit) > 0 {
		calls = append(calls, func() error { return o.decrypt(ctx, r.m.transit, transit, transitRefs, ms, repl) })
	}
	if len(det) > 0 {
		calls = append(calls, func() error { return o.decrypt(ctx, r.m.det, det, detRefs, ms, repl) })
	}
	for _, b := range transforms.list {
		calls = append(calls, func() error { return o.decode(ctx, b, ms, repl) })
	}
	if err := concurrently(calls...); err != nil {
		return fail(err)
	}
	for k, pt := range repl {
		if !json.Valid(pt) {
			return fail(malformed("field %q: decrypted value is not JSON", ms[k].path))
		}
	}

	out := make(map[string]string, len(keys))
	for _, k := range keys {
		out[k] = md[k]
	}
	return splice(body, ms, repl), out, nil
}

// decode sends the values of one Transform role and transformation in one call and
// writes the decoded values, as JSON strings, into repl.
func (o *Opener) decode(ctx context.Context, b *transformBatch, ms []match, repl [][]byte) error {
	tr, ok := o.fk.(keyring.Transformer)
	if !ok {
		return fmt.Errorf("decode with transform role %q: Opener has no key service that implements keyring.Transformer", b.role)
	}
	out, err := tr.TransformDecode(ctx, b.role, b.transformation, b.values)
	if err != nil {
		return fmt.Errorf("decode %d fields with transform role %q: %w", len(b.values), b.role, err)
	}
	if len(out) != len(b.values) {
		return fmt.Errorf("decode %d fields with transform role %q: key service returned %d values", len(b.values), b.role, len(out))
	}
	for j, v := range out {
		repl[b.refs[j].match] = jsonQuote(v)
	}
	return nil
}

// jsonQuote returns s as a JSON string: as is between quotes when it needs no escapes,
// else escaped as encoding/json does, without its HTML escapes.
func jsonQuote(s string) []byte {
	if plainString(s) {
		return quoted(s)
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// decrypt sends the items of one Vault key in one call and writes the plaintexts into
// repl.
func (o *Opener) decrypt(ctx context.Context, key string, items []keyring.TransitItem, refs []int, ms []match, repl [][]byte) error {
	if o.fk == nil {
		return fmt.Errorf("decrypt with key %q: Opener has no FieldKeyring", key)
	}
	if err := o.fk.DecryptBatch(ctx, key, items); err != nil {
		return fmt.Errorf("decrypt %d fields with key %q: %w", len(items), key, err)
	}
	for j, it := range items {
		if it.Err != nil {
			return fmt.Errorf("field %q: decrypt with key %q: %w", ms[refs[j]].path, key, it.Err)
		}
		repl[refs[j]] = it.Plaintext
	}
	return nil
}
