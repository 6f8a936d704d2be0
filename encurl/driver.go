package encurl

import (
	"context"
	"errors"
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
)

// topic is a driver.Topic that encrypts with a crypttopic.Topic.
type topic struct{ ct *crypttopic.Topic }

func newTopic(ct *crypttopic.Topic) *pubsub.Topic {
	// Batches let crypttopic.SendBatch make one Vault call for the transit fields of many
	// concurrent Sends.
	return pubsub.NewTopic(&topic{ct: ct}, &batcher.Options{MaxHandlers: 4, MaxBatchSize: 100})
}

func (t *topic) SendBatch(ctx context.Context, dms []*driver.Message) error {
	msgs := make([]*pubsub.Message, len(dms))
	for i, dm := range dms {
		msgs[i] = &pubsub.Message{Body: dm.Body, Metadata: dm.Metadata, BeforeSend: dm.BeforeSend, AfterSend: dm.AfterSend}
	}
	return t.ct.SendBatch(ctx, msgs)
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

// errorCode maps key-service failures to gocloud codes; errors of the inner driver keep
// theirs.
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
	}
	return gcerrors.Code(err)
}

// Counts say what an enc+ subscription did with messages it could not decrypt.
type Counts struct {
	DeadLettered int64 // sent to the dead-letter topic and acked
	Dropped      int64 // acked and logged: no dead-letter topic
	Nacked       int64 // key service unreachable: nacked for redelivery
}

// SubscriptionCounts returns the counts of s, and false if s was not opened by this
// package.
func SubscriptionCounts(s *pubsub.Subscription) (Counts, bool) {
	var d *subscription
	if s == nil || !s.As(&d) {
		return Counts{}, false
	}
	return Counts{DeadLettered: d.deadLettered.Load(), Dropped: d.dropped.Load(), Nacked: d.nacked.Load()}, true
}

// subscription is a driver.Subscription that decrypts with a cryptsub.Subscription. A
// pump goroutine receives and decrypts one message at a time under the subscription's own
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
	msgs    chan *pubsub.Message // unbuffered: the pump holds at most one message
	failed  chan struct{}        // closed when err is set
	err     error                // the inner subscription's permanent error

	nextID                        atomic.Uint64
	deadLettered, dropped, nacked atomic.Int64

	mu      sync.Mutex
	pending map[uint64]*pubsub.Message
}

func newSubscription(cs *cryptsub.Subscription, dlq *pubsub.Topic, canNack bool, log *slog.Logger) *pubsub.Subscription {
	ctx, cancel := context.WithCancel(context.Background())
	s := &subscription{
		cs: cs, dlq: dlq, canNack: canNack, log: log,
		ctx: ctx, cancel: cancel,
		stopped: make(chan struct{}), msgs: make(chan *pubsub.Message), failed: make(chan struct{}),
		pending: make(map[uint64]*pubsub.Message),
	}
	return pubsub.NewSubscription(s,
		&batcher.Options{MaxHandlers: 1, MaxBatchSize: 1000},
		&batcher.Options{MaxHandlers: 2, MaxBatchSize: 1000})
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

// pump receives and decrypts until the subscription fails or is closed.
func (s *subscription) pump() {
	defer close(s.stopped)
	backoff := newBackoff()
	for {
		m, err := s.cs.Receive(s.ctx)
		if s.ctx.Err() != nil {
			return // closing: a message taken is left unacked, for redelivery
		}
		var de *cryptsub.DecryptError
		switch {
		case errors.As(err, &de):
			if retryable(de) && !(s.canNack && de.Message.Nackable()) {
				// The broker cannot redeliver it (Kafka): hold it and try again until the
				// key service is back, so it is neither dead-lettered nor lost.
				if m = s.retryDecrypt(de); m == nil {
					continue
				}
				break
			}
			if !s.undecryptable(de) {
				backoff.wait(s.ctx)
			} else {
				backoff.reset()
			}
			continue
		case err != nil:
			s.err = err
			close(s.failed)
			return
		}
		backoff.reset()
		select {
		case s.msgs <- m:
		case <-s.ctx.Done():
			if m.Nackable() {
				m.Nack() // hand it back now rather than at the ack deadline
			}
			return
		}
	}
}

// retryDecrypt tries a message whose decryption failed for a passing reason again, with
// backoff, until it decrypts (returned), fails for good (disposed of, nil returned) or
// the subscription closes (left unacked for redelivery, nil returned).
func (s *subscription) retryDecrypt(de *cryptsub.DecryptError) *pubsub.Message {
	m := de.Message
	s.log.WarnContext(s.ctx, "encurl: key service unavailable, holding the message and retrying", "id", m.LoggableID, "reason", reasonOf(de))
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
		if !retryable(de) {
			s.undecryptable(de)
			return nil
		}
	}
}

// undecryptable disposes of a message cryptsub could not decrypt without failing the
// subscription. It returns false when the pump should back off (key service unreachable).
func (s *subscription) undecryptable(de *cryptsub.DecryptError) bool {
	m := de.Message
	reason := reasonOf(de)
	if retryable(de) && s.canNack && m.Nackable() {
		s.log.WarnContext(s.ctx, "encurl: key service unavailable, message nacked for redelivery", "id", m.LoggableID, "reason", reason)
		s.nacked.Add(1)
		m.Nack()
		return false
	}
	if s.dlq == nil {
		s.log.WarnContext(s.ctx, "encurl: undecryptable message acked and dropped (no dlq)", "id", m.LoggableID, "reason", reason)
		s.dropped.Add(1)
		m.Ack()
		return true
	}
	md := make(map[string]string, len(m.Metadata)+1)
	for k, v := range m.Metadata {
		md[k] = v
	}
	md[DeadLetterReasonKey] = reason
	// Until the dead-letter topic takes it, the message is neither acked nor skipped.
	for backoff := newBackoff(); ; backoff.wait(s.ctx) {
		if s.ctx.Err() != nil {
			return true // closing: left unacked, for redelivery
		}
		err := s.dlq.Send(s.ctx, &pubsub.Message{Body: m.Body, Metadata: md})
		if err == nil {
			break
		}
		s.log.ErrorContext(s.ctx, "encurl: dead-letter send failed, retrying", "id", m.LoggableID, "err", err)
	}
	s.log.WarnContext(s.ctx, "encurl: undecryptable message dead-lettered", "id", m.LoggableID, "reason", reason)
	s.deadLettered.Add(1)
	m.Ack()
	return true
}

// retryable reports whether trying the message again later may succeed.
func retryable(de *cryptsub.DecryptError) bool {
	return de.Retryable() || errors.Is(de.Err, context.DeadlineExceeded) || errors.Is(de.Err, context.Canceled)
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
	case errors.Is(de.Err, keyring.ErrUnavailable):
		kind = "key service unavailable"
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
