package codec

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/envelope"
	"github.com/pubcrypt/pubcrypt/internal/fields"
	"github.com/pubcrypt/pubcrypt/internal/telemetry"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// ProtectKey is the metadata key of a per-message field policy: a message whose metadata
// holds ProtectKey: "name=transit,card_number=fpe(bin,luhn)" is protected by that policy
// instead of SealOptions.Fields. The entry itself is not sent.
const ProtectKey = "pubcrypt-protect"

// ErrNilMessage is the fault of a nil message: there is nothing to send, ever.
var ErrNilMessage = fault.New(fault.Message, "nil message")

// SealOptions configure a Sealer.
type SealOptions struct {
	// Keyring generates and wraps the data keys. Required.
	Keyring keyring.Keyring
	// Reuse limits how long one data key is used.
	Reuse keyring.ReusePolicy
	// SensitiveMetadata names metadata keys whose values travel inside the ciphertext
	// (whole-body encryption only).
	SensitiveMetadata []string
	// Fields, when not empty, protects these values of a JSON body instead of the whole
	// body; a message's ProtectKey entry overrides it.
	Fields fields.Policy
	// FieldKeys names the keys of the field modes; they must be complete (the caller
	// fills in its defaults).
	FieldKeys fields.Keys
	// FPERefresh is how often the latest FPE key version is looked up.
	FPERefresh time.Duration
	// Limits are the broker's; a sealed message that exceeds them is a fault of the
	// message. The zero value checks nothing.
	Limits broker.Limits
	// Logger receives key-rotation events and errors, never keys or contents.
	Logger *slog.Logger
	// Subjects gives subjects keys of their own, for policies with a subject option; nil
	// means keyring.NewSubjects over Keyring when it is a *keyring.Vault (with Reuse), and
	// no such policy otherwise.
	Subjects fields.SubjectKeys
	// RecordKey names the metadata entry that is the record key and how it is sent
	// (docs/FORMAT.md section 3.2); the zero value: no record key.
	RecordKey RecordKey
}

// Sealer protects messages for sending. It is safe for concurrent use.
type Sealer struct {
	keys      *keyring.DataKeys
	sensitive []string
	policy    fields.Policy
	fields    *fields.Sealer
	limits    broker.Limits
	log       *slog.Logger
	fk        keyring.FieldKeyring
	recordKey RecordKey
}

// NewSealer returns a Sealer. A keyring without the FieldKeyring capability (a KMS by
// URL) protects fields in the envelope mode only, which needs data keys only; a policy
// with another mode is refused here, at start (the error wraps fields.ErrPolicy).
func NewSealer(opts SealOptions) (*Sealer, error) {
	keys, err := keyring.NewDataKeys(opts.Keyring, opts.Reuse)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	fk, _ := opts.Keyring.(keyring.FieldKeyring)
	if err := checkRecordKey(opts.RecordKey, fk, opts.SensitiveMetadata); err != nil {
		return nil, err
	}
	subjects := opts.Subjects
	if v, ok := opts.Keyring.(*keyring.Vault); ok && subjects == nil {
		sk, err := keyring.NewSubjects(v, keyring.SubjectOptions{Reuse: opts.Reuse})
		if err != nil {
			return nil, err
		}
		subjects = sk
	}
	s := &Sealer{
		keys:      keys,
		sensitive: append([]string(nil), opts.SensitiveMetadata...),
		policy:    opts.Fields,
		fields:    fields.NewSealer(fk, keys, opts.FieldKeys, fields.SealerOptions{FPERefresh: opts.FPERefresh, Subjects: subjects}),
		limits:    opts.Limits,
		log:       log,
		fk:        fk,
		recordKey: opts.RecordKey,
	}
	if len(opts.Fields) > 0 {
		if err := s.fields.CheckPolicy(opts.Fields); err != nil {
			if !errors.Is(err, fields.ErrPolicy) {
				err = fmt.Errorf("%w: %w", fields.ErrPolicy, err) // a manifest too long, say
			}
			return nil, err
		}
	}
	return s, nil
}

// Check makes sure a data key can be had now, so that a producer fails when it starts
// rather than at its first message. The key it gets serves the next messages.
func (s *Sealer) Check(ctx context.Context) error {
	_, _, err := s.keys.TakeN(ctx, 1, 0)
	return err
}

// Seal protects msgs for sending, each by its policy: policies[i] when policies is not
// nil (a type's struct tags), else the message's ProtectKey entry, else
// SealOptions.Fields; an empty policy encrypts the whole body. A JSON body whose top-level
// value is not an object is encrypted whole too, or refused (fields.ErrUnmatched), or
// sent readable, as its policy's unmatched option says. The messages themselves
// are not modified; out[i] carries msgs[i]'s BeforeSend and AfterSend.
//
// It is all or nothing: out holds every message sealed and checked against the broker's
// limits; or errs, one entry per message, is non-nil exactly for the messages at fault
// (class fault.Message; the error names no content) and out is nil; or err, a fault of
// the environment (no data key, the key service unreachable or refusing, a key missing),
// blames no message.
func (s *Sealer) Seal(ctx context.Context, msgs []*pubsub.Message, policies []fields.Policy) (out []*pubsub.Message, errs []error, err error) {
	errs = make([]error, len(msgs))
	bad := false
	fail := func(i int, err error) { errs[i], bad = err, true }
	// The record key first: it may come from the plaintext body, and is sealed, protected,
	// in the associated data.
	keyed, err := s.recordKeys(ctx, msgs, fail)
	if err != nil {
		s.log.ErrorContext(ctx, "record keys not protected: messages not sent", "messages", len(msgs), "class", fault.ClassOf(err), "err", err)
		telemetry.Failed(ctx, telemetry.Seal, fault.ClassOf(err), len(msgs))
		return nil, nil, err
	}
	out = make([]*pubsub.Message, len(msgs))
	var fieldIdx []int
	var in []fields.Input
	for i, m := range keyed {
		if errs[i] != nil {
			continue
		}
		if m == nil {
			fail(i, ErrNilMessage)
			continue
		}
		var p fields.Policy
		if policies != nil {
			p = policies[i]
		} else if p, err = s.policyFor(m); err != nil {
			fail(i, err)
			continue
		}
		whole := len(p) == 0
		// A JSON body the policy cannot address (an array, a string, ...) is never sent
		// readable unless the policy says unmatched=clear (docs/FIELDS.md section 4.5).
		if u, ok := unmatched(p, whole, m.Body); ok {
			switch u {
			case fields.UnmatchedBody:
				if _, ok := p.Subject(); ok {
					// Whole-body encryption is under the shared key, which forgetting
					// the subject would not reach.
					fail(i, fmt.Errorf("fields not protected: %w: the body is not a JSON object, and a policy with a subject encrypts only objects (unmatched=refuse or unmatched=clear)", fields.ErrSubject))
					continue
				}
				whole = true
			case fields.UnmatchedRefuse:
				fail(i, fmt.Errorf("fields not protected: %w (unmatched=refuse)", fields.ErrUnmatched))
				continue
			}
		}
		if whole {
			sealed, err := s.sealBody(ctx, m)
			if err != nil {
				if fault.IsMessage(err) {
					fail(i, err)
					continue
				}
				telemetry.Failed(ctx, telemetry.Seal, fault.ClassOf(err), len(msgs))
				return nil, nil, err
			}
			out[i] = sealed
			continue
		}
		fieldIdx = append(fieldIdx, i)
		in = append(in, fields.Input{Body: m.Body, Metadata: withoutProtect(m.Metadata), Policy: p})
	}
	if len(in) > 0 {
		res, err := s.fields.Protect(ctx, in)
		var be *fields.BatchError
		switch {
		case errors.As(err, &be) && len(be.Errs) == len(in):
			for j, i := range fieldIdx {
				if be.Errs[j] != nil {
					fail(i, fmt.Errorf("fields not protected: %w", be.Errs[j]))
				}
			}
		case err != nil:
			s.log.ErrorContext(ctx, "fields not protected: messages not sent", "messages", len(in), "class", fault.ClassOf(err), "err", err)
			telemetry.Failed(ctx, telemetry.Seal, fault.ClassOf(err), len(msgs))
			return nil, nil, fmt.Errorf("protect fields: %w", err)
		default:
			for j, i := range fieldIdx {
				m := keyed[i]
				out[i] = &pubsub.Message{Body: res[j].Body, Metadata: res[j].Metadata, BeforeSend: m.BeforeSend, AfterSend: m.AfterSend}
			}
		}
	}
	for i, m := range out { // all or nothing: check every message before handing any out
		if m == nil {
			continue
		}
		if err := fault.Mark(s.limits.Check(m.Body, m.Metadata), fault.Message); err != nil {
			fail(i, err)
		}
	}
	if bad {
		// Only the messages at fault are counted as failed; the others were not sent
		// either, and are counted when the caller sends them again.
		for _, err := range errs {
			if err != nil {
				telemetry.Failed(ctx, telemetry.Seal, fault.Message, 1)
			}
		}
		return nil, errs, nil
	}
	for i, m := range msgs {
		mode := telemetry.Body
		if fields.IsFields(out[i].Metadata) {
			mode = telemetry.Fields
		}
		telemetry.Sealed(ctx, mode, len(m.Body))
	}
	return out, nil, nil
}

// policyFor returns the field policy of m: its ProtectKey entry, else SealOptions.Fields.
func (s *Sealer) policyFor(m *pubsub.Message) (fields.Policy, error) {
	if tag, ok := m.Metadata[ProtectKey]; ok {
		p, err := fields.ParsePolicy(tag)
		if err != nil {
			return nil, fmt.Errorf("metadata %s: %w", ProtectKey, err)
		}
		return p, nil
	}
	return s.policy, nil
}

// withoutProtect returns md without the ProtectKey entry, which is not sent.
func withoutProtect(md map[string]string) map[string]string {
	if _, ok := md[ProtectKey]; !ok {
		return md
	}
	out := make(map[string]string, len(md))
	for k, v := range md {
		if k != ProtectKey {
			out[k] = v
		}
	}
	return out
}

// sealBody encrypts the whole body of m (docs/FORMAT.md).
func (s *Sealer) sealBody(ctx context.Context, m *pubsub.Message) (*pubsub.Message, error) {
	key, seq, err := s.keys.Take(ctx, len(m.Body))
	if err != nil {
		s.log.ErrorContext(ctx, "no data key: message not sent", "class", fault.ClassOf(err), "err", err)
		return nil, fmt.Errorf("no data key: %w", err)
	}
	if seq == 0 {
		s.log.InfoContext(ctx, "new data key", "key", key.KeyID, "version", key.Version)
	}
	aead, err := key.AEAD()
	if err != nil {
		// A data key that is not one: the keyring's fault.
		return nil, fault.Mark(err, fault.Environment)
	}
	body, md, err := envelope.Seal(envelope.SealInput{
		AEAD:      aead,
		KeyID:     key.KeyID,
		Wrapped:   key.Wrapped,
		Seq:       seq,
		Body:      m.Body,
		Metadata:  withoutProtect(m.Metadata), // an empty per-message policy: the whole body
		Sensitive: s.sensitive,
	})
	if err != nil {
		return nil, err
	}
	return &pubsub.Message{Body: body, Metadata: md, BeforeSend: m.BeforeSend, AfterSend: m.AfterSend}, nil
}

// unmatched is p.Unmatched(body) for a message protected field by field (not whole),
// which alone needs it: the check reads the body.
func unmatched(p fields.Policy, whole bool, body []byte) (fields.Unmatched, bool) {
	if whole {
		return 0, false
	}
	return p.Unmatched(body)
}
