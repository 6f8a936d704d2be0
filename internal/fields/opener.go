package fields

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/envelope"
	"github.com/pubcrypt/pubcrypt/internal/wire"
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
		if wire.ReservedNotClear(k) && k != envelope.HeaderKey && k != envelope.DEKKey && k != ManifestKey {
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
	if !wire.ValidValue(r.dek) {
		return nil, malformed("%q value must be 1-%d bytes of printable ASCII", envelope.DEKKey, wire.MaxValueLen)
	}
	if r.m, err = parseManifest(manifestText, rc); err != nil {
		return nil, err
	}
	return r, nil
}

// Received is one message for OpenBatch: its body and metadata as delivered.
type Received struct {
	Body     []byte
	Metadata map[string]string
}

// Opened is the result of OpenBatch for one message: the producer's body and metadata,
// or why that message could not be opened (as Open would have said).
type Opened struct {
	Body     []byte
	Metadata map[string]string
	Err      error
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
	r := o.OpenBatch(ctx, []Received{{Body: body, Metadata: md}})[0]
	if r.Err != nil {
		return nil, nil, r.Err
	}
	return r.Body, r.Metadata, nil
}

// OpenBatch opens msgs as Open opens each, but with one DecryptBatch call per Vault key
// (and one decode call per Transform role and transformation) for the whole batch rather
// than per message. The results are aligned with msgs. Each message succeeds or fails on
// its own: a tampered or malformed message, or an item the key service refuses, fails
// only the message it belongs to; a key-service call that fails as a whole fails every
// message with items in it. No message's metadata is modified.
func (o *Opener) OpenBatch(ctx context.Context, msgs []Received) []Opened {
	out := make([]Opened, len(msgs))
	plans := make([]*openPlan, len(msgs))
	// Once the key service has failed to unwrap one message's data key (a fault of the
	// environment: Vault down, silent, refusing the token), the others are prepared only
	// under keys already cached: asking again for each would cost a retry or a whole
	// timeout per message before the caller learns of the outage. They get the same fault.
	var outage error
	for i, m := range msgs {
		p, err := o.prepare(ctx, m.Body, m.Metadata, &outage)
		if err != nil {
			out[i].Err = err
			continue
		}
		plans[i] = p
	}

	// Group the key-service items of all prepared messages: transit and deterministic
	// items per Vault key name, Transform values per role and transformation.
	type group struct {
		key   string
		items []keyring.TransitItem
		refs  []itemRef
	}
	var groups []*group
	index := map[[2]string]*group{}
	addGroup := func(kind, key string, items []keyring.TransitItem, refs []int, msg int) {
		g := index[[2]string{kind, key}]
		if g == nil {
			g = &group{key: key}
			index[[2]string{kind, key}] = g
			groups = append(groups, g)
		}
		g.items = append(g.items, items...)
		for _, k := range refs {
			g.refs = append(g.refs, itemRef{msg: msg, match: k})
		}
	}
	var transforms transformBatches
	// fpe(vault) values per key name and version.
	type fpeGroup struct {
		key     string
		version int
		items   []keyring.FPEItem
		refs    []itemRef
	}
	var fpeGroups []*fpeGroup
	fpeIndex := map[fpeID]*fpeGroup{}
	for i, p := range plans {
		if p == nil {
			continue
		}
		if len(p.fpe) > 0 {
			id := fpeID{p.r.m.fpe, p.r.m.fpeVersion}
			g := fpeIndex[id]
			if g == nil {
				g = &fpeGroup{key: id.name, version: id.version}
				fpeIndex[id] = g
				fpeGroups = append(fpeGroups, g)
			}
			g.items = append(g.items, p.fpe...)
			for _, k := range p.fpeRefs {
				g.refs = append(g.refs, itemRef{msg: i, match: k})
			}
		}
		if len(p.transit) > 0 {
			addGroup("transit", p.r.m.transit, p.transit, p.transitRefs, i)
		}
		if len(p.det) > 0 {
			addGroup("det", p.r.m.det, p.det, p.detRefs, i)
		}
		for _, b := range p.transforms.list {
			for j, v := range b.values {
				transforms.add(Rule{Role: b.role, Transformation: b.transformation}, v, itemRef{msg: i, match: b.refs[j].match})
			}
		}
	}

	// errs[i][c] is call c's error for message i; the first in call order is reported,
	// as Open reports the first of its calls' errors.
	ncalls := len(groups) + len(transforms.list) + len(fpeGroups)
	callErrs := make([][]error, len(msgs))
	setErr := func(msg, call int, err error) {
		if callErrs[msg] == nil {
			callErrs[msg] = make([]error, ncalls)
		}
		if callErrs[msg][call] == nil {
			callErrs[msg][call] = err
		}
	}
	var mu sync.Mutex
	var calls []func() error
	for c, g := range groups {
		calls = append(calls, func() error {
			itemErrs, errAll := o.decryptGroup(ctx, g.key, g.items)
			mu.Lock()
			defer mu.Unlock()
			for j, ref := range g.refs {
				p := plans[ref.msg]
				switch {
				case errAll != nil:
					setErr(ref.msg, c, errAll)
				case itemErrs[j] != nil:
					setErr(ref.msg, c, fmt.Errorf("field %q: decrypt with key %q: %w", p.ms[ref.match].path, g.key, itemErrs[j]))
				default:
					p.repl[ref.match] = g.items[j].Plaintext
				}
			}
			return nil
		})
	}
	for t, b := range transforms.list {
		c := len(groups) + t
		calls = append(calls, func() error {
			vals, err := o.decodeBatch(ctx, b)
			mu.Lock()
			defer mu.Unlock()
			// Values the engine refused come back empty, with an error of class Message;
			// only their messages fail. Any other error fails every message in the call.
			perItem := err != nil && fault.IsMessage(err) && len(vals) == len(b.values)
			for j, ref := range b.refs {
				if err != nil && (!perItem || vals[j] == "") {
					setErr(ref.msg, c, err)
					continue
				}
				plans[ref.msg].repl[ref.match] = jsonQuote(vals[j])
			}
			return nil
		})
	}
	for f, g := range fpeGroups {
		c := len(groups) + len(transforms.list) + f
		calls = append(calls, func() error {
			errAll := o.decryptFPEInVault(ctx, g.key, g.version, g.items)
			mu.Lock()
			defer mu.Unlock()
			perItem := errAll != nil && fault.IsMessage(errAll)
			for j, ref := range g.refs {
				p := plans[ref.msg]
				it := g.items[j]
				switch {
				case errAll != nil && (!perItem || it.Err == nil && it.Result == ""):
					setErr(ref.msg, c, errAll)
				case it.Err != nil:
					setErr(ref.msg, c, fmt.Errorf("field %q: fpe(vault) with key %q version %d: %w", p.ms[ref.match].path, g.key, g.version, it.Err))
				case len(it.Result) != len(it.Value) || !plainString(it.Result):
					setErr(ref.msg, c, fmt.Errorf("field %q: key service returned an fpe value of another shape", p.ms[ref.match].path))
				default:
					p.repl[ref.match] = quoted(it.Result)
				}
			}
			return nil
		})
	}
	_ = concurrently(calls...)

	for i, p := range plans {
		if p == nil {
			continue
		}
		for _, err := range callErrs[i] {
			if err != nil {
				out[i].Err = p.fail(err)
				break
			}
		}
		if out[i].Err != nil {
			continue
		}
		out[i].Body, out[i].Metadata, out[i].Err = p.finish()
	}
	return out
}

// openPlan is one authenticated message on its way through OpenBatch: its located
// fields, the plaintexts found so far and the key-service items still to send.
type openPlan struct {
	body                 []byte
	md                   map[string]string
	keys                 []string
	r                    *received
	ms                   []match
	repl                 [][]byte
	transit, det         []keyring.TransitItem
	transitRefs, detRefs []int
	transforms           transformBatches
	fpe                  []keyring.FPEItem // fpe(vault) values, deciphered by the key service
	fpeRefs              []int
}

func (p *openPlan) fail(err error) error {
	return fmt.Errorf("fields: message %s: %w", p.r.m.idText(), err)
}

// prepare parses and authenticates one message, locates its fields, decrypts the
// envelope and FPE fields locally and collects the items the key service must decrypt.
// If *outage is not nil the key service is failing: the data key is taken from the cache
// only, and a key not cached fails the message with *outage; otherwise a fault of the
// environment unwrapping the data key is stored in *outage.
func (o *Opener) prepare(ctx context.Context, body []byte, md map[string]string, outage *error) (*openPlan, error) {
	r, err := parseReceived(md, &o.rules)
	if err != nil {
		return nil, fmt.Errorf("fields: %w", err)
	}
	p := &openPlan{body: body, md: md, r: r}
	fail := func(err error) (*openPlan, error) { return nil, p.fail(err) }
	keys := clearKeys(md)
	p.keys = keys
	if !wire.FitsU32(len(body)) || !wire.FitsU32(len(keys)) {
		return fail(malformed("body or metadata too large"))
	}
	for _, k := range keys {
		if !wire.FitsU32(len(k)) || !wire.FitsU32(len(md[k])) {
			return fail(malformed("metadata entry longer than 2^32-1 bytes"))
		}
	}
	if o.cache == nil {
		return fail(errors.New("Opener has no UnwrapCache"))
	}
	var key *keyring.DataKey
	if *outage != nil {
		if key = o.cache.Cached(r.kid, r.dek); key == nil {
			return fail(*outage)
		}
	} else if key, err = o.cache.Get(ctx, r.kid, r.dek); err != nil {
		if fault.ClassOf(err) == fault.Environment {
			*outage = err
		}
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
	p.ms = ms
	p.repl = make([][]byte, len(ms))
	var env uint64
	for k, mt := range ms {
		rule := c.rules[mt.rule]
		s, ok := unquotePlain(body[mt.start:mt.end])
		if !ok {
			return fail(malformed("field %q: not a string the %s mode writes", mt.path, rule.Mode))
		}
		switch rule.Mode {
		case Transit, Deterministic:
			if _, ok := keyring.CiphertextVersion(s); !ok {
				return fail(malformed("field %q: not a vault:vN: ciphertext", mt.path))
			}
			if rule.Mode == Transit {
				p.transit = append(p.transit, keyring.TransitItem{Ciphertext: s, AssociatedData: fieldAD(r.m.id[:], mt.path)})
				p.transitRefs = append(p.transitRefs, k)
			} else {
				p.det = append(p.det, keyring.TransitItem{Ciphertext: s, Context: []byte(detContext + rule.Path)})
				p.detRefs = append(p.detRefs, k)
			}
		case Envelope:
			env++
			if r.seq0+env < r.seq0 {
				return fail(malformed("sequence numbers overflow"))
			}
			text, ok := strings.CutPrefix(s, envPrefix)
			ct, err := b64.DecodeString(text)
			if !ok || err != nil || len(ct) < wire.TagSize {
				return fail(malformed("field %q: not a %s envelope ciphertext", mt.path, envPrefix))
			}
			pt, err := aead.Open(ct[:0], nonceFor(r.seq0+env), ct, fieldAD(r.m.id[:], mt.path))
			if err != nil {
				return fail(fmt.Errorf("%w: field %q", envelope.ErrAuth, mt.path))
			}
			p.repl[k] = pt
		case FPE:
			if rule.InVault {
				p.fpe = append(p.fpe, keyring.FPEItem{Value: s, Tweak: []byte(rule.Path), Options: rule.cardOptions().String()})
				p.fpeRefs = append(p.fpeRefs, k)
				continue
			}
			ff, err := o.fpe.get(ctx, r.m.fpe, r.m.fpeVersion)
			if err != nil {
				return fail(err)
			}
			pt, err := cryptFPE(ff, rule, s, true)
			if err != nil {
				return fail(malformed("field %q: %w", mt.path, err))
			}
			p.repl[k] = quoted(pt)
		case Transform:
			p.transforms.add(rule, s, itemRef{match: k})
		}
	}
	return p, nil
}

// finish validates the restored values and splices them into the body.
func (p *openPlan) finish() ([]byte, map[string]string, error) {
	for k, pt := range p.repl {
		if !json.Valid(pt) {
			return nil, nil, p.fail(malformed("field %q: decrypted value is not JSON", p.ms[k].path))
		}
	}
	out := make(map[string]string, len(p.keys))
	for _, k := range p.keys {
		out[k] = p.md[k]
	}
	return splice(p.body, p.ms, p.repl), out, nil
}

// decodeBatch sends the values of one Transform role and transformation in one call and
// returns the decoded values, aligned with b.values, and the engine's error if any.
func (o *Opener) decodeBatch(ctx context.Context, b *transformBatch) ([]string, error) {
	tr, ok := o.fk.(keyring.Transformer)
	if !ok {
		return nil, fmt.Errorf("decode with transform role %q: Opener has no key service that implements keyring.Transformer", b.role)
	}
	out, err := tr.TransformDecode(ctx, b.role, b.transformation, b.values)
	if err != nil {
		// out, when it has one entry per value, says which values were refused ("").
		return out, fmt.Errorf("decode %d fields with transform role %q: %w", len(b.values), b.role, err)
	}
	if len(out) != len(b.values) {
		return nil, fmt.Errorf("decode %d fields with transform role %q: key service returned %d values", len(b.values), b.role, len(out))
	}
	return out, nil
}

// decryptFPEInVault asks the key service to decipher one key version's fpe(vault) values.
func (o *Opener) decryptFPEInVault(ctx context.Context, key string, version int, items []keyring.FPEItem) error {
	fc, ok := o.fk.(keyring.FPECipher)
	if !ok {
		return fmt.Errorf("fpe(vault) with key %q: Opener has no key service that implements keyring.FPECipher (keyring.Vault does, with pubcrypt's Vault FPE plugin)", key)
	}
	if err := fc.FPEDecrypt(ctx, key, version, items); err != nil {
		return fmt.Errorf("fpe(vault) %d fields with key %q version %d: %w", len(items), key, version, err)
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

// decryptGroup sends the items of one Vault key in one call. It returns the error of the
// call as a whole, or else each item's own error (nil where the item decrypted).
func (o *Opener) decryptGroup(ctx context.Context, key string, items []keyring.TransitItem) ([]error, error) {
	if o.fk == nil {
		return nil, fmt.Errorf("decrypt with key %q: Opener has no FieldKeyring", key)
	}
	if err := o.fk.DecryptBatch(ctx, key, items); err != nil {
		return nil, fmt.Errorf("decrypt %d fields with key %q: %w", len(items), key, err)
	}
	errs := make([]error, len(items))
	for j, it := range items {
		errs[j] = it.Err
	}
	return errs, nil
}
