package kgopubsub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"gocloud.dev/gcerrors"
	"gocloud.dev/pubsub"
	"gocloud.dev/pubsub/batcher"
	"gocloud.dev/pubsub/driver"
)

// DefaultReadAhead is SubscriptionOptions.ReadAhead when it is zero.
const DefaultReadAhead = 4096

// DefaultCommitInterval is SubscriptionOptions.CommitInterval when it is zero.
const DefaultCommitInterval = 100 * time.Millisecond

// commitTimeout bounds the commits of a revoke and of Close.
const commitTimeout = 10 * time.Second

// SubscriptionOptions configure a subscription. The zero value starts a new group at the
// newest records.
type SubscriptionOptions struct {
	// KeyName is the metadata entry the record key is put into (a topic's KeyName), when
	// the record has a key. It wins over a header of the same name.
	KeyName string
	// Oldest starts a group that has committed nothing on a partition at its oldest
	// record instead of its newest.
	Oldest bool
	// ReadUncommitted reads the records of open and aborted transactions too (Kafka's
	// read_uncommitted). By default a subscription reads committed records only
	// (read_committed), as a consumer of a transactional producer's topic must; on a topic
	// written without transactions the two are the same.
	ReadUncommitted bool
	// ReadAhead bounds the records fetched and not yet received; zero means
	// DefaultReadAhead.
	ReadAhead int
	// CommitInterval is the least time between two commits of acknowledged records: a
	// process killed gets at most about that much of acknowledged work again. Zero means
	// DefaultCommitInterval; Close, a revoke and Commit commit at once anyway.
	CommitInterval time.Duration
	// Logger gets fetch and commit errors (which the subscription retries by itself);
	// nil means slog.Default().
	Logger *slog.Logger
}

// One ReceiveBatch at a time, so that the records of a partition reach the application
// in their order.
var recvBatcherOpts = &batcher.Options{MaxBatchSize: 1000, MaxHandlers: 1}

// OpenSubscription joins group as a consumer of topics with a client built from opts
// (seed brokers, TLS, SASL...) plus the group settings the subscription needs, which
// win: manual commits, rebalances blocked while a poll is being buffered, and its own
// revoke handling. The client is closed with the subscription; As reaches it.
func OpenSubscription(opts []kgo.Opt, group string, topics []string, so *SubscriptionOptions) (*pubsub.Subscription, error) {
	ds, err := openSubscription(opts, group, topics, so)
	if err != nil {
		return nil, err
	}
	return pubsub.NewSubscription(ds, recvBatcherOpts, nil), nil
}

func openSubscription(opts []kgo.Opt, group string, topics []string, so *SubscriptionOptions) (*subscription, error) {
	if so == nil {
		so = &SubscriptionOptions{}
	}
	if group == "" {
		return nil, errors.New("kgopubsub: open subscription: no group name")
	}
	if len(topics) == 0 {
		return nil, fmt.Errorf("kgopubsub: open subscription of group %s: no topic", group)
	}
	s := &subscription{
		group:     group,
		opts:      *so,
		log:       so.Logger,
		parts:     map[tp]*partition{},
		ready:     make(chan struct{}, 1),
		space:     make(chan struct{}, 1),
		commitSig: make(chan struct{}, 1),
		pollDone:  make(chan struct{}),
		commitEnd: make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.opts.ReadAhead <= 0 {
		s.opts.ReadAhead = DefaultReadAhead
	}
	if s.opts.CommitInterval <= 0 {
		s.opts.CommitInterval = DefaultCommitInterval
	}
	reset := kgo.NewOffset().AtEnd()
	if so.Oldest {
		reset = kgo.NewOffset().AtStart()
	}
	all := append(slices.Clip(opts),
		kgo.FetchIsolationLevel(isolation(so.ReadUncommitted)),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(reset),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsRevoked(s.onRevoked),
		kgo.OnPartitionsLost(s.onLost),
	)
	cl, err := kgo.NewClient(all...)
	if err != nil {
		return nil, fmt.Errorf("kgopubsub: open subscription of group %s: %w", group, err)
	}
	s.cl = cl
	s.ctx, s.cancel = context.WithCancel(context.Background())
	go s.pollLoop()
	go s.commitLoop()
	return s, nil
}

func isolation(uncommitted bool) kgo.IsolationLevel {
	if uncommitted {
		return kgo.ReadUncommitted()
	}
	return kgo.ReadCommitted()
}

type tp struct {
	topic string
	id    int32
}

// partition is what the subscription holds of one assigned partition.
type partition struct {
	tp
	gone      bool            // revoked or lost: acks for it are ignored
	recs      []*entry        // fetched and not yet committed past, in offset order
	queue     []*entry        // to deliver, in offset order
	commit    kgo.EpochOffset // the next offset to commit; Offset -1 until an ack
	committed int64           // the last offset committed
}

// entry is one fetched record; it is the AckID of its message.
type entry struct {
	p     *partition
	rec   *kgo.Record
	state uint8
}

const (
	queued uint8 = iota
	out
	acked
)

type subscription struct {
	cl     *kgo.Client
	group  string
	opts   SubscriptionOptions
	log    *slog.Logger
	ctx    context.Context // ends at Close
	cancel context.CancelFunc

	mu      sync.Mutex
	parts   map[tp]*partition
	list    []*partition // parts, for round-robin delivery
	next    int          // where the next delivery starts in list
	nqueued int

	ready     chan struct{} // records were queued
	space     chan struct{} // the read-ahead has room
	commitSig chan struct{} // something was acked
	pollDone  chan struct{}
	commitEnd chan struct{}

	commitMu sync.Mutex // one commit at a time, so that offsets only move forward
}

func (s *subscription) pollLoop() {
	defer close(s.pollDone)
	for {
		s.mu.Lock()
		room := s.opts.ReadAhead - s.nqueued
		s.mu.Unlock()
		if room <= 0 {
			select {
			case <-s.space:
				continue
			case <-s.ctx.Done():
				return
			}
		}
		fs := s.cl.PollRecords(s.ctx, room)
		if s.ctx.Err() != nil || fs.IsClientClosed() {
			s.cl.AllowRebalance()
			return
		}
		// franz-go retries what can be retried and keeps fetching; the errors it
		// injects are for information (see kgo.Fetches.Errors).
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				s.log.Warn("kgopubsub: fetch", "group", s.group, "topic", t, "partition", p, "err", err)
			}
		})
		n := 0
		s.mu.Lock()
		fs.EachPartition(func(ftp kgo.FetchTopicPartition) {
			if len(ftp.Records) == 0 {
				return
			}
			p := s.partitionLocked(ftp.Topic, ftp.Partition)
			for _, r := range ftp.Records {
				e := &entry{p: p, rec: r}
				p.recs = append(p.recs, e)
				p.queue = append(p.queue, e)
			}
			n += len(ftp.Records)
		})
		s.nqueued += n
		s.mu.Unlock()
		// The records are buffered: a revoke may run now, and will drop them.
		s.cl.AllowRebalance()
		if n > 0 {
			signal(s.ready)
		}
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (s *subscription) partitionLocked(topic string, id int32) *partition {
	k := tp{topic, id}
	p := s.parts[k]
	if p == nil {
		p = &partition{tp: k, commit: kgo.EpochOffset{Epoch: -1, Offset: -1}, committed: -1}
		s.parts[k] = p
		s.list = append(s.list, p)
	}
	return p
}

// ReceiveBatch returns up to max buffered records, each partition's in offset order,
// waiting up to half a second for some.
func (s *subscription) ReceiveBatch(ctx context.Context, max int) ([]*driver.Message, error) {
	timer := time.NewTimer(500 * time.Millisecond)
	defer timer.Stop()
	for {
		s.mu.Lock()
		if s.nqueued > 0 {
			ms := s.takeLocked(max)
			s.mu.Unlock()
			signal(s.space)
			return ms, nil
		}
		s.mu.Unlock()
		select {
		case <-s.ready:
		case <-timer.C:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.pollDone:
			return nil, fmt.Errorf("kgopubsub: receive from group %s: %w", s.group, kgo.ErrClientClosed)
		}
	}
}

func (s *subscription) takeLocked(max int) []*driver.Message {
	var ms []*driver.Message
	for range len(s.list) {
		if len(ms) >= max {
			break
		}
		p := s.list[s.next%len(s.list)]
		s.next = (s.next + 1) % len(s.list)
		k := min(len(p.queue), max-len(ms))
		for _, e := range p.queue[:k] {
			e.state = out
			ms = append(ms, s.message(e))
		}
		clear(p.queue[:k])
		p.queue = p.queue[k:]
		s.nqueued -= k
	}
	return ms
}

func (s *subscription) message(e *entry) *driver.Message {
	return recordMessage(e.rec, s.opts.KeyName, e)
}

// loggableID is "topic/partition@offset".
func loggableID(r *kgo.Record) string {
	b := make([]byte, 0, len(r.Topic)+24)
	b = append(b, r.Topic...)
	b = append(b, '/')
	b = strconv.AppendInt(b, int64(r.Partition), 10)
	b = append(b, '@')
	b = strconv.AppendInt(b, r.Offset, 10)
	return string(b)
}

// recordMessage is the driver message of r: its value, its headers as metadata (and its
// key as the entry keyName, if set), and ackID. As reaches r, and an *entry ackID.
func recordMessage(r *kgo.Record, keyName string, ackID driver.AckID) *driver.Message {
	var md map[string]string
	if len(r.Headers) > 0 || keyName != "" && r.Key != nil {
		md = make(map[string]string, len(r.Headers)+1)
	}
	for _, h := range r.Headers {
		md[h.Key] = string(h.Value) // a repeated key: the last wins
	}
	if keyName != "" && r.Key != nil {
		md[keyName] = string(r.Key)
	}
	return &driver.Message{
		// Not the key: a record key may be personal data, and LoggableIDs reach logs.
		LoggableID: loggableID(r),
		Body:       r.Value,
		Metadata:   md,
		AckID:      ackID,
		AsFunc: func(i any) bool {
			switch p := i.(type) {
			case **kgo.Record:
				*p = r
			case **entry:
				e, ok := ackID.(*entry)
				if !ok {
					return false
				}
				*p = e
			default:
				return false
			}
			return true
		},
	}
}

// SendAcks marks records done; the commit loop commits what became contiguous.
func (s *subscription) SendAcks(_ context.Context, ids []driver.AckID) error {
	s.mu.Lock()
	moved := false
	for _, id := range ids {
		if s.ackLocked(id.(*entry)) {
			moved = true
		}
	}
	s.mu.Unlock()
	if moved {
		signal(s.commitSig)
	}
	return nil
}

// ackLocked marks e acked and reports whether its partition's commit point moved.
func (s *subscription) ackLocked(e *entry) bool {
	p := e.p
	if p.gone || e.state == acked {
		return false
	}
	if e.state == queued { // acked before delivery (Commit): it leaves the queue
		if i := slices.Index(p.queue, e); i >= 0 {
			p.queue = slices.Delete(p.queue, i, i+1)
			s.nqueued--
		}
	}
	e.state = acked
	moved := false
	for len(p.recs) > 0 && p.recs[0].state == acked {
		r := p.recs[0].rec
		p.commit = kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset + 1}
		p.recs[0] = nil
		p.recs = p.recs[1:]
		moved = true
	}
	return moved
}

// CanNack is true: a nacked record is delivered again.
func (s *subscription) CanNack() bool { return true }

// SendNacks puts records back ahead of the undelivered records of their partitions.
func (s *subscription) SendNacks(_ context.Context, ids []driver.AckID) error {
	s.mu.Lock()
	n := 0
	for _, id := range ids {
		e := id.(*entry)
		p := e.p
		if p.gone || e.state != out {
			continue
		}
		e.state = queued
		i, _ := slices.BinarySearchFunc(p.queue, e.rec.Offset, func(q *entry, off int64) int {
			switch {
			case q.rec.Offset < off:
				return -1
			case q.rec.Offset > off:
				return 1
			}
			return 0
		})
		p.queue = slices.Insert(p.queue, i, e)
		n++
	}
	s.nqueued += n
	s.mu.Unlock()
	if n > 0 {
		signal(s.ready)
	}
	return nil
}

func (s *subscription) commitLoop() {
	defer close(s.commitEnd)
	for {
		select {
		case <-s.commitSig:
		case <-s.ctx.Done():
			return
		}
		if err := s.commit(s.ctx, nil); err != nil && s.ctx.Err() == nil {
			s.log.Warn("kgopubsub: commit", "group", s.group, "err", err)
		}
		// At most one commit per interval: the acks of that time share it.
		select {
		case <-time.After(s.opts.CommitInterval):
		case <-s.ctx.Done():
			return
		}
	}
}

// commit commits the contiguously acknowledged offsets of the partitions in only, or of
// all when only is nil, that moved since their last commit.
func (s *subscription) commit(ctx context.Context, only map[string][]int32) error {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	type pending struct {
		p   *partition
		off kgo.EpochOffset
	}
	var todo []pending
	offs := map[string]map[int32]kgo.EpochOffset{}
	s.mu.Lock()
	for _, p := range s.list {
		if only != nil && !slices.Contains(only[p.topic], p.id) {
			continue
		}
		if p.commit.Offset > p.committed {
			todo = append(todo, pending{p, p.commit})
			if offs[p.topic] == nil {
				offs[p.topic] = map[int32]kgo.EpochOffset{}
			}
			offs[p.topic][p.id] = p.commit
		}
	}
	s.mu.Unlock()
	if len(todo) == 0 {
		return nil
	}
	var cerr error
	s.cl.CommitOffsetsSync(ctx, offs, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			cerr = err
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil && cerr == nil {
					cerr = fmt.Errorf("topic %s partition %d: %w", t.Topic, p.Partition, err)
				}
			}
		}
	})
	if cerr != nil {
		return cerr
	}
	s.mu.Lock()
	for _, t := range todo {
		t.p.committed = max(t.p.committed, t.off.Offset)
	}
	s.mu.Unlock()
	return nil
}

// onRevoked commits what is acknowledged on the revoked partitions, then forgets them:
// their buffered records go (the next owner reads them from the commit) and later acks
// for them are ignored.
func (s *subscription) onRevoked(ctx context.Context, _ *kgo.Client, revoked map[string][]int32) {
	if len(revoked) == 0 {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, commitTimeout)
	defer cancel()
	if err := s.commit(cctx, revoked); err != nil {
		s.log.Warn("kgopubsub: commit on revoke", "group", s.group, "err", err)
	}
	s.drop(revoked)
}

// onLost forgets partitions that were lost without a chance to commit.
func (s *subscription) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	s.drop(lost)
}

func (s *subscription) drop(gone map[string][]int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for t, ids := range gone {
		for _, id := range ids {
			p := s.parts[tp{t, id}]
			if p == nil {
				continue
			}
			p.gone = true
			s.nqueued -= len(p.queue)
			p.queue, p.recs = nil, nil
			delete(s.parts, p.tp)
			s.list = slices.DeleteFunc(s.list, func(q *partition) bool { return q == p })
		}
	}
	if len(s.list) > 0 {
		s.next %= len(s.list)
	} else {
		s.next = 0
	}
}

// commitNow marks msgs acknowledged (they were, in the application) and commits every
// partition now.
func (s *subscription) commitNow(ctx context.Context, msgs []*pubsub.Message) error {
	s.mu.Lock()
	for _, m := range msgs {
		var e *entry
		if m != nil && m.As(&e) && e != nil {
			s.ackLocked(e)
		}
	}
	s.mu.Unlock()
	return s.commit(ctx, nil)
}

// Commit makes the group's committed offsets include msgs, which the application has
// acknowledged, and every acknowledged message before them on their partitions, and
// waits until the broker has stored them. The subscription commits acknowledged records
// by itself soon after each ack; Commit is for a program that must know a batch is
// stored before it goes on. For a subscription of another driver it does nothing.
func Commit(ctx context.Context, sub *pubsub.Subscription, msgs []*pubsub.Message) error {
	var s *subscription
	if sub == nil || !sub.As(&s) || s == nil {
		return nil
	}
	return s.commitNow(ctx, msgs)
}

func (s *subscription) Close() error {
	s.cancel()
	<-s.pollDone
	<-s.commitEnd
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	err := s.commit(ctx, nil)
	s.cl.Close()
	if err != nil {
		return fmt.Errorf("kgopubsub: close subscription of group %s: commit: %w", s.group, err)
	}
	return nil
}

// IsRetryable reports whether a fetch error may pass: gocloud then receives again.
func (s *subscription) IsRetryable(err error) bool { return retryable(err) }

func (s *subscription) As(i any) bool {
	switch p := i.(type) {
	case **kgo.Client:
		*p = s.cl
	case **subscription:
		*p = s
	default:
		return false
	}
	return true
}

func (s *subscription) ErrorAs(err error, i any) bool          { return errorAs(err, i) }
func (s *subscription) ErrorCode(err error) gcerrors.ErrorCode { return errorCode(err) }
