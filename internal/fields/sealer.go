package fields

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/envelope"
	"github.com/pubcrypt/pubcrypt/internal/fpe"
	"github.com/pubcrypt/pubcrypt/internal/wire"
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
	// Subjects gives each subject keys of its own, for policies with a subject option
	// (keyring.Subjects does, over Vault). Without it such a policy is refused.
	Subjects SubjectKeys
}

// SubjectKeys is what a Sealer needs for policies with a subject option: the name of each
// subject's key, and the data keys wrapped under it. The key encrypts the subject's
// transit fields and derives its FPE key as well, so that destroying it erases every
// protected value of the subject.
type SubjectKeys interface {
	// KeyNames returns the key name of each subject, in order, in one call for the
	// subjects it does not know yet.
	KeyNames(ctx context.Context, subjects []string) ([]string, error)
	// DataKeys returns the data keys of the subject key named key.
	DataKeys(key string) (*keyring.DataKeys, error)
}

// Sealer protects the fields of outgoing messages. It is safe for concurrent use.
type Sealer struct {
	fk   keyring.FieldKeyring
	dk   *keyring.DataKeys
	keys Keys
	fpe  *fpeKeys
	subj SubjectKeys

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
	s := &Sealer{fk: fk, dk: dk, keys: keys, fpe: newFPEKeys(fk, opts.FPERefresh), subj: opts.Subjects, rand: rand.Reader}
	s.reserve = s.takeRange
	return s
}

// takeRange reserves len(sizes) consecutive sequence numbers under one data key: the
// first for the message MAC, the others for its envelope fields (docs/FIELDS.md section 7).
func (s *Sealer) takeRange(ctx context.Context, sizes []int) (*keyring.DataKey, uint64, error) {
	if s.dk == nil {
		return nil, 0, errors.New("fields: Sealer has no DataKeys")
	}
	return takeFrom(ctx, s.dk, sizes)
}

// takeFrom is takeRange under the data keys dk (a subject's, say).
func takeFrom(ctx context.Context, dk *keyring.DataKeys, sizes []int) (*keyring.DataKey, uint64, error) {
	total := 0
	for _, n := range sizes {
		total += n
	}
	return dk.TakeN(ctx, len(sizes), total)
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
	if c.subject != nil && s.subj == nil {
		return nil, fmt.Errorf("%w: a policy with a subject needs keys per subject (SealerOptions.Subjects; keyring.Subjects over Vault)", ErrPolicy)
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
			if _, ok := s.fk.(keyring.FPECipher); r.InVault && !ok {
				return nil, fmt.Errorf("%w: rule %q: fpe(vault) needs a key service that implements keyring.FPECipher (keyring.Vault does, with pubcrypt's Vault FPE plugin)", ErrPolicy, r.Path)
			}
		case Transform:
			// The role travels in the rule's manifest token; no key name to configure.
			if _, ok := s.fk.(keyring.Transformer); !ok {
				return nil, fmt.Errorf("%w: rule %q: mode transform needs a key service that implements keyring.Transformer (keyring.Vault does)", ErrPolicy, r.Path)
			}
			continue
		default:
			continue
		}
		if !wire.ValidKeyID(*key) {
			return nil, fmt.Errorf("%w: rule %q: no valid %s key configured (1-%d characters from [A-Za-z0-9._-])", ErrPolicy, r.Path, r.Mode, wire.MaxKeyIDLen)
		}
		if s.fk == nil {
			return nil, fmt.Errorf("%w: rule %q: mode %s needs a key service that implements keyring.FieldKeyring (keyring.Vault does); with this keyring only mode envelope protects fields", ErrPolicy, r.Path, r.Mode)
		}
		*field = *key
		if c.subject != nil && r.Mode != Deterministic {
			*field = strings.Repeat("s", len(keyring.SubjectKeyPrefix)+32)
		}
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
	subject string // the subject ID, under a policy with a subject
	skey    string // the subject's key name
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

// BatchError is the error of Protect when some messages of the batch cannot be protected
// for a fault of their own (class fault.Message: not JSON, a value its mode cannot
// protect, a policy or metadata the format cannot carry, a value the key service refuses)
// and nothing else failed. Errs has one entry per message of the batch, non-nil exactly
// for the messages at fault; an entry does not repeat the message's index, which Error
// adds. Protect returns no output with it: the batch fails closed, and a caller can take
// the messages at fault out and protect the others again.
type BatchError struct {
	Errs []error
}

func (e *BatchError) Error() string {
	var first []string
	n := 0
	for i, err := range e.Errs {
		if err == nil {
			continue
		}
		n++
		if len(first) < 3 {
			first = append(first, fmt.Sprintf("fields: message %d: %v", i, err))
		}
	}
	if n == 1 {
		return first[0]
	}
	msg := fmt.Sprintf("fields: %d of %d messages cannot be protected: %s", n, len(e.Errs), strings.Join(first, "; "))
	if n > len(first) {
		msg += fmt.Sprintf("; and %d more", n-len(first))
	}
	return msg
}

// Unwrap returns the errors of the messages at fault, so that errors.Is finds their kinds.
func (e *BatchError) Unwrap() []error {
	var errs []error
	for _, err := range e.Errs {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// FaultClass is fault.Message: every error in Errs is a fault of its message.
func (e *BatchError) FaultClass() fault.Class { return fault.Message }

// failures collects the message faults of one Protect call; calls to the key service run
// concurrently and report into it.
type failures struct {
	mu   sync.Mutex
	errs []error
	n    int
}

// add records err for message i unless one is recorded already.
func (f *failures) add(i int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.errs[i] == nil {
		f.errs[i] = err
		f.n++
	}
}

func (f *failures) has(i int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.errs[i] != nil
}

// Protect protects every message of a batch: it replaces the values each message's
// policy selects, adds the envelope entries and the manifest, and MACs the result. The
// key service sees one EncryptBatch call per Vault key for the whole batch (and an FPE key
// request at most once per refresh interval). Protect fails closed: on any error it
// returns no output at all.
//
// A fault of the environment (no data key, the key service unreachable or refusing the
// token, a key missing) is returned as it is, at once. Faults of messages are collected
// for the whole batch, without sending the values of those messages to the key service,
// and returned as a *BatchError naming each message at fault, once every other message
// is known to be protectable.
func (s *Sealer) Protect(ctx context.Context, msgs []Input) ([]Output, error) {
	plans := make([]*sealPlan, len(msgs))
	failed := &failures{errs: make([]error, len(msgs))}
	// bad records a message fault of message i; any other error ends Protect.
	bad := func(i int, err error) error {
		if fault.IsMessage(err) {
			failed.add(i, err)
			return nil
		}
		return fmt.Errorf("fields: message %d: %w", i, err)
	}
	var compiledFor Policy
	var c *compiled
	var compileErr error
	ffVersion := map[string]int{}
	for i := range msgs {
		in := &msgs[i]
		// Messages of a batch usually share one policy: compile it once.
		if (c == nil && compileErr == nil) || !samePolicy(in.Policy, compiledFor) {
			c, compileErr = s.compile(in.Policy)
			compiledFor = in.Policy
		}
		if compileErr != nil {
			if err := bad(i, compileErr); err != nil {
				return nil, err
			}
			continue
		}
		p, err := prepare(in, c)
		if err != nil {
			if err := bad(i, err); err != nil {
				return nil, err
			}
			continue
		}
		if c.subject != nil && c.subject.key != "" {
			p.skey = c.subject.key
		} else if c.subject != nil {
			if p.subject, err = c.subject.subjectOf(in); err != nil {
				if err := bad(i, err); err != nil {
					return nil, err
				}
				continue
			}
		}
		plans[i] = p
	}
	if err := s.nameSubjects(ctx, plans); err != nil {
		return nil, err
	}
	for _, p := range plans {
		if p == nil {
			continue
		}
		keys := s.keys
		if p.skey != "" {
			keys.Transit, keys.FPE = p.skey, p.skey
		}
		p.m.setKeys(keys)
	}

	// The FF1 cipher of each FPE key: one, or one per subject.
	ffs := map[string]*fpe.FF1{}
	for _, p := range plans {
		if p == nil || p.m.fpe == "" || p.vaultFPE() {
			continue
		}
		ff := ffs[p.m.fpe]
		if ff == nil {
			var version int
			var err error
			if ff, version, err = s.fpe.current(ctx, p.m.fpe); err != nil {
				return nil, err
			}
			ffs[p.m.fpe] = ff
			ffVersion[p.m.fpe] = version
		}
		p.m.fpeVersion = ffVersion[p.m.fpe]
	}

	transit := map[string]*transitGroup{} // by key: one key, or one per subject
	var transitKeys []string
	var det []keyring.TransitItem
	var detRefs []itemRef
	var transforms transformBatches
	var vaultFPE []keyring.FPEItem
	var vaultFPERefs []itemRef
	for i, p := range plans {
		if p == nil {
			continue
		}
		// This message's key-service items join the batch only once the message is known
		// to be protectable: the values of a message at fault are never sent.
		var myTransit, myDet []keyring.TransitItem
		var myTransitRefs, myDetRefs []itemRef
		type transformValue struct {
			r     Rule
			value string
			ref   itemRef
		}
		var myTransforms []transformValue
		var myFPE []keyring.FPEItem
		var myFPERefs []itemRef
		err := func() error {
			if _, err := io.ReadFull(s.rand, p.m.id[:]); err != nil {
				return fault.Mark(fmt.Errorf("message ID: %w", err), fault.Environment)
			}
			p.m.unsigned = p.m.formatUnsigned()
			if n := len(p.m.unsigned) + len(tagField) + tagTextLen; n > MaxManifestLen {
				return fmt.Errorf("%w: %d bytes exceeds the %d-byte limit", ErrManifest, n, MaxManifestLen)
			}
			sizes := []int{len(p.in.Body)}
			for k, mt := range p.matches {
				r := p.c.rules[mt.rule]
				raw := p.in.Body[mt.start:mt.end]
				switch r.Mode {
				case Transit:
					myTransit = append(myTransit, keyring.TransitItem{Plaintext: raw, AssociatedData: fieldAD(p.m.id[:], mt.path)})
					myTransitRefs = append(myTransitRefs, itemRef{i, k})
				case Deterministic:
					myDet = append(myDet, keyring.TransitItem{Plaintext: raw, Context: []byte(detContext + r.Path)})
					myDetRefs = append(myDetRefs, itemRef{i, k})
				case FPE:
					if r.InVault {
						v, err := jsonString(raw)
						if err != nil {
							return fmt.Errorf("%w: field %q: fpe needs a JSON string of digits and separators (%q)", ErrFieldType, mt.path, fpe.Separators)
						}
						myFPE = append(myFPE, keyring.FPEItem{Value: v, Tweak: []byte(r.Path), Options: r.cardOptions().String()})
						myFPERefs = append(myFPERefs, itemRef{i, k})
						continue
					}
					out, err := encryptFPE(ffs[p.m.fpe], r, raw)
					if err != nil {
						return err
					}
					p.repl[k] = out
				case Transform:
					v, err := jsonString(raw)
					if err != nil {
						return fmt.Errorf("%w: field %q: transform needs a JSON string", ErrFieldType, mt.path)
					}
					myTransforms = append(myTransforms, transformValue{r, v, itemRef{i, k}})
				case Envelope:
					p.env = append(p.env, k)
					sizes = append(sizes, len(raw))
				}
			}
			reserve := s.reserve
			if p.skey != "" {
				dk, err := s.subj.DataKeys(p.skey)
				if err != nil {
					return fmt.Errorf("data keys of subject key %s: %w", p.skey, err)
				}
				reserve = func(ctx context.Context, sizes []int) (*keyring.DataKey, uint64, error) {
					return takeFrom(ctx, dk, sizes)
				}
			}
			key, seq0, err := reserve(ctx, sizes)
			if err != nil {
				return fmt.Errorf("data key: %w", err)
			}
			if !wire.ValidKeyID(key.KeyID) || !wire.ValidValue(key.Wrapped) {
				// The keyring's fault, not the message's.
				return fault.Mark(fmt.Errorf("%w: data key ID or wrapped key does not fit the envelope", envelope.ErrInvalidInput), fault.Environment)
			}
			p.key, p.seq0 = key, seq0
			return nil
		}()
		if err != nil {
			if err := bad(i, err); err != nil {
				return nil, err
			}
			plans[i] = nil
			continue
		}
		if len(myTransit) > 0 {
			g := transit[p.m.transit]
			if g == nil {
				g = &transitGroup{}
				transit[p.m.transit] = g
				transitKeys = append(transitKeys, p.m.transit)
			}
			g.items, g.refs = append(g.items, myTransit...), append(g.refs, myTransitRefs...)
		}
		det, detRefs = append(det, myDet...), append(detRefs, myDetRefs...)
		for _, tv := range myTransforms {
			transforms.add(tv.r, tv.value, tv.ref)
		}
		vaultFPE, vaultFPERefs = append(vaultFPE, myFPE...), append(vaultFPERefs, myFPERefs...)
	}

	var calls []func() error
	for _, key := range transitKeys {
		g := transit[key]
		calls = append(calls, func() error { return s.encrypt(ctx, key, g.items, g.refs, plans, failed) })
	}
	if len(det) > 0 {
		calls = append(calls, func() error { return s.encrypt(ctx, s.keys.Deterministic, det, detRefs, plans, failed) })
	}
	for _, b := range transforms.list {
		calls = append(calls, func() error { return s.encode(ctx, b, plans, failed) })
	}
	if len(vaultFPE) > 0 {
		calls = append(calls, func() error { return s.encryptFPEInVault(ctx, vaultFPE, vaultFPERefs, plans, failed) })
	}
	if err := concurrently(calls...); err != nil {
		return nil, err
	}
	if failed.n > 0 {
		return nil, &BatchError{Errs: failed.errs}
	}
	for _, p := range plans {
		// The version of fpe(vault) values is known only now: the manifest again.
		if p != nil && p.m.fpe != "" && p.vaultFPE() {
			p.m.unsigned = p.m.formatUnsigned()
			if n := len(p.m.unsigned) + len(tagField) + tagTextLen; n > MaxManifestLen {
				return nil, fmt.Errorf("fields: %w: %d bytes exceeds the %d-byte limit", ErrManifest, n, MaxManifestLen)
			}
		}
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

// transitGroup is the transit items of one key.
type transitGroup struct {
	items []keyring.TransitItem
	refs  []itemRef
}

// nameSubjects sets the subject key name of every plan with a subject, in one call for
// the batch.
func (s *Sealer) nameSubjects(ctx context.Context, plans []*sealPlan) error {
	var subjects []string
	var of []*sealPlan
	for _, p := range plans {
		if p != nil && p.c.subject != nil && p.skey == "" {
			subjects = append(subjects, p.subject)
			of = append(of, p)
		}
	}
	if len(subjects) == 0 {
		return nil
	}
	keys, err := s.subj.KeyNames(ctx, subjects)
	if err != nil {
		return fmt.Errorf("fields: subject keys: %w", err)
	}
	if len(keys) != len(subjects) {
		return fmt.Errorf("fields: subject keys: %d names for %d subjects", len(keys), len(subjects))
	}
	for i, p := range of {
		if !wire.ValidKeyID(keys[i]) {
			return fault.Mark(fmt.Errorf("fields: subject key name %.40q is not a valid key ID", keys[i]), fault.Environment)
		}
		p.skey = keys[i]
	}
	return nil
}

func samePolicy(a, b Policy) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// prepare checks a message and locates the values its policy selects.
func prepare(in *Input, c *compiled) (*sealPlan, error) {
	for k, v := range in.Metadata {
		switch {
		case wire.ReservedNotClear(k):
			return nil, fmt.Errorf("%w: metadata key %.64q is reserved (prefix %q)", envelope.ErrInvalidInput, k, wire.ReservedPrefix)
		case !utf8.ValidString(k):
			return nil, fmt.Errorf("%w: metadata key %.64q is not valid UTF-8", envelope.ErrInvalidInput, k)
		case !utf8.ValidString(v):
			return nil, fmt.Errorf("%w: value of metadata key %.64q is not valid UTF-8", envelope.ErrInvalidInput, k)
		case !wire.FitsU32(len(k)) || !wire.FitsU32(len(v)):
			return nil, fmt.Errorf("%w: metadata entry %.64q longer than 2^32-1 bytes", envelope.ErrInvalidInput, k)
		}
	}
	if !wire.FitsU32(len(in.Body)) {
		return nil, fmt.Errorf("%w: body longer than 2^32-1 bytes", envelope.ErrInvalidInput)
	}
	if !json.Valid(in.Body) {
		return nil, ErrNotJSON
	}
	if c.unmatched != UnmatchedClear && unaddressable(in.Body) {
		// The caller routes these (Policy.Unmatched); here they fail closed.
		return nil, fmt.Errorf("%w (unmatched=%s)", ErrUnmatched, c.unmatched)
	}
	ms, keptBy, err := locateUsed(in.Body, c)
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
	// The manifest lists the rules that selected or kept a value, and the default
	// whenever there is one: the receiver needs exactly these to find the same values.
	for i, r := range c.rules {
		if used[i] || keptBy[i] || i == c.def {
			p.m.rules = append(p.m.rules, r)
		}
	}
	return p, nil
}

// encrypt sends the items of one Vault key in one call and writes the ciphertexts into
// the plans. An item the key service refuses for its value fails its message (into
// failed); any other failure is returned and fails the batch.
func (s *Sealer) encrypt(ctx context.Context, key string, items []keyring.TransitItem, refs []itemRef, plans []*sealPlan, failed *failures) error {
	if err := s.fk.EncryptBatch(ctx, key, items); err != nil {
		err = fmt.Errorf("fields: encrypt %d fields with key %q: %w", len(items), key, err)
		if !fault.IsMessage(err) {
			return err
		}
		// Refused as a whole for what was sent: every message in it is at fault, as far
		// as can be known.
		for _, ref := range refs {
			failed.add(ref.msg, err)
		}
		return nil
	}
	for j, it := range items {
		ref := refs[j]
		p := plans[ref.msg]
		path := p.matches[ref.match].path
		if it.Err != nil {
			err := fmt.Errorf("field %q: encrypt with key %q: %w", path, key, it.Err)
			if !fault.IsMessage(err) {
				return fmt.Errorf("fields: message %d: %w", ref.msg, err)
			}
			failed.add(ref.msg, err)
			continue
		}
		if _, ok := keyring.CiphertextVersion(it.Ciphertext); !ok || !plainString(it.Ciphertext) {
			return fmt.Errorf("fields: message %d: field %q: key service returned a ciphertext that is not vault:vN:... in printable ASCII", ref.msg, path)
		}
		p.repl[ref.match] = quoted(it.Ciphertext)
	}
	return nil
}

// encode sends the values of one Transform role and transformation in one call and writes
// the encoded values into the plans. Values the engine refuses fail their messages, as in
// encrypt; the refused ones are those it returned no value for.
func (s *Sealer) encode(ctx context.Context, b *transformBatch, plans []*sealPlan, failed *failures) error {
	tr, ok := s.fk.(keyring.Transformer)
	if !ok {
		return fault.Mark(fmt.Errorf("fields: %w: mode transform needs a key service that implements keyring.Transformer", ErrPolicy), fault.Environment)
	}
	out, err := tr.TransformEncode(ctx, b.role, b.transformation, b.values)
	if err != nil {
		err = fmt.Errorf("fields: transform %d fields with role %q: %w", len(b.values), b.role, err)
		if !fault.IsMessage(err) {
			return err
		}
		for j, ref := range b.refs {
			if len(out) != len(b.values) || out[j] == "" {
				failed.add(ref.msg, err)
			}
		}
		if len(out) != len(b.values) {
			return nil
		}
	}
	if len(out) != len(b.values) {
		return fmt.Errorf("fields: transform %d fields with role %q: key service returned %d values", len(b.values), b.role, len(out))
	}
	for j, v := range out {
		ref := b.refs[j]
		p := plans[ref.msg]
		if failed.has(ref.msg) {
			continue
		}
		if !plainString(v) {
			// What the role returns is the key service's doing, not the message's.
			return fault.Mark(fmt.Errorf("fields: message %d: field %q: %w: transform role %q returned a value that is not printable ASCII without '\"' or '\\'", ref.msg, p.matches[ref.match].path, ErrFieldType, b.role), fault.Environment)
		}
		p.repl[ref.match] = quoted(v)
	}
	return nil
}

// vaultFPE reports whether the message's FPE rules are fpe(vault) (a policy's FPE rules
// are all one or the other, see compile).
func (p *sealPlan) vaultFPE() bool {
	for _, r := range p.m.rules {
		if r.Mode == FPE {
			return r.InVault
		}
	}
	return false
}

// encryptFPEInVault sends the fpe(vault) values of the batch to the key service in one
// call and writes the results and the key version into the plans. Values it refuses fail
// their messages, as in encrypt.
func (s *Sealer) encryptFPEInVault(ctx context.Context, items []keyring.FPEItem, refs []itemRef, plans []*sealPlan, failed *failures) error {
	fc, ok := s.fk.(keyring.FPECipher)
	if !ok {
		return fault.Mark(fmt.Errorf("fields: %w: fpe(vault) needs a key service that implements keyring.FPECipher", ErrPolicy), fault.Environment)
	}
	version, err := fc.FPEEncrypt(ctx, s.keys.FPE, items)
	if err != nil {
		err = fmt.Errorf("fields: fpe(vault) %d fields with key %q: %w", len(items), s.keys.FPE, err)
		if !fault.IsMessage(err) {
			return err
		}
		perItem := false
		for _, it := range items {
			perItem = perItem || it.Err != nil
		}
		for j, ref := range refs {
			if !perItem {
				failed.add(ref.msg, err)
			} else if it := items[j]; it.Err != nil {
				failed.add(ref.msg, fmt.Errorf("field %q: fpe(vault) with key %q: %w", plans[ref.msg].matches[ref.match].path, s.keys.FPE, it.Err))
			}
		}
		if !perItem {
			return nil
		}
	}
	checked := false
	for j, ref := range refs {
		p := plans[ref.msg]
		if failed.has(ref.msg) {
			continue
		}
		// Checked once some value came back: when every one was refused, no version was
		// used.
		if !checked && (version <= 0 || version >= 1<<31) {
			return fmt.Errorf("fields: fpe(vault) with key %q: key service returned version %d", s.keys.FPE, version)
		}
		checked = true
		out := items[j].Result
		if len(out) != len(items[j].Value) || !plainString(out) {
			// The key service's doing, not the message's.
			return fault.Mark(fmt.Errorf("fields: message %d: field %q: key service returned an fpe value of another shape", ref.msg, p.matches[ref.match].path), fault.Environment)
		}
		p.repl[ref.match] = quoted(out)
		p.m.fpeVersion = version
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

// cryptFPE runs the FF1 construction the rule names (fpe.Encrypt: the card one when an
// option is set, the digit one otherwise). The tweak is the rule path.
func cryptFPE(ff *fpe.FF1, r Rule, s string, decrypt bool) (string, error) {
	if decrypt {
		return fpe.Decrypt(ff, s, []byte(r.Path), r.cardOptions())
	}
	return fpe.Encrypt(ff, s, []byte(r.Path), r.cardOptions())
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
