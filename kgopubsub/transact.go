package kgopubsub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"gocloud.dev/gcerrors"
	"gocloud.dev/pubsub"
	"gocloud.dev/pubsub/driver"
)

// DefaultTransactionTimeout is TransactOptions.TransactionTimeout when it is zero.
const DefaultTransactionTimeout = 10 * time.Second

// TransactOptions configure a Transactor.
type TransactOptions struct {
	// TransactionalID names the member's transactions; it is required. A member started
	// again under the same ID fences the one before it and aborts at once what that one
	// left open, so give each instance an ID of its own that it keeps across restarts (a
	// pod name). Two live members under one ID fence each other: the older one fails
	// with ErrFenced.
	TransactionalID string
	// TransactionTimeout is how long the broker lets a transaction stay open before it
	// aborts it: how long a member that died, and is not started again under its ID,
	// holds back read_committed consumers of the partitions it wrote and the next owner
	// of the partitions it read. Zero means DefaultTransactionTimeout.
	TransactionTimeout time.Duration
	// Subscription: KeyName and Oldest apply, as for a subscription; the transactor
	// reads committed records only.
	Subscription SubscriptionOptions
	// Logger gets fetch errors (retried by franz-go); nil means slog.Default().
	Logger *slog.Logger
}

// ErrFenced is what Commit returns once another member took over the transactional ID:
// this one must stop.
var ErrFenced = errors.New("kgopubsub: another member took over the transactional ID")

// Transactor is a consumer group member that reads records and produces in Kafka
// transactions (exactly once). Its cycle is Poll, Begin, produce the results on its
// topics (OpenTopic), then Commit: the records produced and the group's offsets after
// the polled records become visible together, or, on Abort or a rebalance in between,
// not at all, and the records are polled again. Consumers of the output that read
// committed records (every Subscription of this package by default) see each polled
// record's output exactly once.
//
// A Transactor is used by one goroutine: Poll, Begin, Commit and Abort one after the
// other.
type Transactor struct {
	sess  *kgo.GroupTransactSession
	group string
	opts  TransactOptions
	log   *slog.Logger
	parts *partitioners
	feed  *feeder
	sub   *pubsub.Subscription // turns polled records into pubsub.Messages
}

// OpenTransactor joins group as a transactional consumer of topics, with a client built
// from opts (seed brokers, TLS, SASL...) plus what a transactional group member needs,
// which wins. Close it when done.
func OpenTransactor(opts []kgo.Opt, group string, topics []string, to *TransactOptions) (*Transactor, error) {
	if to == nil || to.TransactionalID == "" {
		return nil, errors.New("kgopubsub: open transactor: no transactional ID")
	}
	if group == "" {
		return nil, errors.New("kgopubsub: open transactor: no group name")
	}
	if len(topics) == 0 {
		return nil, fmt.Errorf("kgopubsub: open transactor of group %s: no topic", group)
	}
	t := &Transactor{group: group, opts: *to, log: to.Logger, parts: &partitioners{record: map[string]bool{}}}
	if t.log == nil {
		t.log = slog.Default()
	}
	if t.opts.TransactionTimeout <= 0 {
		t.opts.TransactionTimeout = DefaultTransactionTimeout
	}
	reset := kgo.NewOffset().AtEnd()
	if to.Subscription.Oldest {
		reset = kgo.NewOffset().AtStart()
	}
	all := append(slices.Clip(opts),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(reset),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequireStableFetchOffsets(),
		kgo.TransactionalID(to.TransactionalID),
		kgo.TransactionTimeout(t.opts.TransactionTimeout),
		kgo.RecordPartitioner(t.parts),
		kgo.ProducerLinger(0), // a batch is produced whole, then flushed by Commit
	)
	sess, err := kgo.NewGroupTransactSession(all...)
	if err != nil {
		return nil, fmt.Errorf("kgopubsub: open transactor of group %s: %w", group, err)
	}
	t.sess = sess
	t.feed = &feeder{ready: make(chan struct{}, 1)}
	t.sub = pubsub.NewSubscription(t.feed, recvBatcherOpts, nil)
	return t, nil
}

// OpenTransactorURL opens a Transactor for a subscription URL (kgo://GROUP?topic=T...;
// offset and key_name apply; isolation must be left out or be read_committed).
func (o *URLOpener) OpenTransactorURL(u *url.URL, to TransactOptions) (*Transactor, error) {
	group, topics, so, err := o.subscriptionURL(u)
	if err != nil {
		return nil, err
	}
	if so.ReadUncommitted {
		return nil, fmt.Errorf("open subscription %v: a transactor reads committed records only", u)
	}
	to.Subscription.KeyName, to.Subscription.Oldest = so.KeyName, so.Oldest
	return OpenTransactor(o.Opts, group, topics, &to)
}

// OpenTopic opens a topic that produces through the transactor, inside its
// transactions: a record sent outside Begin and Commit fails. opts.Linger and
// opts.BatcherOptions do not apply (send with SendInOrder, or Send, between Begin and
// Commit). The topic is closed before the transactor.
func (t *Transactor) OpenTopic(name string, opts *TopicOptions) (*pubsub.Topic, error) {
	if opts == nil {
		opts = &TopicOptions{}
	}
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if opts.Partitioner == PartitionerRecord {
		t.parts.set(name)
	}
	return newTopic(t.sess.Client(), false, name, *opts), nil
}

// OpenTopicURL is OpenTopic for a topic URL of this package.
func (t *Transactor) OpenTopicURL(u *url.URL) (*pubsub.Topic, error) {
	name, opts, err := (&URLOpener{}).topicURL(u)
	if err != nil {
		return nil, err
	}
	return t.OpenTopic(name, &opts)
}

// Poll waits for records of the member's partitions and returns up to max of them: those
// buffered, and those that arrive within linger of the first. Each partition's come in
// offset order; a message's As reaches its *kgo.Record, and acknowledging it does
// nothing (Commit does). Commit commits the offsets after everything Poll returned.
func (t *Transactor) Poll(ctx context.Context, max int, linger time.Duration) ([]*pubsub.Message, error) {
	var recs []*kgo.Record
	poll := func(ctx context.Context, n int) error {
		fs := t.sess.PollRecords(ctx, n)
		if fs.IsClientClosed() {
			return fmt.Errorf("kgopubsub: poll group %s: %w", t.group, kgo.ErrClientClosed)
		}
		fs.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				t.log.Warn("kgopubsub: fetch", "group", t.group, "topic", topic, "partition", p, "err", err)
			}
		})
		recs = append(recs, fs.Records()...)
		return nil
	}
	for len(recs) == 0 {
		if err := poll(ctx, max); err != nil {
			return nil, err
		}
		if len(recs) == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	if linger > 0 {
		lctx, cancel := context.WithTimeout(ctx, linger)
		for len(recs) < max && lctx.Err() == nil {
			if err := poll(lctx, max-len(recs)); err != nil {
				cancel()
				return nil, err
			}
		}
		cancel()
	}
	dms := make([]*driver.Message, len(recs))
	for i, r := range recs {
		dms[i] = recordMessage(r, t.opts.Subscription.KeyName, r)
	}
	t.feed.push(dms)
	// The records are the feeder's: take them all, even if ctx ends meanwhile.
	rctx := context.WithoutCancel(ctx)
	ms := make([]*pubsub.Message, 0, len(dms))
	for len(ms) < len(dms) {
		m, err := t.sub.Receive(rctx)
		if err != nil {
			return nil, fmt.Errorf("kgopubsub: poll group %s: %w", t.group, err)
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// Begin starts a transaction.
func (t *Transactor) Begin() error {
	if err := t.sess.Begin(); err != nil {
		return fmt.Errorf("kgopubsub: begin transaction of group %s: %w", t.group, err)
	}
	return nil
}

// Commit flushes what was produced since Begin and commits it with the offsets after
// the records polled, in one transaction. committed is false, with a nil error, when a
// rebalance came in between: the transaction was aborted and its records are polled
// again (by this member or the partition's new owner). An error means this member
// should stop, or be opened again: ErrFenced when another took over its ID.
func (t *Transactor) Commit(ctx context.Context) (committed bool, err error) {
	committed, err = t.sess.End(ctx, kgo.TryCommit)
	if err != nil {
		return false, t.endError("commit", err)
	}
	return committed, nil
}

// Abort aborts the transaction, if one was begun, and goes back to the committed
// offsets: the records polled since the last commit are polled again.
func (t *Transactor) Abort(ctx context.Context) error {
	if _, err := t.sess.End(ctx, kgo.TryAbort); err != nil {
		return t.endError("abort", err)
	}
	return nil
}

// Fenced reports whether err says that the member's transaction was ended under it: by
// another member that took over the transactional ID (ErrFenced, or the broker's
// PRODUCER_FENCED or INVALID_PRODUCER_EPOCH), or with INVALID_TXN_STATE, which a broker
// that implements KIP-890 answers a commit whose transaction a newer epoch already
// aborted: that of the member that took over, or the broker's own abort of a
// transaction open past TransactionTimeout. Opening the member again would fence the
// other one in turn.
func Fenced(err error) bool {
	return errors.Is(err, ErrFenced) || errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) ||
		errors.Is(err, kerr.InvalidTxnState)
}

func (t *Transactor) endError(verb string, err error) error {
	if Fenced(err) && !errors.Is(err, ErrFenced) {
		return fmt.Errorf("kgopubsub: %s transaction of group %s: %w (%w)", verb, t.group, ErrFenced, err)
	}
	return fmt.Errorf("kgopubsub: %s transaction of group %s: %w", verb, t.group, err)
}

// Client is the franz-go client of the transactor, which its topics share.
func (t *Transactor) Client() *kgo.Client { return t.sess.Client() }

// Close aborts a transaction left open and leaves the group.
func (t *Transactor) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	_, _ = t.sess.End(ctx, kgo.TryAbort)
	_ = t.sub.Shutdown(ctx)
	t.sess.Close()
}

// partitioners partitions the records of the topics set to PartitionerRecord by their
// kgo.Record.Partition, and every other topic's as a client does by default.
type partitioners struct {
	mu     sync.Mutex
	record map[string]bool
}

var (
	// defaultPartitioner is franz-go's default (kgo.RecordPartitioner's documentation).
	defaultPartitioner = kgo.UniformBytesPartitioner(64<<10, true, true, nil)
	// recordPartitioner is PartitionerRecord's: the partition the record names, modulo
	// the topic's partitions.
	recordPartitioner = kgo.BasicConsistentPartitioner(func(string) func(r *kgo.Record, n int) int {
		return func(r *kgo.Record, n int) int { return int(max(r.Partition, 0)) % n }
	})
)

func (p *partitioners) set(topic string) {
	p.mu.Lock()
	p.record[topic] = true
	p.mu.Unlock()
}

func (p *partitioners) ForTopic(topic string) kgo.TopicPartitioner {
	p.mu.Lock()
	rec := p.record[topic]
	p.mu.Unlock()
	if rec {
		return recordPartitioner.ForTopic(topic)
	}
	return defaultPartitioner.ForTopic(topic)
}

// feeder is the driver under a Transactor's gocloud subscription: it hands over the
// records Poll gave it, and acknowledgements do nothing.
type feeder struct {
	mu      sync.Mutex
	pending []*driver.Message
	ready   chan struct{}
}

func (f *feeder) push(dms []*driver.Message) {
	f.mu.Lock()
	f.pending = append(f.pending, dms...)
	f.mu.Unlock()
	signal(f.ready)
}

func (f *feeder) ReceiveBatch(ctx context.Context, max int) ([]*driver.Message, error) {
	timer := time.NewTimer(500 * time.Millisecond)
	defer timer.Stop()
	for {
		f.mu.Lock()
		if len(f.pending) > 0 {
			n := min(max, len(f.pending))
			ms := slices.Clone(f.pending[:n])
			f.pending = slices.Delete(f.pending, 0, n)
			more := len(f.pending) > 0
			f.mu.Unlock()
			if more {
				signal(f.ready)
			}
			return ms, nil
		}
		f.mu.Unlock()
		select {
		case <-f.ready:
		case <-timer.C:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (f *feeder) SendAcks(context.Context, []driver.AckID) error  { return nil }
func (f *feeder) CanNack() bool                                   { return false }
func (f *feeder) SendNacks(context.Context, []driver.AckID) error { return nil }
func (f *feeder) IsRetryable(error) bool                          { return false }
func (f *feeder) As(any) bool                                     { return false }
func (f *feeder) ErrorAs(error, any) bool                         { return false }
func (f *feeder) ErrorCode(error) gcerrors.ErrorCode              { return gcerrors.Unknown }
func (f *feeder) Close() error                                    { return nil }
