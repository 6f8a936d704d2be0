package crypttopic

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/codec"
	"github.com/pubcrypt/pubcrypt/internal/fields"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// Field-level encryption: instead of the whole body, protect chosen values of a JSON body
// and leave the rest readable (and authenticated). The format is docs/FIELDS.md.
type (
	// FieldPolicy says which JSON values to protect and how: path → mode.
	FieldPolicy = fields.Policy
	// FieldRule protects the values at one path ("name", "address.city", "items[].sku").
	FieldRule = fields.Rule
	// FieldMode is how a field is protected.
	FieldMode = fields.Mode
	// FieldKeys names the Vault transit keys of the field modes.
	FieldKeys = fields.Keys
)

// The field modes.
const (
	// Transit: Vault Transit encryption as a service, randomized, bound to the message and
	// the field's path. All transit fields of a send batch cost one Vault call.
	Transit = fields.Transit
	// Envelope: local AES-256-GCM under the cached data key; no Vault call per message.
	Envelope = fields.Envelope
	// Deterministic: equal values under one rule give equal ciphertexts (joins, lookups,
	// compacted-topic keys), from a Vault key with derived=true, convergent_encryption=true.
	// Leaks equality of values; nothing else.
	Deterministic = fields.Deterministic
	// FPE: format-preserving encryption (NIST FF1) of digit strings such as card numbers,
	// separators and length kept, optionally the first 6 / last 4 digits and a Luhn-valid
	// result. Deterministic; the key is derived inside Vault and versioned.
	FPE = fields.FPE
	// Transform: Vault Enterprise's Transform engine encodes the string with the rule's
	// role ("card_number=transform(payments/card-fpe)"); the role travels in the manifest.
	// Open-source Vault has no Transform engine: sends fail with
	// keyring.ErrTransformNotAvailable; use FPE there.
	Transform = fields.Transform
)

// ProtectKey is the metadata key of a per-message policy: a message whose metadata holds
// ProtectKey: "name=transit,card_number=fpe(bin,luhn)" is protected by that policy
// instead of Options.Fields. The entry itself is not sent.
const ProtectKey = codec.ProtectKey

// DefaultFieldKeys are the key names used when Options.FieldKeys leaves one empty; the
// transit key defaults to the keyring's own key.
var DefaultFieldKeys = FieldKeys{Deterministic: keyring.DefaultDeterministicKey, FPE: keyring.DefaultFPEKey}

// ParseFieldPolicy parses the policy grammar of docs/FIELDS.md section 4: an allow-list
// "name=transit,card_number=fpe(bin,luhn),items[].sku=envelope", or deny by default
// "default=envelope; keep=order_id,items[].sku; **.card_number=fpe(bin,luhn)", where every
// scalar not kept and not named by another rule is protected with the default mode, so a
// field added upstream is protected before the policy names it. Paths may use "*" (any
// member) and "**" (any depth). unmatched=body|refuse|clear says what happens to a JSON
// body that is not an object (default: encrypted whole). Receivers need no policy.
func ParseFieldPolicy(s string) (FieldPolicy, error) { return fields.ParsePolicy(s) }

// FieldPolicyOf reads a policy from the `pubcrypt:"mode,options"` struct tags of v's type.
func FieldPolicyOf(v any) (FieldPolicy, error) { return fields.PolicyOf(reflect.TypeOf(v)) }

// SendValue marshals v to JSON and sends it, protecting the fields its struct tags name
// (`json:"card_number" pubcrypt:"fpe,bin,luhn"`). A type without pubcrypt tags is sent
// under Options.Fields, or with its whole body encrypted. Errors are classified as those
// of Send; a value that does not marshal, or tags that are not a policy, are faults of
// the message.
func (t *Topic) SendValue(ctx context.Context, v any, md map[string]string) error {
	p, err := fields.PolicyOf(reflect.TypeOf(v))
	if err != nil {
		return fmt.Errorf("crypttopic: send value: %w", err)
	}
	body, err := json.Marshal(v)
	if err != nil {
		return fault.Mark(fmt.Errorf("crypttopic: send value: %w", err), fault.Message)
	}
	m := &pubsub.Message{Body: body, Metadata: md}
	if len(p) == 0 {
		return t.Send(ctx, m)
	}
	return t.sendWith(ctx, m, []FieldPolicy{p})
}

// BatchError is the error of SendBatch when some of its messages cannot be sent for a
// fault of their own (class fault.Message: a body that is not JSON under a field policy,
// a value its mode cannot protect such as a card number given as a JSON number, metadata
// the format cannot carry, a value the key service refuses, a message over the broker's
// limits) and no fault of the environment occurred. Nothing of the batch was sent.
//
// Errs has one entry per message given to SendBatch, non-nil exactly for the messages at
// fault, each naming the message's index and why, never its content. A bridge takes
// those out (dead-letters them, skips them and counts them) and sends the others again.
type BatchError struct {
	Errs []error
}

func (e *BatchError) Error() string {
	var first []string
	n := 0
	for _, err := range e.Errs {
		if err == nil {
			continue
		}
		n++
		if len(first) < 3 {
			first = append(first, err.Error())
		}
	}
	msg := fmt.Sprintf("crypttopic: send batch: %d of %d messages cannot be sent, so none was: %s", n, len(e.Errs), strings.Join(first, "; "))
	if n > len(first) {
		msg += fmt.Sprintf("; and %d more", n-len(first))
	}
	return msg
}

// Unwrap returns the errors of the messages at fault, so that errors.Is finds their kinds
// (ErrTooLarge, keyring.ErrValueRefused, ...).
func (e *BatchError) Unwrap() []error {
	var errs []error
	for _, err := range e.Errs {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// FaultClass is fault.Message: only messages are at fault.
func (e *BatchError) FaultClass() fault.Class { return fault.Message }

// SendBatch encrypts msgs together and sends them: the transit and deterministic fields
// of the whole batch go to Vault in one call per key. On kgo:// (Kafka over franz-go) the
// batch is produced in order, so records of one partition (those of one key, for one)
// arrive in the order of msgs. Other drivers get the messages concurrently, so their order
// on the broker within one batch is not kept there; use Send in sequence where order
// matters.
//
// It fails closed for the batch: if any message cannot be protected, none is sent. When
// that is because of faults of single messages and nothing else failed, the error is a
// *BatchError (errors.As) whose Errs names exactly those messages, found across the whole
// batch: take them out, dead-letter or skip them, and send the rest again. A fault of the
// environment (no data key, Vault unreachable or refusing the token, a key missing) is
// returned as it is, class fault.Environment, and no message is blamed: send the same
// batch again later. Once every message is protected, sends run concurrently; the error
// then joins the failures of individual sends (class fault.Environment), and the messages
// whose sends did not fail may have reached the broker.
func (t *Topic) SendBatch(ctx context.Context, msgs []*pubsub.Message) error {
	out, errs, err := t.codec.Seal(ctx, msgs, nil)
	if err != nil {
		return fmt.Errorf("crypttopic: send batch, none sent: %w", err)
	}
	if errs != nil {
		nbad := 0
		for i, e := range errs {
			if e != nil {
				errs[i] = fmt.Errorf("message %d: %w", i, e)
				nbad++
			}
		}
		t.log.WarnContext(ctx, "messages cannot be protected: batch not sent", "messages", len(msgs), "at_fault", nbad)
		return &BatchError{Errs: errs}
	}
	if ok, err := broker.SendInOrder(ctx, t.topic, out); ok {
		if err != nil {
			return brokerFault(fmt.Errorf("crypttopic: send batch: %w", err))
		}
		return nil
	}
	errs = make([]error, len(out))
	var wg sync.WaitGroup
	for i, m := range out {
		wg.Go(func() {
			if err := t.topic.Send(ctx, m); err != nil {
				errs[i] = err
			}
		})
	}
	wg.Wait()
	if se := newSendError(errs); se != nil {
		return brokerFault(fmt.Errorf("crypttopic: send batch: %w", se))
	}
	return nil
}

// sendError is the broker's refusal of messages of a batch. A broker that is down fails
// every message the same way, and an operator reads one line, not one per message (an
// outage log line or the last line of a command used to hold a hundred); errors.Is and
// errors.As still see each message's error.
type sendError struct {
	errs  []error // the messages' errors, nil for those sent
	n     int     // how many are not nil
	first int     // index of the first that is not nil
}

func newSendError(errs []error) *sendError {
	se := &sendError{errs: errs, first: -1}
	for i, err := range errs {
		if err != nil {
			if se.n++; se.first < 0 {
				se.first = i
			}
		}
	}
	if se.n == 0 {
		return nil
	}
	return se
}

func (e *sendError) Error() string {
	head := fmt.Sprintf("%d of %d messages not sent", e.n, len(e.errs))
	first := e.errs[e.first].Error()
	others := 0 // errors that say something else than the first
	for _, err := range e.errs {
		if err != nil && err.Error() != first {
			others++
		}
	}
	if others == 0 {
		return head + ": " + first
	}
	return fmt.Sprintf("%s: message %d: %s; and %d other error(s)", head, e.first, first, others)
}

func (e *sendError) Unwrap() []error {
	out := make([]error, 0, e.n)
	for _, err := range e.errs {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}
