// Package crypttopic is the send side of pubcrypt. A *Topic wraps a gocloud *pubsub.Topic:
// Send encrypts the message body locally with AES-256-GCM under a data key from a
// keyring (HashiCorp Vault Transit, say), puts the wrapped data key and the nonce in two
// metadata entries (the envelope, see docs/FORMAT.md) and sends the result. The broker,
// and anyone who can read its disks, sees only ciphertext.
//
// One data key encrypts many messages until a limit of keyring.ReusePolicy is reached, so
// a stream costs one key-service call per key, not per message; ReusePolicy.PerMessage
// asks for a fresh key for every message instead.
//
// Send fails closed: if no data key can be had or the message cannot be sealed, Send
// returns an error and nothing reaches the broker.
//
// Every error of Send, SendBatch and SendValue has a fault class (package fault). A fault
// of the message (fault.Message: a body that is not JSON under a field policy, a value
// its mode cannot protect, metadata the format cannot carry, a value the key service
// refuses, a message over the broker's limits) never passes: take the message out
// (dead-letter it, skip it) and go on. A fault of the environment (fault.Environment: no
// data key, the key service unreachable or refusing the token, a key missing, the broker
// failing the send) passes once mended: keep the message and send it again later.
package crypttopic

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	neturl "net/url"
	"time"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/codec"
	"github.com/pubcrypt/pubcrypt/internal/fields"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// Options configure a Topic.
type Options struct {
	// Keyring generates and wraps the data keys. Required.
	Keyring keyring.Keyring
	// Reuse limits how long one data key is used; the zero value has safe defaults.
	Reuse keyring.ReusePolicy
	// SensitiveMetadata names metadata keys whose values travel encrypted inside the body
	// instead of in clear (a filename, say). The receiver restores them. Body encryption
	// only: with field-level encryption all metadata stays in clear (authenticated).
	SensitiveMetadata []string
	// Fields, when not empty, protects these values of a JSON body instead of encrypting
	// the whole body; the rest stays readable and is authenticated. A message's ProtectKey
	// metadata entry overrides it per message.
	Fields FieldPolicy
	// FieldKeys names the Vault keys of the field modes; empty names default to
	// DefaultFieldKeys and, for Transit, to the keyring's key.
	FieldKeys FieldKeys
	// FPERefresh is how often the latest FPE key version is looked up, so a rotation is
	// picked up without a restart; 0 means one minute.
	FPERefresh time.Duration
	// Logger receives key-rotation events and errors; nil discards them. It never sees
	// keys, tokens or message contents.
	Logger *slog.Logger
	// Subjects gives each subject of a policy with a subject option ("subject=customer_id")
	// keys of its own, so that keyring.Subjects.Forget can erase it. Nil means
	// keyring.NewSubjects over Keyring when it is a *keyring.Vault, with Reuse; with
	// another keyring such a policy is refused.
	Subjects SubjectKeys
	// Broker is the gocloud URL scheme of the broker the topic sends to ("kafka",
	// "gcppubsub", "awssqs", ...). Send refuses, before anything reaches the broker, an
	// encrypted message larger than that broker accepts (body, number and size of
	// metadata entries), with an error that matches ErrTooLarge. Open sets it from the
	// URL when empty; with New, empty means no check.
	Broker string
	// RecordKey names the metadata entry that is the Kafka record key and how it travels:
	// protected deterministically unless Mode says RecordKeyClear. Open fills it from a
	// kgo:// or kafka:// URL's key_name, key_field and record_key; New reads a kgo://
	// topic's key_name from the driver, but not a kafka:// one's: set it (or use
	// RecordKeyFromURL) whenever such a topic was opened with key_name.
	RecordKey RecordKey
}

// ErrTooLarge is matched (errors.Is) by the error of a send refused because the encrypted
// message exceeds a limit of Options.Broker; the message was not sent. Such an error is
// of class fault.Message.
var ErrTooLarge = broker.ErrTooLarge

// ErrFieldPolicy is matched (errors.Is) by the error of a field policy that cannot be
// used: Options.Fields in New or Open (which then names Options.Fields), a message's
// ProtectKey entry or a type's struct tags at send (a fault of that message).
var ErrFieldPolicy = fields.ErrPolicy

// SubjectKeys gives each subject keys of its own; keyring.Subjects implements it.
type SubjectKeys = fields.SubjectKeys

// ErrNoSubject is matched (errors.Is) by the error of a send refused because its field
// policy names a subject ("subject=customer_id") that the message does not have, or
// because its body is not a JSON object. The error is of class fault.Message.
var ErrNoSubject = fields.ErrSubject

// ErrUnmatchedBody is matched (errors.Is) by the error of a send refused because its JSON
// body is not an object (an array, a string, ...), so that the field policy addresses
// nothing in it, and the policy says unmatched=refuse. Such a body is otherwise encrypted
// whole (the default, unmatched=body) or, only if the policy says unmatched=clear, sent
// readable and authenticated. The error is of class fault.Message.
var ErrUnmatchedBody = fields.ErrUnmatched

// Topic encrypts messages and sends them on the topic it wraps; the protection itself is
// internal/codec's.
type Topic struct {
	topic *pubsub.Topic
	codec *codec.Sealer
	log   *slog.Logger
}

// New wraps t. The caller keeps ownership of t only through the returned Topic: shut it
// down with Topic.Shutdown.
func New(t *pubsub.Topic, opts Options) (*Topic, error) {
	if t == nil {
		return nil, errors.New("crypttopic: nil topic")
	}
	if opts.Keyring == nil {
		return nil, errors.New("crypttopic: Options.Keyring is required")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	fkeys := opts.FieldKeys
	if fkeys.Transit == "" {
		if named, ok := opts.Keyring.(interface{ KeyID() string }); ok {
			fkeys.Transit = named.KeyID()
		}
	}
	if fkeys.Deterministic == "" {
		fkeys.Deterministic = DefaultFieldKeys.Deterministic
	}
	if fkeys.FPE == "" {
		fkeys.FPE = DefaultFieldKeys.FPE
	}
	// A kgo:// topic opened with key_name sends that entry as the record key: protect it
	// unless told otherwise, also when the URL did not pass through Open. Its key_field
	// would read the sealed body, which is refused.
	if name, field, ok := broker.KeyNaming(t); ok {
		if field != "" {
			return nil, errors.New("crypttopic: the kgo:// topic takes its record key from key_field, which would read the sealed body; open it with key_name=ENTRY and set Options.RecordKey.Field (Open does that for a URL with key_field)")
		}
		if opts.RecordKey.Entry == "" {
			opts.RecordKey.Entry = name
		}
	}
	rk, err := opts.RecordKey.codec(fkeys.Deterministic)
	if err != nil {
		return nil, fmt.Errorf("crypttopic: %w", err)
	}
	var limits broker.Limits
	if opts.Broker != "" {
		limits = broker.LimitsFor(opts.Broker)
	}
	// A keyring without the FieldKeyring capability (a KMS by URL) protects fields in the
	// envelope mode, which needs data keys only; the codec refuses the other modes here.
	s, err := codec.NewSealer(codec.SealOptions{
		Keyring:           opts.Keyring,
		Reuse:             opts.Reuse,
		SensitiveMetadata: opts.SensitiveMetadata,
		Fields:            opts.Fields,
		FieldKeys:         fkeys,
		FPERefresh:        opts.FPERefresh,
		Limits:            limits,
		Logger:            log,
		Subjects:          opts.Subjects,
		RecordKey:         rk,
	})
	if errors.Is(err, ErrFieldPolicy) {
		return nil, fmt.Errorf("crypttopic: Options.Fields: %w", err)
	}
	if err != nil {
		return nil, fmt.Errorf("crypttopic: %w", err)
	}
	return &Topic{topic: t, codec: s, log: log}, nil
}

// Open opens the topic at url (kafka://purchases, mem://purchases, or any scheme
// registered with gocloud) and wraps it. Kafka settings come from the environment; see
// the README.
func Open(ctx context.Context, url string, opts Options) (*Topic, error) {
	driverURL, rk, err := RecordKeyFromURL(url)
	if err != nil {
		return nil, err
	}
	if opts.RecordKey, err = opts.RecordKey.withURL(rk); err != nil {
		return nil, err
	}
	t, err := broker.OpenTopic(ctx, driverURL)
	if err != nil {
		return nil, fmt.Errorf("crypttopic: %w", err)
	}
	if opts.Broker == "" {
		if u, err := neturl.Parse(url); err == nil {
			opts.Broker = u.Scheme
		}
	}
	ct, err := New(t, opts)
	if err != nil {
		_ = t.Shutdown(ctx)
		return nil, err
	}
	return ct, nil
}

// Send encrypts m and sends it: its JSON fields if a field policy applies (Options.Fields
// or the message's ProtectKey entry), else its whole body. m itself is not modified; its
// BeforeSend and AfterSend hooks are carried over. On any error before the broker is
// reached, nothing is sent. The error's class (fault.ClassOf) says whether m itself is at
// fault (fault.Message) or the environment (fault.Environment); see the package comment.
func (t *Topic) Send(ctx context.Context, m *pubsub.Message) error {
	return t.sendWith(ctx, m, nil)
}

// sendWith seals m, under policies[0] if policies is not nil, and sends it.
func (t *Topic) sendWith(ctx context.Context, m *pubsub.Message, policies []FieldPolicy) error {
	out, errs, err := t.codec.Seal(ctx, []*pubsub.Message{m}, policies)
	if err == nil && errs != nil {
		err = errs[0]
	}
	if err != nil {
		return fmt.Errorf("crypttopic: send: message not sent: %w", err)
	}
	if err := t.topic.Send(ctx, out[0]); err != nil {
		return brokerFault(err)
	}
	return nil
}

// brokerFault classifies a failure of the wrapped topic's Send: the environment's (the
// broker is down, the topic missing, the credentials refused). The class of an error the
// driver classified itself is kept; gocloud's drivers classify none, and a message too
// large for the broker is refused by the codec before it gets there.
func brokerFault(err error) error {
	var c fault.Classifier
	if errors.As(err, &c) {
		return err
	}
	return fault.Mark(err, fault.Environment)
}

// Check makes sure a data key can be had now — the key service reachable, the token
// allowed, the key present — so that a producer fails when it starts rather than at its
// first message. It costs one key-service call unless a key is cached, and the key it
// gets serves the next messages.
func (t *Topic) Check(ctx context.Context) error {
	if err := t.codec.Check(ctx); err != nil {
		return fmt.Errorf("crypttopic: no data key: %w", err)
	}
	return nil
}

// Shutdown flushes pending sends and closes the wrapped topic.
func (t *Topic) Shutdown(ctx context.Context) error { return t.topic.Shutdown(ctx) }

// As exposes the wrapped driver's types, as pubsub.Topic.As does.
func (t *Topic) As(i any) bool { return t.topic.As(i) }

// Unwrap returns the wrapped topic. Sending on it bypasses encryption.
func (t *Topic) Unwrap() *pubsub.Topic { return t.topic }
