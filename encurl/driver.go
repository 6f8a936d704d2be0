package encurl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gocloud.dev/gcerrors"
	"gocloud.dev/pubsub"
	"gocloud.dev/pubsub/batcher"
	"gocloud.dev/pubsub/driver"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/keyring"
)

const (
	// firstWait is how long ReceiveBatch waits for a first message (the driver contract
	// asks for about a second at most); nextWait how long for each further one, so a
	// batch takes what the inner subscription has already fetched.
	firstWait = time.Second
	nextWait  = 5 * time.Millisecond
	// closeTimeout bounds flushing the inner topic or subscription on Close.
	closeTimeout = 30 * time.Second
	// receiveBatch is the most messages the pump decrypts together, as the CLI's consume
	// does by default.
	receiveBatch = 100
)

// topic is a driver.Topic that encrypts with a crypttopic.Topic.
type topic struct{ ct *crypttopic.Topic }

// sendBatching lets crypttopic.SendBatch make one Vault call for the transit fields of
// many concurrent Sends.
var sendBatching = &batcher.Options{MaxHandlers: 4, MaxBatchSize: 100}

func newTopic(ct *crypttopic.Topic) *pubsub.Topic {
	return pubsub.NewTopic(&topic{ct: ct}, sendBatching)
}

// SendBatch sends the messages of independent Sends that gocloud's batcher gathered. A
// message that cannot be protected must not fail the others, which were not sent with it
// by choice: when crypttopic names messages at fault (a *crypttopic.BatchError), the
// others are sent on their own, and the error, of class fault.Message, reaches every
// Send of the batch (the driver interface has one error per batch), saying how many
// were sent.
func (t *topic) SendBatch(ctx context.Context, dms []*driver.Message) error {
	msgs := make([]*pubsub.Message, len(dms))
	for i, dm := range dms {
		msgs[i] = &pubsub.Message{Body: dm.Body, Metadata: dm.Metadata, BeforeSend: dm.BeforeSend, AfterSend: dm.AfterSend}
	}
	err := t.ct.SendBatch(ctx, msgs)
	var be *crypttopic.BatchError
	if !errors.As(err, &be) || len(be.Errs) != len(msgs) {
		return err
	}
	var rest []*pubsub.Message
	for i, m := range msgs {
		if be.Errs[i] == nil {
			rest = append(rest, m)
		}
	}
	if len(rest) == 0 {
		return err
	}
	if rerr := t.ct.SendBatch(ctx, rest); rerr != nil {
		// Not sent either: the error has rerr's class. Joined as it is, fault.ClassOf
		// would answer the first call's Message, and a caller that takes message faults
		// out would drop messages that pass once the broker or Vault is back.
		return fault.Mark(errors.Join(err, rerr), fault.ClassOf(rerr))
	}
	return fmt.Errorf("encurl: %d of the %d messages of this send batch were sent; the others were not: %w", len(rest), len(msgs), err)
}

// IsRetryable is false: the inner topic already retried, and crypttopic fails closed.
func (t *topic) IsRetryable(error) bool                 { return false }
func (t *topic) As(i any) bool                          { return t.ct.As(i) }
func (t *topic) ErrorAs(err error, i any) bool          { return t.ct.Unwrap().ErrorAs(err, i) }
func (t *topic) ErrorCode(err error) gcerrors.ErrorCode { return errorCode(err) }
func (t *topic) Close() error                           { return shutdown(t.ct.Shutdown) }
func shutdown(f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	return f(ctx)
}

// errorCode maps key-service failures to gocloud codes, and a fault of the message to
// InvalidArgument; errors of the inner driver keep theirs.
func errorCode(err error) gcerrors.ErrorCode {
	switch {
	case errors.Is(err, keyring.ErrPermissionDenied):
		return gcerrors.PermissionDenied
	case errors.Is(err, keyring.ErrKeyNotFound):
		return gcerrors.NotFound
	case errors.Is(err, context.Canceled):
		return gcerrors.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return gcerrors.DeadlineExceeded
	case fault.IsMessage(err):
		return gcerrors.InvalidArgument
	}
	return gcerrors.Code(err)
}

// Counts say what an enc+ subscription did with messages it could not decrypt.
type Counts struct {
	DeadLettered int64 // a fault of the message: sent to the dead-letter topic and acked
	Dropped      int64 // a fault of the message: acked and logged (no dead-letter topic)
	Nacked       int64 // a fault of the environment: nacked for redelivery
	Held         int64 // a fault of the environment, no Nack (Kafka): kept and decrypted again
}

// SubscriptionCounts returns the counts of s, and false if s was not opened by this
// package.
func SubscriptionCounts(s *pubsub.Subscription) (Counts, bool) {
	var d *subscription
	if s == nil || !s.As(&d) {
		return Counts{}, false
	}
	return Counts{DeadLettered: d.deadLettered.Load(), Dropped: d.dropped.Load(), Nacked: d.nacked.Load(), Held: d.held.Load()}, true
}

// subscription is a driver.Subscription that decrypts with a cryptsub.Subscription. A
// pump goroutine receives and decrypts a batch at a time under the subscription's own
// context, so the short waits of ReceiveBatch never cancel a key-service call midway. Each
// delivered inner message is kept until the portable type acks or nacks it.
type subscription struct {
	cs      *cryptsub.Subscription
	dlq     *pubsub.Topic // nil: undecryptable messages are dropped
	canNack bool
	log     *slog.Logger

	ctx     context.Context // the pump's; canceled by Close
	cancel  context.CancelFunc
	start   sync.Once
	stopped chan struct{}        // closed when the pump has returned
	msgs    chan *pubsub.Message // unbuffered: the pump holds at most one batch
	failed  chan struct{}        // closed when err is set
	err     error                // the inner subscription's permanent error

	nextID                              atomic.Uint64
	deadLettered, dropped, nacked, held atomic.Int64
	outage                              atomic.Bool // an environment fault was logged and has not passed yet

	mu      sync.Mutex
	pending map[uint64]*pubsub.Message
}

func newSubscription(cs *cryptsub.Subscription, dlq *pubsub.Topic, canNack bool, log *slog.Logger) *pubsub.Subscription {
	return pubsub.NewSubscription(newDriverSubscription(cs, dlq, canNack, log),
		&batcher.Options{MaxHandlers: 1, MaxBatchSize: 1000},
		&batcher.Options{MaxHandlers: 2, MaxBatchSize: 1000})
}

func newDriverSubscription(cs *cryptsub.Subscription, dlq *pubsub.Topic, canNack bool, log *slog.Logger) *subscription {
	ctx, cancel := context.WithCancel(context.Background())
	return &subscription{
		cs: cs, dlq: dlq, canNack: canNack, log: log,
		ctx: ctx, cancel: cancel,
		stopped: make(chan struct{}), msgs: make(chan *pubsub.Message), failed: make(chan struct{}),
		pending: make(map[uint64]*pubsub.Message),
	}
}

func (s *subscription) ReceiveBatch(ctx context.Context, maxMessages int) ([]*driver.Message, error) {
	s.start.Do(func() { go s.pump() })
	var out []*driver.Message
	timer := time.NewTimer(firstWait)
	defer timer.Stop()
	for len(out) < maxMessages {
		select {
		case m := <-s.msgs:
			id := s.nextID.Add(1)
			s.mu.Lock()
			s.pending[id] = m
			s.mu.Unlock()
			out = append(out, &driver.Message{LoggableID: m.LoggableID, Body: m.Body, Metadata: m.Metadata, AckID: id, AsFunc: m.As})
			timer.Reset(nextWait)
		case <-timer.C:
			return out, nil
		case <-s.failed:
			if len(out) > 0 {
				return out, nil
			}
			return nil, s.err
		case <-ctx.Done():
			if len(out) > 0 {
				return out, nil
			}
			return nil, ctx.Err()
		}
	}
	return out, nil
}

// pump receives and decrypts until the subscription fails or is closed, in batches of up
// to receiveBatch messages (cryptsub.ReceiveBatch: the protected fields of a whole batch
// cost one key-service call per key, not one per message). Messages are handed on in the
// order they were received. What becomes of a message that does not decrypt depends on
// whose fault it is: a fault of the message is disposed of (dead-lettered or dropped), a
// fault of the environment never is.
func (s *subscription) pump() {
	defer close(s.stopped)
	backoff := newBackoff()
	for {
		msgs, _, errs := s.cs.ReceiveBatch(s.ctx, receiveBatch)
		if s.ctx.Err() != nil {
			handBack(msgs) // closing: left unacked, for redelivery
			return
		}
		nacked := false
		for i, m := range msgs {
			var de *cryptsub.DecryptError
			switch err := errs[i]; {
			case errors.As(err, &de) && de.Class() == fault.Environment:
				if s.canNack && de.Message.Nackable() {
					s.environmentFault(de, "message nacked for redelivery")
					s.nacked.Add(1)
					de.Message.Nack()
					nacked = true
					continue
				}
				// The broker cannot redeliver it (Kafka): hold it and try again until the
				// environment is mended, so it is neither dead-lettered nor lost; the
				// messages behind it wait.
				if m = s.retryDecrypt(de); m == nil {
					if s.ctx.Err() != nil {
						handBack(msgs[i+1:])
						return
					}
					continue
				}
			case errors.As(err, &de):
				s.undecryptable(de)
				continue
			case err != nil:
				s.err = err
				close(s.failed)
				return
			}
			s.recovered()
			select {
			case s.msgs <- m:
			case <-s.ctx.Done():
				handBack(msgs[i:])
				return
			}
		}
		if nacked {
			backoff.wait(s.ctx) // once per batch: the whole batch met the same outage
		} else {
			backoff.reset()
		}
	}
}

// handBack gives messages the pump took but will not deliver back to the broker now
// where it can take them (Nack) rather than at their ack deadline; the others stay
// unacked, for redelivery to the next run.
func handBack(msgs []*pubsub.Message) {
	for _, m := range msgs {
		if m != nil && m.Nackable() {
			m.Nack()
		}
	}
}

// environmentFault logs a fault of the environment at Warn the first time it is met, and
// at Debug while it lasts, so that an outage is one line, not one per message.
func (s *subscription) environmentFault(de *cryptsub.DecryptError, what string) {
	level := slog.LevelDebug
	if s.outage.CompareAndSwap(false, true) {
		level = slog.LevelWarn
	}
	s.log.Log(s.ctx, level, "encurl: environment fault, "+what, "id", broker.Position(de.Message), "class", de.Class().String(), "reason", reasonOf(de))
}

// recovered notes that a message decrypted again after an environment fault.
func (s *subscription) recovered() {
	if s.outage.CompareAndSwap(true, false) {
		s.log.InfoContext(s.ctx, "encurl: messages decrypt again")
	}
}

// retryDecrypt tries a message whose decryption failed for a fault of the environment
// again, with backoff, until it decrypts (returned), fails for a fault of the message
// (disposed of, nil returned) or the subscription closes (left unacked for redelivery,
// nil returned).
func (s *subscription) retryDecrypt(de *cryptsub.DecryptError) *pubsub.Message {
	m := de.Message
	s.held.Add(1)
	s.environmentFault(de, "holding the message and retrying")
	for b := newBackoff(); ; {
		b.wait(s.ctx)
		if s.ctx.Err() != nil {
			return nil
		}
		_, err := s.cs.Decrypt(s.ctx, m)
		if err == nil {
			return m
		}
		de = &cryptsub.DecryptError{Message: m, Err: err}
		if de.Class() != fault.Environment {
			s.undecryptable(de)
			return nil
		}
	}
}

// undecryptable disposes of a message that cannot be decrypted for a fault of its own
// (class fault.Message), without failing the subscription: to the dead-letter topic, or
// acked and dropped.
func (s *subscription) undecryptable(de *cryptsub.DecryptError) {
	m := de.Message
	reason := reasonOf(de)
	if s.dlq == nil {
		s.log.WarnContext(s.ctx, "encurl: undecryptable message acked and dropped (no dlq)", "id", broker.Position(m), "class", de.Class().String(), "reason", reason)
		s.dropped.Add(1)
		m.Ack()
		return
	}
	md := make(map[string]string, len(m.Metadata)+1)
	for k, v := range m.Metadata {
		md[k] = v
	}
	md[DeadLetterReasonKey] = reason
	// Until the dead-letter topic takes it, the message is neither acked nor skipped.
	for backoff := newBackoff(); ; backoff.wait(s.ctx) {
		if s.ctx.Err() != nil {
			return // closing: left unacked, for redelivery
		}
		err := s.dlq.Send(s.ctx, &pubsub.Message{Body: m.Body, Metadata: md})
		if err == nil {
			break
		}
		s.log.ErrorContext(s.ctx, "encurl: dead-letter send failed, retrying", "id", broker.Position(m), "err", err)
	}
	s.log.WarnContext(s.ctx, "encurl: undecryptable message dead-lettered", "id", broker.Position(m), "class", de.Class().String(), "reason", reason)
	s.deadLettered.Add(1)
	m.Ack()
}

// backoff waits 100ms, doubling up to 30s.
type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{d: 100 * time.Millisecond} }
func (b *backoff) reset()  { b.d = 100 * time.Millisecond }
func (b *backoff) wait(ctx context.Context) {
	t := time.NewTimer(b.d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	b.d = min(2*b.d, 30*time.Second)
}

// reasonOf is a short, secret-free reason for the log and the dead-letter entry.
func reasonOf(de *cryptsub.DecryptError) string {
	kind := "undecryptable"
	switch {
	case errors.Is(de.Err, cryptsub.ErrNoEnvelope):
		kind = "not encrypted"
	case errors.Is(de.Err, cryptsub.ErrTampered):
		kind = "tampered"
	case errors.Is(de.Err, cryptsub.ErrMalformed):
		kind = "malformed envelope"
	case errors.Is(de.Err, keyring.ErrVersionTooOld):
		kind = "key version retired"
	case errors.Is(de.Err, keyring.ErrUnavailable):
		kind = "key service unavailable"
	case errors.Is(de.Err, keyring.ErrPermissionDenied):
		kind = "permission denied by key service"
	case errors.Is(de.Err, keyring.ErrKeyNotFound):
		kind = "key not found"
	}
	r := strings.ToValidUTF8(kind+": "+de.Err.Error(), "?")
	if len(r) > 1000 { // Google Pub/Sub caps attribute values at 1024 bytes
		r = strings.ToValidUTF8(r[:1000], "")
	}
	return r
}

func (s *subscription) SendAcks(ctx context.Context, ids []driver.AckID) error {
	for _, m := range s.take(ids) {
		m.Ack()
	}
	return nil
}

func (s *subscription) CanNack() bool { return s.canNack }

func (s *subscription) SendNacks(ctx context.Context, ids []driver.AckID) error {
	for _, m := range s.take(ids) {
		if m.Nackable() {
			m.Nack()
		}
		// Otherwise the message stays unacked: redelivered after a restart.
	}
	return nil
}

// take removes and returns the pending messages of ids; unknown IDs (double acks) are
// ignored.
func (s *subscription) take(ids []driver.AckID) []*pubsub.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*pubsub.Message, 0, len(ids))
	for _, id := range ids {
		n, _ := id.(uint64)
		if m, ok := s.pending[n]; ok {
			delete(s.pending, n)
			out = append(out, m)
		}
	}
	return out
}

// IsRetryable is false: the inner subscription already retried, and undecryptable messages
// are never errors.
func (s *subscription) IsRetryable(error) bool { return false }

func (s *subscription) As(i any) bool {
	if p, ok := i.(**subscription); ok {
		*p = s
		return true
	}
	return s.cs.As(i)
}

func (s *subscription) ErrorAs(err error, i any) bool {
	return s.cs.Unwrap().ErrorAs(err, i)
}

func (s *subscription) ErrorCode(err error) gcerrors.ErrorCode { return errorCode(err) }

func (s *subscription) Close() error {
	s.cancel()
	s.start.Do(func() { close(s.stopped) }) // never started
	<-s.stopped
	err := shutdown(s.cs.Shutdown)
	if s.dlq != nil {
		err = errors.Join(err, shutdown(s.dlq.Shutdown))
	}
	return err
}
