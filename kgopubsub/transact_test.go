package kgopubsub

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"gocloud.dev/pubsub"
)

func openTransactor(t *testing.T, addrs []string, id string, src string) *Transactor {
	t.Helper()
	tx, err := OpenTransactor([]kgo.Opt{kgo.SeedBrokers(addrs...)}, "bridge", []string{src},
		&TransactOptions{TransactionalID: id, Subscription: SubscriptionOptions{Oldest: true}})
	if err != nil {
		t.Fatal(err)
	}
	return tx
}

// copyBatch polls one batch, produces a copy of each record on dst in a transaction, and
// commits it (or aborts it, and then the same records come again).
func copyBatch(ctx context.Context, tx *Transactor, dst *pubsub.Topic, commit bool) (int, error) {
	ms, err := tx.Poll(ctx, 100, 20*time.Millisecond)
	if err != nil {
		return 0, err
	}
	if err := tx.Begin(); err != nil {
		return 0, err
	}
	out := make([]*pubsub.Message, len(ms))
	for i, m := range ms {
		out[i] = &pubsub.Message{Body: m.Body, Metadata: m.Metadata}
		m.Ack()
	}
	if _, err := SendInOrder(ctx, dst, out); err != nil {
		return 0, err
	}
	if !commit {
		return 0, tx.Abort(ctx)
	}
	ok, err := tx.Commit(ctx)
	if err != nil || !ok {
		return 0, fmt.Errorf("commit: %v, %v", ok, err)
	}
	return len(ms), nil
}

// TestTransactorExactlyOnce: 1,000 records copied in transactions, with aborted batches
// (their records are written, then aborted) and a transactor closed and replaced halfway.
// A read_committed subscription of the copy sees each record exactly once; a
// read_uncommitted one sees the aborted records too.
func TestTransactorExactlyOnce(t *testing.T) {
	const n = 1000
	b := startKafka(t, 3, "src", "dst")
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	var rs []*kgo.Record
	for i := range n {
		rs = append(rs, &kgo.Record{Topic: "src", Key: fmt.Appendf(nil, "k%d", i%7), Value: fmt.Appendf(nil, "%d", i)})
	}
	if err := produceTo(ctx, b, rs...); err != nil {
		t.Fatal(err)
	}

	copied, aborted := 0, 0
	for round := 0; copied < n; round++ {
		tx := openTransactor(t, b.Addrs, "copier", "src")
		dst, err := tx.OpenTopic("dst", nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 4 && copied < n; i++ {
			commit := i != 1 // the second batch of each round is aborted
			k, err := copyBatch(ctx, tx, dst, commit)
			if err != nil {
				t.Fatalf("round %d batch %d: %v", round, i, err)
			}
			copied += k
			if !commit {
				aborted++
			}
		}
		_ = dst.Shutdown(ctx)
		tx.Close()
	}
	t.Logf("%d records copied in transactions, %d batches aborted", copied, aborted)

	count := func(group string, opts SubscriptionOptions) map[string]int {
		sub := openSub(t, b, group, opts, "dst")
		seen := map[string]int{}
		for {
			wait := 3 * time.Second // after the last record: nothing more is coming
			if len(seen) == 0 {
				wait = 30 * time.Second // joining the group comes first
			}
			rctx, rcancel := context.WithTimeout(ctx, wait)
			m, err := sub.Receive(rctx)
			rcancel()
			if errors.Is(err, context.DeadlineExceeded) {
				return seen
			}
			if err != nil {
				t.Fatal(err)
			}
			m.Ack()
			seen[string(m.Body)]++
		}
	}
	committed := count("committed", SubscriptionOptions{})
	dups := 0
	for i := range n {
		switch c := committed[fmt.Sprint(i)]; {
		case c == 0:
			t.Errorf("record %d is missing", i)
		case c > 1:
			dups += c - 1
		}
	}
	if len(committed) != n || dups > 0 {
		t.Fatalf("read_committed: %d distinct of %d, %d duplicates", len(committed), n, dups)
	}
	all := 0
	for _, c := range count("uncommitted", SubscriptionOptions{ReadUncommitted: true}) {
		all += c
	}
	t.Logf("read_committed: %d records, each once; read_uncommitted: %d (aborted ones included)", n, all)
	if all <= n {
		t.Fatalf("read_uncommitted saw %d records: the aborted batches were not written", all)
	}
}

// TestTransactorFenced: a second transactor under the same ID fences the first, whose
// commit then fails with ErrFenced and leaves nothing behind.
func TestTransactorFenced(t *testing.T) {
	b := startKafka(t, 1, "src", "dst")
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	if err := produceTo(ctx, b, &kgo.Record{Topic: "src", Value: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	old := openTransactor(t, b.Addrs, "same", "src")
	defer old.Close()
	dst, err := old.OpenTopic("dst", nil)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := old.Poll(ctx, 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Begin(); err != nil {
		t.Fatal(err)
	}
	if _, err := SendInOrder(ctx, dst, []*pubsub.Message{{Body: ms[0].Body}}); err != nil {
		t.Fatal(err)
	}
	// The successor takes over the ID (its first transaction fences the old producer).
	next, err := OpenTransactor([]kgo.Opt{kgo.SeedBrokers(b.Addrs...)}, "other", []string{"src"},
		&TransactOptions{TransactionalID: "same"})
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if err := next.Begin(); err != nil {
		t.Fatal(err)
	}
	ndst, _ := next.OpenTopic("dst", nil)
	if _, err := SendInOrder(ctx, ndst, []*pubsub.Message{{Body: []byte("y")}}); err != nil {
		t.Fatal(err)
	}
	if ok, err := next.Commit(ctx); err != nil || !ok {
		t.Fatalf("successor commit: %v %v", ok, err)
	}
	ok, err := old.Commit(ctx)
	t.Logf("fenced commit: committed=%v err=%v", ok, err)
	if ok || !errors.Is(err, ErrFenced) {
		t.Fatalf("the fenced transactor's commit: committed=%v err=%v, want ErrFenced", ok, err)
	}
}
