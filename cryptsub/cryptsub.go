// Package cryptsub is the receive side of pubcrypt. A *Subscription wraps a gocloud
// *pubsub.Subscription: Receive authenticates and decrypts each message that crypttopic
// sent, in place, so the returned *pubsub.Message carries the producer's body and metadata
// and its Ack and Nack act on the message the broker delivered.
//
// Data keys are unwrapped through the keyring and kept in a bounded cache, so a stream
// under one data key costs one key-service call.
//
// A message that cannot be decrypted is returned as a *DecryptError that carries the raw
// message, and the subscription is not affected: call Receive again for the next one.
// What to do with the message depends on DecryptError.Class. A fault of the message
// (fault.Message: tampered with, malformed, without an envelope, under a retired key
// version) never passes: ack it, dead-letter it, or stop. A fault of the environment
// (fault.Environment: Vault unreachable, the token expired, revoked or refused, the key
// missing) passes once the environment is mended: never ack such a message; nack it, or
// where the broker cannot redeliver (Kafka), keep it and Decrypt it again later.
package cryptsub

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
	"github.com/pubcrypt/pubcrypt/keyring"
)

// Reasons a message cannot be decrypted, matched with errors.Is on a *DecryptError; all
// three are of class fault.Message. Key-service failures match the keyring kinds instead
// (keyring.ErrPermissionDenied, keyring.ErrKeyNotFound, keyring.ErrUnavailable: class
// Environment; keyring.ErrVersionTooOld, keyring.ErrInvalidWrappedKey, keyring.ErrDecrypt:
// class Message).
var (
	// ErrNoEnvelope: the message carries no pubcrypt envelope (it was not encrypted).
	ErrNoEnvelope = envelope.ErrNoEnvelope
	// ErrMalformed: the envelope is present but not valid.
	ErrMalformed = envelope.ErrMalformed
	// ErrTampered: authentication failed; body, envelope or metadata was changed, or the
	// data key is not the one the message was sealed with.
	ErrTampered = envelope.ErrAuth
)

// DecryptError reports a message that Receive could not decrypt.
type DecryptError struct {
	// Message is the message as the broker delivered it (ciphertext body, raw metadata).
	// Ack it only if Class is fault.Message; the subscription keeps working either way.
	Message *pubsub.Message
	// Err says why; match it with errors.Is against the Err* values of this package and
	// of package keyring.
	Err error
}

// Class is whose fault the failure is (fault.ClassOf of Err). fault.Message: the message
// itself will never decrypt (tampered, malformed, no envelope, a key version below
// min_decryption_version); it may be acked, dead-lettered or skipped. fault.Environment:
// the key service is unreachable or slow, the token is expired, revoked or lacks the
// policy, or the key is missing; the same message decrypts once that is mended, so it must
// not be acked. An error nobody classified is Environment.
func (e *DecryptError) Class() fault.Class { return fault.ClassOf(e.Err) }

// FaultClass implements fault.Classifier, so that fault.ClassOf answers for a
// *DecryptError, wrapped or not.
func (e *DecryptError) FaultClass() fault.Class { return e.Class() }

func (e *DecryptError) Error() string {
	id := ""
	if e.Message != nil {
		id = e.Message.LoggableID
	}
	if id == "" {
		id = "(no id)"
	}
	return fmt.Sprintf("cryptsub: message %s: cannot decrypt: %v", id, e.Err)
}

func (e *DecryptError) Unwrap() error { return e.Err }

// Retryable reports whether the failure may pass if the same message is tried again later:
// Class() == fault.Environment. That is the key service unreachable, but also permission
// denied (a token expired or revoked) and a key not found: the message must then be
// retried later (nacked, or kept and passed to Decrypt) and never acked. Not retryable
// are the faults of the message: tampering, no envelope, a malformed envelope, a retired
// key version.
func (e *DecryptError) Retryable() bool { return e.Class() == fault.Environment }

// Options configure a Subscription.
type Options struct {
	// Keyring unwraps data keys. Required.
	Keyring keyring.Keyring
	// Cache bounds the cache of unwrapped data keys; the zero value has sensible defaults.
	Cache keyring.CacheOptions
	// AllowPlaintext delivers messages that carry no envelope as they are, instead of as a
	// *DecryptError wrapping ErrNoEnvelope. For migrating a topic to encryption; a message
	// whose envelope is present but invalid is still an error.
	AllowPlaintext bool
	// Logger receives decryption failures (message ID and reason only); nil discards them.
	Logger *slog.Logger
}

// Subscription receives and decrypts messages from the subscription it wraps.
type Subscription struct {
	sub            *pubsub.Subscription
	keys           *keyring.UnwrapCache
	fields         *fields.Opener // nil if the keyring cannot do field-level encryption
	allowPlaintext bool
	log            *slog.Logger
}

// New wraps s.
func New(s *pubsub.Subscription, opts Options) (*Subscription, error) {
	if s == nil {
		return nil, errors.New("cryptsub: nil subscription")
	}
	if opts.Keyring == nil {
		return nil, errors.New("cryptsub: Options.Keyring is required")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cs := &Subscription{
		sub:            s,
		keys:           keyring.NewUnwrapCache(opts.Keyring, opts.Cache),
		allowPlaintext: opts.AllowPlaintext,
		log:            log,
	}
	// A keyring without the FieldKeyring capability (a KMS by URL) opens the envelope
	// field mode, which needs data keys only; fields of the other modes need Vault.
	fk, _ := opts.Keyring.(keyring.FieldKeyring)
	cs.fields = fields.NewOpener(fk, cs.keys)
	return cs, nil
}

// Open opens the subscription at url (kafka://group?topic=purchases_encrypted,
// mem://purchases, ...) and wraps it.
func Open(ctx context.Context, url string, opts Options) (*Subscription, error) {
	s, err := broker.OpenSubscription(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("cryptsub: %w", err)
	}
	cs, err := New(s, opts)
	if err != nil {
		_ = s.Shutdown(ctx)
		return nil, err
	}
	return cs, nil
}

// Receive returns the next message, decrypted. An error that is a *DecryptError concerns
// one message only; any other error comes from the subscription itself, as from
// pubsub.Subscription.Receive.
func (s *Subscription) Receive(ctx context.Context) (*pubsub.Message, error) {
	m, _, err := s.ReceiveInfo(ctx)
	return m, err
}

// Info describes how a received message was protected.
type Info struct {
	// Encrypted is false for a message passed through by Options.AllowPlaintext.
	Encrypted bool
	// Fields is true for a message whose JSON fields were protected rather than its body.
	Fields bool
	// KeyID and KeyVersion name the key-encryption key that wrapped the data key.
	KeyID      string
	KeyVersion int
}

// ReceiveInfo is Receive that also says how the message was protected (which key
// version, for instance, to watch a rotation take effect).
func (s *Subscription) ReceiveInfo(ctx context.Context) (*pubsub.Message, Info, error) {
	m, err := s.sub.Receive(ctx)
	if err != nil {
		return nil, Info{}, err
	}
	info, err := s.open(ctx, m)
	if err != nil {
		s.log.WarnContext(ctx, "message not decrypted", "id", m.LoggableID, "err", err)
		return nil, info, &DecryptError{Message: m, Err: err}
	}
	return m, info, nil
}

// BatchLinger is how long ReceiveBatch waits, after the first message, for more messages
// to fill the batch.
const BatchLinger = 10 * time.Millisecond

// ReceiveBatch waits for the next message as Receive does, then takes up to max-1 more
// that arrive within BatchLinger, and decrypts them together: the protected fields of all
// field-level messages cost one key-service call per Vault key for the whole batch
// instead of one per message (docs/FIELDS.md); whole-body messages are decrypted as
// Receive decrypts them. max below 1 counts as 1.
//
// The three slices always have the same length, at least 1. For each i, errs[i] is nil,
// and msgs[i] the decrypted message with infos[i] saying how it was protected; or errs[i]
// is a *DecryptError about that message alone, and msgs[i] is the raw message as
// delivered (the DecryptError's Message). One message failing never fails the others.
//
// If the subscription itself fails (or ctx ends) before a first message arrives,
// ReceiveBatch returns one entry: a nil message, a zero Info and that error, which is
// not a *DecryptError, as from pubsub.Subscription.Receive. A subscription error while
// the batch is being filled only ends the batch; the next call reports it.
func (s *Subscription) ReceiveBatch(ctx context.Context, max int) ([]*pubsub.Message, []Info, []error) {
	if max < 1 {
		max = 1
	}
	first, err := s.sub.Receive(ctx)
	if err != nil {
		return []*pubsub.Message{nil}, []Info{{}}, []error{err}
	}
	msgs := []*pubsub.Message{first}
	if max > 1 {
		lctx, cancel := context.WithTimeout(ctx, BatchLinger)
		for len(msgs) < max {
			m, err := s.sub.Receive(lctx)
			if err != nil {
				break
			}
			msgs = append(msgs, m)
		}
		cancel()
	}

	infos := make([]Info, len(msgs))
	errs := make([]error, len(msgs))
	var batch []fields.Received
	var refs []int
	var envs []*envelope.Envelope // of the field-level messages, for their key versions
	// Whole-body messages are opened one by one. Once the key service has failed for one
	// of them (a fault of the environment: Vault down, silent, refusing the token), the
	// others of the batch are opened only under keys already cached: asking for each
	// again would cost a retry or a whole timeout per message, up to a hundred of them,
	// before the caller even learns of the outage. They get the same fault, never acked.
	var outage error
	for i, m := range msgs {
		if fields.IsFields(m.Metadata) && s.fields != nil {
			info, env := fieldsInfo(m)
			infos[i] = info
			batch = append(batch, fields.Received{Body: m.Body, Metadata: m.Metadata})
			refs = append(refs, i)
			envs = append(envs, env)
			continue
		}
		if outage != nil {
			infos[i], errs[i] = s.openCached(m, outage)
			continue
		}
		infos[i], errs[i] = s.open(ctx, m)
		if errs[i] != nil && fault.ClassOf(errs[i]) == fault.Environment {
			outage = errs[i]
		}
	}
	if len(batch) > 0 {
		for j, r := range s.fields.OpenBatch(ctx, batch) {
			i := refs[j]
			infos[i].KeyVersion = s.keyVersion(envs[j])
			if r.Err != nil {
				errs[i] = r.Err
				continue
			}
			msgs[i].Body, msgs[i].Metadata = r.Body, r.Metadata
		}
	}
	for i, err := range errs {
		if err != nil {
			s.log.WarnContext(ctx, "message not decrypted", "id", msgs[i].LoggableID, "err", err)
			errs[i] = &DecryptError{Message: msgs[i], Err: err}
		}
	}
	return msgs, infos, errs
}

// Decrypt decrypts a raw message in place, as Receive does: for retrying the Message of a
// *DecryptError whose Class() is fault.Environment (the key service unreachable, the token
// refused, the key missing) on a broker that cannot redeliver it (Kafka has no Nack). On
// error m is left as it was.
func (s *Subscription) Decrypt(ctx context.Context, m *pubsub.Message) (Info, error) {
	return s.open(ctx, m)
}

// open decrypts m in place; on error m is left exactly as received.
func (s *Subscription) open(ctx context.Context, m *pubsub.Message) (Info, error) {
	if fields.IsFields(m.Metadata) {
		return s.openFields(ctx, m)
	}
	return s.openBody(m, func(keyID, wrapped string) (*keyring.DataKey, error) {
		return s.keys.Get(ctx, keyID, wrapped)
	})
}

// openCached opens a whole-body message if its data key is cached, and otherwise
// returns outage, the key service's fault met by an earlier message, without asking it.
func (s *Subscription) openCached(m *pubsub.Message, outage error) (Info, error) {
	return s.openBody(m, func(keyID, wrapped string) (*keyring.DataKey, error) {
		if k := s.keys.Cached(keyID, wrapped); k != nil {
			return k, nil
		}
		return nil, outage
	})
}

// openBody decrypts a whole-body message in place under the data key dataKey returns.
func (s *Subscription) openBody(m *pubsub.Message, dataKey func(keyID, wrapped string) (*keyring.DataKey, error)) (Info, error) {
	env, err := envelope.Parse(m.Metadata)
	if err != nil {
		if s.allowPlaintext && errors.Is(err, envelope.ErrNoEnvelope) {
			return Info{}, nil
		}
		return Info{}, err
	}
	info := Info{Encrypted: true, KeyID: env.KeyID}
	key, err := dataKey(env.KeyID, env.Wrapped)
	if err != nil {
		return info, err
	}
	info.KeyVersion = key.Version
	aead, err := key.AEAD()
	if err != nil {
		return info, err
	}
	body, md, err := env.Open(aead, m.Body, m.Metadata)
	if err != nil {
		return info, err
	}
	m.Body, m.Metadata = body, md
	return info, nil
}

// openFields restores the protected fields of a field-level message (docs/FIELDS.md).
func (s *Subscription) openFields(ctx context.Context, m *pubsub.Message) (Info, error) {
	info, env := fieldsInfo(m)
	if s.fields == nil {
		return info, errors.New("message has protected fields, but the keyring cannot do field-level encryption (keyring.Vault can)")
	}
	body, md, err := s.fields.Open(ctx, m.Body, m.Metadata)
	info.KeyVersion = s.keyVersion(env)
	if err != nil {
		return info, err
	}
	m.Body, m.Metadata = body, md
	return info, nil
}

// fieldsInfo describes a field-level message from its envelope entries, before it is
// opened, and returns them (nil if they do not parse) for keyVersion once it has been.
func fieldsInfo(m *pubsub.Message) (Info, *envelope.Envelope) {
	info := Info{Encrypted: true, Fields: true, KeyID: m.Metadata[envelope.HeaderKey]}
	env, err := envelope.Parse(withoutManifest(m.Metadata))
	if err != nil {
		return info, nil
	}
	info.KeyID = env.KeyID
	return info, env
}

// keyVersion is the version of the key-encryption key that wrapped env's data key, as the
// keyring reported it when it unwrapped the key. The wrapped key is the key service's own
// format, which only the keyring reads; the field opener unwraps through s.keys, so a key
// it unwrapped is in that cache, with its DataKey.Version. 0 (unknown, as for a whole-body
// message) if env did not parse, if the data key was not unwrapped (the message failed
// before, or the key service refused it) or if it has left the cache since (a batch with
// more data keys than the cache holds).
func (s *Subscription) keyVersion(env *envelope.Envelope) int {
	if env == nil {
		return 0
	}
	if k := s.keys.Cached(env.KeyID, env.Wrapped); k != nil {
		return k.Version
	}
	return 0
}

// withoutManifest returns md without the field manifest, to read the envelope entries.
func withoutManifest(md map[string]string) map[string]string {
	out := make(map[string]string, len(md))
	for k, v := range md {
		if k != fields.ManifestKey {
			out[k] = v
		}
	}
	return out
}

// Shutdown stops receiving and closes the wrapped subscription.
func (s *Subscription) Shutdown(ctx context.Context) error { return s.sub.Shutdown(ctx) }

// As exposes the wrapped driver's types, as pubsub.Subscription.As does.
func (s *Subscription) As(i any) bool { return s.sub.As(i) }

// Unwrap returns the wrapped subscription. Receiving from it bypasses decryption.
func (s *Subscription) Unwrap() *pubsub.Subscription { return s.sub }
