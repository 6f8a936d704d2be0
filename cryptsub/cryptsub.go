// Package cryptsub is the receive side of pubcrypt. A *Subscription wraps a gocloud
// *pubsub.Subscription: Receive authenticates and decrypts each message that crypttopic
// sent, in place, so the returned *pubsub.Message carries the producer's body and metadata
// and its Ack and Nack act on the message the broker delivered.
//
// Data keys are unwrapped through the keyring and kept in a bounded cache, so a stream
// under one data key costs one key-service call.
//
// A Kafka record key that the sender protected (crypttopic.RecordKey, docs/FORMAT.md
// section 3.2) comes back as plaintext in its metadata entry when the subscription URL
// names the same key_name; Info.RecordKey names the entry. The keys of a ReceiveBatch cost
// one key-service call together.
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

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/codec"
	"github.com/pubcrypt/pubcrypt/internal/envelope"
	"github.com/pubcrypt/pubcrypt/internal/wire"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// Reasons a message cannot be decrypted, matched with errors.Is on a *DecryptError; all
// four are of class fault.Message. Key-service failures match the keyring kinds instead
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
	// ErrShredded: the message's subject was forgotten (keyring.Subjects.Forget): the key
	// versions that protected it are destroyed, so it can never be decrypted again.
	// Class Message: acknowledge it (or dead-letter it) and go on.
	ErrShredded = keyring.ErrShredded
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
		id = broker.Position(e.Message)
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

// Subscription receives and decrypts messages from the subscription it wraps; the
// decryption itself is internal/codec's.
type Subscription struct {
	sub   *pubsub.Subscription
	codec *codec.Opener
	log   *slog.Logger
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
	// A keyring without the FieldKeyring capability (a KMS by URL) opens whole bodies and
	// the envelope field mode, which need data keys only; the other field modes need Vault.
	o, err := codec.NewOpener(codec.OpenOptions{Keyring: opts.Keyring, Cache: opts.Cache, AllowPlaintext: opts.AllowPlaintext})
	if err != nil {
		return nil, fmt.Errorf("cryptsub: %w", err)
	}
	return &Subscription{sub: s, codec: o, log: log}, nil
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

// Info describes how a received message was protected: Encrypted (false for a message
// passed through by Options.AllowPlaintext), Fields (JSON fields were protected rather
// than the body), and KeyID and KeyVersion of the key-encryption key that wrapped the
// data key.
type Info = codec.Info

// ReceiveInfo is Receive that also says how the message was protected (which key
// version, for instance, to watch a rotation take effect).
func (s *Subscription) ReceiveInfo(ctx context.Context) (*pubsub.Message, Info, error) {
	m, err := s.sub.Receive(ctx)
	if err != nil {
		return nil, Info{}, err
	}
	restoreRecordKey(m)
	info, err := s.codec.Open(ctx, m)
	if err != nil {
		s.log.WarnContext(ctx, "message not decrypted", "id", broker.Position(m), "err", err)
		return nil, info, &DecryptError{Message: m, Err: err}
	}
	return m, info, nil
}

// BatchLinger is how long ReceiveBatch waits for each further message of a batch; it
// waits BatchMaxLinger at most in all.
const (
	BatchLinger    = broker.Linger
	BatchMaxLinger = broker.MaxLinger
)

// ReceiveBatch waits for the next message as Receive does, then takes up to max-1 more,
// each arriving within BatchLinger of the one before (BatchMaxLinger in all), and
// decrypts them together: the protected fields of all field-level messages cost one
// key-service call per Vault key for the whole batch instead of one per message
// (docs/FIELDS.md); whole-body messages are decrypted as Receive decrypts them. max below
// 1 counts as 1.
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
	first, err := s.sub.Receive(ctx)
	if err != nil {
		return []*pubsub.Message{nil}, []Info{{}}, []error{err}
	}
	msgs := broker.Gather(ctx, s.sub, first, max)
	infos, errs := s.DecryptBatch(ctx, msgs)
	return msgs, infos, errs
}

// DecryptBatch decrypts raw messages in place, together, as ReceiveBatch does: for a
// caller that receives from Unwrap() itself (with a wait of its own for the first
// message, say). errs[i] is nil or a *DecryptError about msgs[i] alone, which is then
// left as it was.
func (s *Subscription) DecryptBatch(ctx context.Context, msgs []*pubsub.Message) ([]Info, []error) {
	for _, m := range msgs {
		restoreRecordKey(m)
	}
	infos, errs := s.codec.OpenBatch(ctx, msgs)
	for i, err := range errs {
		if err != nil {
			s.log.WarnContext(ctx, "message not decrypted", "id", broker.Position(msgs[i]), "err", err)
			errs[i] = &DecryptError{Message: msgs[i], Err: err}
		}
	}
	return infos, errs
}

// Decrypt decrypts a raw message in place, as Receive does: for retrying the Message of a
// *DecryptError whose Class() is fault.Environment (the key service unreachable, the token
// refused, the key missing) on a broker that cannot redeliver it (Kafka has no Nack). On
// error m is left as it was.
func (s *Subscription) Decrypt(ctx context.Context, m *pubsub.Message) (Info, error) {
	restoreRecordKey(m)
	return s.codec.Open(ctx, m)
}

// Shutdown stops receiving and closes the wrapped subscription.
func (s *Subscription) Shutdown(ctx context.Context) error { return s.sub.Shutdown(ctx) }

// As exposes the wrapped driver's types, as pubsub.Subscription.As does.
func (s *Subscription) As(i any) bool { return s.sub.As(i) }

// Unwrap returns the wrapped subscription. Receiving from it bypasses decryption.
func (s *Subscription) Unwrap() *pubsub.Subscription { return s.sub }

// restoreRecordKey puts the Kafka record key of m into the entry that m's protected
// record-key flag names (docs/FORMAT.md section 3.2), when the subscription did not put it
// there itself (no key_name): a consumer then opens what a producer or `pubcrypt encrypt`
// sent with a protected key without being told the entry. The flag and the entry are
// authenticated when m is opened, so a flag that lies only makes m fail to open.
func restoreRecordKey(m *pubsub.Message) {
	if m == nil {
		return
	}
	flag, ok := m.Metadata[wire.RecordKeyFlag]
	if !ok {
		return
	}
	_, entry, err := codec.ParseKeyFlag(flag)
	if err != nil {
		return // malformed: opening says so
	}
	if _, ok := m.Metadata[entry]; ok {
		return
	}
	if key, ok := broker.RecordKey(m); ok {
		m.Metadata[entry] = string(key)
	}
}
