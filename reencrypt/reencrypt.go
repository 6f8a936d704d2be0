// Package reencrypt protects the messages of a retained topic again under the latest
// versions of their keys, so that an operator can then retire the old versions (Vault
// Transit's min_decryption_version) without losing what the topic holds.
//
// Each message is received and decrypted (cryptsub), and sent to another topic
// (crypttopic) protected the way it was: a whole-body message whole-body, under a fresh
// data key from the key-encryption key's latest version; a field-level message under the
// field policy its manifest records (the rules that selected its values, docs/FIELDS.md
// section 6), so the same values are protected in the same modes, transit, deterministic
// and FPE values under the latest versions of the destination's field keys.
//
// Why not Vault's rewrap alone: the envelope's associated data binds the wrapped data key
// (docs/FORMAT.md section 8), so a rewrapped key needs the body sealed again, and a data
// key must never seal more messages after it left its sender (section 11.1): a fresh data
// key is the only correct way. The plaintext exists only in the re-encrypting process's
// memory, as in any consumer.
//
// Delivery is at least once: a source message is acknowledged only after its new copy
// was accepted by the broker, so a run that stops is run again and sends again at most
// the batch it was sending. pubcrypt's CLI runs it as `pubcrypt reencrypt`.
package reencrypt

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/fields"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// ErrSensitive is the fault of a message whose metadata travelled inside its ciphertext
// (crypttopic.Options.SensitiveMetadata) under a name the destination would send in clear:
// sending it again would disclose it. Name it in the destination topic's SensitiveMetadata
// and in Options.Sensitive.
var ErrSensitive = fault.New(fault.Message, "sensitive metadata the destination would send in clear")

// Message returns the message to send again for m, which was received and decrypted by
// cryptsub with info: m's body and metadata (copied), with the field policy of a
// field-level message as its per-message policy (crypttopic.ProtectKey). Send it on a
// crypttopic.Topic opened without Fields, so that a whole-body message stays whole-body.
// sensitive lists the metadata keys the destination topic protects
// (crypttopic.Options.SensitiveMetadata).
func Message(m *pubsub.Message, info cryptsub.Info, sensitive []string) (*pubsub.Message, error) {
	for _, k := range info.Sensitive {
		if !slices.Contains(sensitive, k) {
			return nil, fmt.Errorf("message %s: metadata %q: %w", broker.Position(m), k, ErrSensitive)
		}
	}
	md := maps.Clone(m.Metadata)
	if info.Fields {
		p, err := info.FieldPolicy()
		if err != nil {
			return nil, fmt.Errorf("message %s: field policy of its manifest: %w", broker.Position(m), err)
		}
		if md == nil {
			md = map[string]string{}
		}
		text := p.String()
		if keyring.IsSubjectKey(info.KeyID) {
			// A subject's message stays under its subject's key (its one live version:
			// only Forget rotates it), so that forgetting the subject erases the copy too.
			text = "subject=" + fields.SubjectKeyOption + info.KeyID + ";" + text
		}
		md[crypttopic.ProtectKey] = text
	} else if _, ok := md[crypttopic.ProtectKey]; ok {
		// A decrypted whole-body message cannot hold our reserved key; refuse rather than
		// let it choose how it is protected.
		return nil, fault.Mark(fmt.Errorf("message %s: decrypted metadata holds %s", broker.Position(m), crypttopic.ProtectKey), fault.Message)
	}
	return &pubsub.Message{Body: m.Body, Metadata: md}, nil
}

// Options configure Copy.
type Options struct {
	// Batch is how many messages are decrypted and sent together; default 100.
	Batch int
	// Idle ends Copy when no message arrives for this long: the end of a retained topic.
	// Default 10 s.
	Idle time.Duration
	// Max ends Copy after this many messages; 0: no limit.
	Max int
	// Sensitive lists the metadata keys the destination protects (as Message's).
	Sensitive []string
}

// Stats count what Copy did.
type Stats struct {
	// Copied messages were sent again and then acknowledged at the source.
	Copied int
	// ByVersion counts the copied messages by the version of the key-encryption key that
	// had wrapped their data key (0: unknown).
	ByVersion map[int]int
}

// Copy re-protects messages from src onto dst until Options.Idle passes without a message,
// Options.Max messages were copied or ctx ends. A message that cannot be decrypted or sent
// ends Copy with its error and is not acknowledged (nor are the others of its batch):
// class fault.Environment (Vault down, a token refused) means run Copy again later;
// fault.Message (tampered, a key version already retired) needs a decision about that
// message. Stats count what was copied before.
func Copy(ctx context.Context, src *cryptsub.Subscription, dst *crypttopic.Topic, opts Options) (Stats, error) {
	batch, idle := opts.Batch, opts.Idle
	if batch <= 0 {
		batch = 100
	}
	if idle <= 0 {
		idle = 10 * time.Second
	}
	st := Stats{ByVersion: map[int]int{}}
	for opts.Max <= 0 || st.Copied < opts.Max {
		n := batch
		if opts.Max > 0 {
			n = min(n, opts.Max-st.Copied)
		}
		msgs, err := receive(ctx, src.Unwrap(), n, idle)
		if err != nil || len(msgs) == 0 {
			return st, err // none: idle, the topic is read to its end
		}
		infos, errs := src.DecryptBatch(ctx, msgs)
		out := make([]*pubsub.Message, len(msgs))
		var failed error
		for i, m := range msgs {
			if errs[i] == nil {
				out[i], errs[i] = Message(m, infos[i], opts.Sensitive)
			}
			if errs[i] != nil && failed == nil {
				failed = errs[i]
			}
		}
		if failed == nil {
			failed = dst.SendBatch(ctx, out)
		}
		if failed != nil {
			for _, m := range msgs {
				if m.Nackable() {
					m.Nack() // Kafka cannot: the group's offset stays, the next run reads them again
				}
			}
			return st, failed
		}
		for i, m := range msgs {
			m.Ack()
			st.Copied++
			st.ByVersion[infos[i].KeyVersion]++
		}
	}
	return st, nil
}

// receive waits up to idle for a first message, then gathers up to n-1 more as
// cryptsub.ReceiveBatch does (broker.Gather). None and no error: idle.
func receive(ctx context.Context, sub *pubsub.Subscription, n int, idle time.Duration) ([]*pubsub.Message, error) {
	rctx, cancel := context.WithTimeout(ctx, idle)
	first, err := sub.Receive(rctx)
	cancel()
	if err != nil {
		if ctx.Err() == nil && rctx.Err() != nil {
			return nil, nil
		}
		return nil, err
	}
	return broker.Gather(ctx, sub, first, n), nil
}
