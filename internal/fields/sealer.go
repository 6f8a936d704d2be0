package fields

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/pubcrypt/pubcrypt/internal/envelope"
	"github.com/pubcrypt/pubcrypt/internal/fpe"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// Keys names the Vault keys of the modes that use one. A mode whose key is empty cannot
// be used.
type Keys struct {
	// Transit is the Transit key of transit fields (an AEAD type: aes256-gcm96).
	Transit string
	// Deterministic is the Transit key of deterministic fields, created with
	// derived=true and convergent_encryption=true.
	Deterministic string
	// FPE is the key FieldKeyring.FPEKey derives FF1 keys from.
	FPE string
}

// SealerOptions configure a Sealer. The zero value is useful.
type SealerOptions struct {
	// FPERefresh is how long the latest FPE key version is used before the key service
	// is asked again, so that a rotation is picked up without a restart; 0 means
	// DefaultFPERefresh.
	FPERefresh time.Duration
}

// Sealer protects the fields of outgoing messages. It is safe for concurrent use.
type Sealer struct {
	fk   keyring.FieldKeyring
	dk   *keyring.DataKeys
	keys Keys
	fpe  *fpeKeys

	// Test hooks: the source of message IDs, and the reservation of sequence numbers.
	rand    io.Reader
	reserve func(ctx context.Context, sizes []int) (*keyring.DataKey, uint64, error)
}

// NewSealer returns a Sealer that takes data keys from dk and asks fk for Transit,
// deterministic and FPE encryption under the keys named in keys. fk may be nil if only
// Envelope rules are used.
func NewSealer(fk keyring.FieldKeyring, dk *keyring.DataKeys, keys Keys, opts SealerOptions) *Sealer {
	if opts.FPERefresh <= 0 {
		opts.FPERefresh = DefaultFPERefresh
	}
	s := &Sealer{fk: fk, dk: dk, keys: keys, fpe: newFPEKeys(fk, opts.FPERefresh), rand: rand.Reader}
	s.reserve = s.takeRange
	return s
}

// takeRange reserves len(sizes) consecutive sequence numbers under one data key: the
// first for the message MAC, the others for its envelope fields (docs/FIELDS.md section 7).
func (s *Sealer) takeRange(ctx context.Context, sizes []int) (*keyring.DataKey, uint64, error) {
	if s.dk == nil {
		return nil, 0, errors.New("fields: Sealer has no DataKeys")
	}
	total := 0
	for _, n := range sizes {
		total += n
	}
	return s.dk.TakeN(ctx, len(sizes), total)
}

// CheckPolicy reports whether p can be used with this Sealer: a valid policy, a key for
// every mode it uses, and a manifest within MaxManifestLen bytes even when every rule
// matches. Protect checks the same; a producer can call it once at startup instead of
// finding out at the first message.
func (s *Sealer) CheckPolicy(p Policy) error {
	_, err := s.compile(p)
	return err
}

func (s *Sealer) compile(p Policy) (*compiled, error) {
	c, err := compile(p)
	if err != nil {
		return nil, err
	}
	worst := manifest{rules: p, fpeVersion: 1 << 31}
	for _, r := range p {
		var key *string
		var field *string
		switch r.Mode {
		case Transit:
			key, field = &s.keys.Transit, &worst.transit
		case Deterministic:
			key, field = &s.keys.Deterministic, &worst.det
		case FPE:
			key, field = &s.keys.FPE, &worst.fpe
		case Transform:
			// The role travels in the rule's manifest token; no key name to configure.
			if _, ok := s.fk.(keyring.Transformer); !ok {
				return nil, fmt.Errorf("%w: rule %q: mode transform needs a key service that implements keyring.Transformer (keyring.Vault does)", ErrPolicy, r.Path)
			}
			continue
		default:
			continue
		}
		if !envelope.ValidKeyID(*key) {
			return nil, fmt.Errorf("%w: rule %q: no valid %s key configured (1-%d characters from [A-Za-z0-9._-])", ErrPolicy, r.Path, r.Mode, maxKeyNameLen)
		}
		if s.fk == nil {
			return nil, fmt.Errorf("%w: rule %q: mode %s needs a FieldKeyring", ErrPolicy, r.Path, r.Mode)
		}
		*field = *key
	}
	if n := len(worst.formatUnsigned()) + len(tagField) + tagTextLen; n > MaxManifestLen {
		return nil, fmt.Errorf("%w: policy %.60q...: manifest of up to %d bytes exceeds the %d-byte limit of a metadata entry", ErrManifest, p.String(), n, MaxManifestLen)
	}
	return c, nil
}

// sealPlan is one message on its way through Protect.
type sealPlan struct {
	in      *Input
	c       *compiled
	matches []match
	repl    [][]byte // replacement of each match, filled mode by mode
	m       manifest
	env     []int // indexes of envelope matches, in document order
	key     *keyring.DataKey
	seq0    uint64
}

// itemRef points a Transit or Transform item back at its message and match.
type itemRef struct{ msg, match int }

// transformBatch is the values of one Vault Transform role and transformation: one
// encode or decode call.
type transformBatch struct {
	role, transformation string
	values               []string
	refs                 []itemRef
}

// transformBatches groups Transform values by role and transformation, in order of
// first use.
type transformBatches struct {
	list  []*transformBatch
	index map[[2]string]*transformBatch
}

func (tb *transformBatches) add(r Rule, value string, ref itemRef) {
	k := [2]string{r.Role, r.Transformation}
	b := tb.index[k]
	if b == nil {
		if tb.index == nil {
			tb.index = make(map[[2]string]*transformBatch)
		}
		b = &transformBatch{role: r.Role, transformation: r.Transformation}
		tb.index[k] = b
		tb.list = append(tb.list, b)
	}
	b.values = append(b.values, value)
	b.refs = append(b.refs, ref)
}

// Protect protects every message of a batch: it replaces the values each message's
// policy selects, adds the envelope entries and the manifest, and MACs the result. The
// key service sees one EncryptBatch call per Vault key for the whole batch (and an FPE key
// request at most once per refresh interval). Protect fails closed: on any error it
// returns no output at all.
func (s *Sealer) Protect(ctx context.Context, msgs []Input) ([]Output, error) {
	plans := make([]*sealPlan, len(msgs))
	var compiledFor Policy
	var c *compiled
	needFPE := false
	for i := range msgs {
		in := &msgs[i]
		// Messages of a batch usually share one policy: compile it once.
		if c == nil || !samePolicy(in.Policy, compiledFor) {
			var err error
			if c, err = s.compile(in.Policy); err != nil {
				return nil, fmt.Errorf("fields: message %d: %w", i, err)
			}
			compiledFor = in.Policy
		}
		p, err := prepare(in, c)
		if err != nil {
			return nil, fmt.Errorf("fields: message %d: %w", i, err)
		}
		p.m.setKeys(s.keys)
		plans[i] = p
		needFPE = needFPE || p.m.fpe != ""
	}

	var ff *fpe.FF1
	if needFPE {
		var version int
		var err error
		if ff, version, err = s.fpe.current(ctx, s.keys.FPE); err != nil {
			return nil, err
		}
		for _, p := range plans {
			if p.m.fpe != "" {
				p.m.fpeVersion = version
			}
		}
	}

	var transit, det []keyring.TransitItem
	var transitRefs, detRefs []itemRef
	var transforms transformBatches
	for i, p := range plans {
		if _, err := io.ReadFull(s.rand, p.m.id[:]); err != nil {
			return nil, fmt.Errorf("fields: message ID: %w", err)
		}
		p.m.unsigned = p.m.formatUnsigned()
		if n := len(p.m.unsigned) + len(tagField) + tagTextLen; n > MaxManifestLen {
			return nil, fmt.Errorf("fields: message %d: %w: %d bytes exceeds the %d-byte limit", i, ErrManifest, n, MaxManifestLen)
		}
		sizes := []int{len(p.in.Body)}
		for k, mt := range p.matches {
			r := p.c.rules[mt.rule]
			raw := p.in.Body[mt.start:mt.end]
			switch r.Mode {
			case Transit:
				transit = append(transit, keyring.TransitItem{Plaintext: raw, AssociatedData: fieldAD(p.m.id[:], mt.path)})
				transitRefs = append(transitRefs, itemRef{i, k})
			case Deterministic:
				det = append(det, keyring.TransitItem{Plaintext: raw, Context: []byte(detContext + r.Path)})
				detRefs = append(detRefs, itemRef{i, k})
			case FPE:
				out, err := encryptFPE(ff, r, raw)
				if err != nil {
					return nil, fmt.Errorf("fields: message %d: %w", i, err)
				}
				p.repl[k] = out
			case Transform:
				v, err := jsonString(raw)
				if err != nil {
					return nil, fmt.Errorf("fields: message %d: %w: field %q: transform needs a JSON string", i, ErrFieldType, mt.path)
				}
				transforms.add(r, v, itemRef{i, k})
			case Envelope:
				p.env = append(p.env, k)
				sizes = append(sizes, len(raw))
			}
		}
		key, seq0, err := s.reserve(ctx, sizes)
		if err != nil {
			return nil, fmt.Errorf("fields: message %d: data key: %w", i, err)
		}
		if !envelope.ValidKeyID(key.KeyID) || !envelope.ValidValue(key.Wrapped) {
			return nil, fmt.Errorf("fields: message %d: %w: data key ID or wrapped key does not fit the envelope", i, envelope.ErrInvalidInput)
		}
		p.key, p.seq0 = key, seq0
	}

	var calls []func() error
	if len(transit) > 0 {
		calls = append(calls, func() error { return s.encrypt(ctx, s.keys.Transit, transit, transitRefs, plans) })
	}
	if len(det) > 0 {
		calls = append(calls, func() error { return s.encrypt(ctx, s.keys.Deterministic, det, detRefs, plans) })
	}
	for _, b := range transforms.list {
		calls = append(calls, func() error { return s.encode(ctx, b, plans) })
	}
	if err := concurrently(calls...); err != nil {
		return nil, err
	}

	out := make([]Output, len(plans))
	for i, p := range plans {
		var err error
		if out[i], err = p.seal(); err != nil {
			return nil, fmt.Errorf("fields: message %d: %w", i, err)
		}
	}
	return out, nil
}

func samePolicy(a, b Policy) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// prepare checks a message and locates the values its policy selects.
func prepare(in *Input, c *compiled) (*sealPlan, error) {
	for k, v := range in.Metadata {
		switch {
		case envelope.Reserved(k):
			return nil, fmt.Errorf("%w: metadata key %.64q is reserved (prefix %q)", envelope.ErrInvalidInput, k, reservedPrefix)
		case !utf8.ValidString(k):
			return nil, fmt.Errorf("%w: metadata key %.64q is not valid UTF-8", envelope.ErrInvalidInput, k)
		case !utf8.ValidString(v):
			return nil, fmt.Errorf("%w: value of metadata key %.64q is not valid UTF-8", envelope.ErrInvalidInput, k)
		case !fitsU32(len(k)) || !fitsU32(len(v)):
			return nil, fmt.Errorf("%w: metadata entry %.64q longer than 2^32-1 bytes", envelope.ErrInvalidInput, k)
		}
	}
	if !fitsU32(len(in.Body)) {
		return nil, fmt.Errorf("%w: body longer than 2^32-1 bytes", envelope.ErrInvalidInput)
	}
	if !json.Valid(in.Body) {
		return nil, ErrNotJSON
	}
	ms, err := locate(in.Body, c)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotJSON, err)
	}
	p := &sealPlan{in: in, c: c, matches: ms, repl: make([][]byte, len(ms))}
	used := make([]bool, len(c.rules))
	for _, mt := range ms {
		used[mt.rule] = true
		// Checked here, before any key-service call; the digits are checked by FF1.
		if r := c.rules[mt.rule]; r.Mode == FPE && in.Body[mt.start] != '"' {
			return nil, fmt.Errorf("%w: field %q: fpe needs a JSON string of digits and separators (%q)", ErrFieldType, mt.path, fpe.Separators)
		} else if r.Mode == Transform && in.Body[mt.start] != '"' {
			return nil, fmt.Errorf("%w: field %q: transform needs a JSON string", ErrFieldType, mt.path)
		}
	}
	for i, r := range c.rules {
		if !used[i] {
			continue
		}
		p.m.rules = append(p.m.rules, r)
	}
	return p, nil
}

// encrypt sends the items of one Vault key in one call and writes the ciphertexts into
// the plans.
func (s *Sealer) encrypt(ctx context.Context, key string, items []keyring.TransitItem, refs []itemRef, plans []*sealPlan) error {
	if err := s.fk.EncryptBatch(ctx, key, items); err != nil {
		return fmt.Errorf("fields: encrypt %d fields with key %q: %w", len(items), key, err)
	}
	for j, it := range items {
		ref := refs[j]
		p := plans[ref.msg]
		path := p.matches[ref.match].path
		if it.Err != nil {
			return fmt.Errorf("fields: message %d: field %q: encrypt with key %q: %w", ref.msg, path, key, it.Err)
		}
		if len(it.Ciphertext) < len("vault:") || it.Ciphertext[:len("vault:")] != "vault:" || !plainString(it.Ciphertext) {
			return fmt.Errorf("fields: message %d: field %q: key service returned a ciphertext that is not vault:... in printable ASCII", ref.msg, path)
		}
		p.repl[ref.match] = quoted(it.Ciphertext)
	}
	return nil
}

// encode sends the values of one Transform role and transformation in one call and writes
// the encoded values into the plans.
func (s *Sealer) encode(ctx context.Context, b *transformBatch, plans []*sealPlan) error {
	tr, ok := s.fk.(keyring.Transformer)
	if !ok {
		return fmt.Errorf("fields: %w: mode transform needs a key service that implements keyring.Transformer", ErrPolicy)
	}
	out, err := tr.TransformEncode(ctx, b.role, b.transformation, b.values)
	if err != nil {
		return fmt.Errorf("fields: transform %d fields with role %q: %w", len(b.values), b.role, err)
	}
	if len(out) != len(b.values) {
		return fmt.Errorf("fields: transform %d fields with role %q: key service returned %d values", len(b.values), b.role, len(out))
	}
	for j, v := range out {
		ref := b.refs[j]
		p := plans[ref.msg]
		if !plainString(v) {
			return fmt.Errorf("fields: message %d: field %q: %w: transform role %q returned a value that is not printable ASCII without '\"' or '\\'", ref.msg, p.matches[ref.match].path, ErrFieldType, b.role)
		}
		p.repl[ref.match] = quoted(v)
	}
	return nil
}

// seal encrypts the envelope fields, splices the body and MACs the message.
func (p *sealPlan) seal() (Output, error) {
	aead, err := p.key.AEAD()
	if err != nil {
		return Output{}, err
	}
	for j, k := range p.env {
		mt := p.matches[k]
		ct := aead.Seal(nil, nonceFor(p.seq0+uint64(j)+1), p.in.Body[mt.start:mt.end], fieldAD(p.m.id[:], mt.path))
		p.repl[k] = quoted(envPrefix + b64.EncodeToString(ct))
	}
	body := splice(p.in.Body, p.matches, p.repl)
	header := formatHeader(p.key.KeyID, p.seq0)
	keys := make([]string, 0, len(p.in.Metadata))
	for k := range p.in.Metadata {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	tag := aead.Seal(nil, nonceFor(p.seq0), nil, macAD(header, p.key.Wrapped, p.m.unsigned, keys, p.in.Metadata, body))
	copy(p.m.tag[:], tag)

	md := make(map[string]string, len(keys)+3)
	for _, k := range keys {
		md[k] = p.in.Metadata[k]
	}
	md[envelope.HeaderKey] = header
	md[envelope.DEKKey] = p.key.Wrapped
	md[ManifestKey] = p.m.format()
	return Output{Body: body, Metadata: md}, nil
}

// encryptFPE enciphers the JSON string raw under rule r.
func encryptFPE(ff *fpe.FF1, r Rule, raw []byte) ([]byte, error) {
	s, err := jsonString(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: field %q: fpe needs a JSON string of digits and separators (%q)", ErrFieldType, r.Path, fpe.Separators)
	}
	out, err := cryptFPE(ff, r, s, false)
	if err != nil {
		return nil, fmt.Errorf("%w: field %q: %w", ErrFieldType, r.Path, err)
	}
	if !plainString(out) {
		return nil, fmt.Errorf("%w: field %q: fpe output is not plain ASCII", ErrFieldType, r.Path)
	}
	return quoted(out), nil
}

// cryptFPE runs the FF1 construction the rule names: the card one when an option is
// set, the digit one otherwise. The tweak is the rule path.
func cryptFPE(ff *fpe.FF1, r Rule, s string, decrypt bool) (string, error) {
	tweak := []byte(r.Path)
	if r.card() {
		o := fpe.CardOptions{KeepBIN: r.KeepBIN, KeepLast4: r.KeepLast4, Luhn: r.Luhn}
		if decrypt {
			return fpe.DecryptCard(ff, s, tweak, o)
		}
		return fpe.EncryptCard(ff, s, tweak, o)
	}
	if decrypt {
		return fpe.DecryptDigits(ff, s, tweak)
	}
	return fpe.EncryptDigits(ff, s, tweak)
}

// jsonString returns the value of the JSON string token raw.
func jsonString(raw []byte) (string, error) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", errors.New("not a string")
	}
	if s, ok := unquotePlain(raw); ok {
		return s, nil
	}
	var s string
	err := json.Unmarshal(raw, &s)
	return s, err
}

// concurrently runs the calls at once (the key-service calls of different keys) and
// returns the first error in argument order.
func concurrently(calls ...func() error) error {
	if len(calls) == 0 {
		return nil
	}
	errs := make([]error, len(calls))
	var wg sync.WaitGroup
	for i, f := range calls[1:] {
		wg.Go(func() { errs[i+1] = f() })
	}
	errs[0] = calls[0]()
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
