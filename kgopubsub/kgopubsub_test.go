package kgopubsub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"gocloud.dev/pubsub"
	"gocloud.dev/pubsub/driver"

	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/devkafka"
)

// hang bounds each test: a hang fails it, a slow machine does not.
const hang = 2 * time.Minute

func startKafka(t *testing.T, partitions int32, topics ...string) *devkafka.Broker {
	t.Helper()
	b, err := devkafka.Start(devkafka.Options{Topics: topics, Partitions: partitions})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func openTopic(t *testing.T, b *devkafka.Broker, name string, opts TopicOptions) *pubsub.Topic {
	t.Helper()
	o := &URLOpener{Opts: []kgo.Opt{kgo.SeedBrokers(b.Addrs...)}, TopicOptions: opts}
	if err := opts.validate(); err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(append(producerOpts(opts), o.Opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	top := newTopic(cl, true, name, opts)
	t.Cleanup(func() { _ = top.Shutdown(context.Background()) })
	return top
}

func openSub(t *testing.T, b *devkafka.Broker, group string, opts SubscriptionOptions, topics ...string) *pubsub.Subscription {
	t.Helper()
	opts.Oldest = true
	sub, err := OpenSubscription([]kgo.Opt{kgo.SeedBrokers(b.Addrs...)}, group, topics, &opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Shutdown(context.Background()) })
	return sub
}

func record(t *testing.T, m *pubsub.Message) *kgo.Record {
	t.Helper()
	var r *kgo.Record
	if !m.As(&r) || r == nil {
		t.Fatal("message As(**kgo.Record) failed")
	}
	return r
}

// TestKeyRoundTrip: 10,000 records with 50 keys over 6 partitions, the key from a
// metadata entry or from a JSON field. Every record's key is back (in the metadata for
// key_name), the records of a key are all on one partition and in the order they were
// sent (each key's sender sends in sequence; the keys' senders run concurrently).
func TestKeyRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts TopicOptions
	}{
		{"key_name", TopicOptions{KeyName: "user"}},
		{"key_field", TopicOptions{KeyField: "user.id"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n, keys = 10000, 50
			ctx, cancel := context.WithTimeout(context.Background(), hang)
			defer cancel()
			b := startKafka(t, 6, "keys")
			top := openTopic(t, b, "keys", tc.opts)
			var wg sync.WaitGroup
			errs := make(chan error, keys)
			for k := range keys {
				wg.Go(func() {
					key := fmt.Sprintf("u%d", k)
					for seq := k; seq < n; seq += keys {
						body, _ := json.Marshal(map[string]any{"user": map[string]any{"id": key}, "seq": seq})
						m := &pubsub.Message{Body: body, Metadata: map[string]string{"seq": strconv.Itoa(seq)}}
						if tc.opts.KeyName != "" {
							m.Metadata["user"] = key
						}
						if err := top.Send(ctx, m); err != nil {
							errs <- fmt.Errorf("send %d: %w", seq, err)
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}

			sub := openSub(t, b, "g-keys", SubscriptionOptions{KeyName: tc.opts.KeyName}, "keys")
			partOf := map[string]int32{}
			lastSeq := map[string]int{}
			parts := map[int32]int{}
			for range n {
				m, err := sub.Receive(ctx)
				if err != nil {
					t.Fatal(err)
				}
				m.Ack()
				r := record(t, m)
				key := string(r.Key)
				var body struct {
					User struct{ ID string }
					Seq  int
				}
				if err := json.Unmarshal(m.Body, &body); err != nil {
					t.Fatal(err)
				}
				if key != body.User.ID {
					t.Fatalf("record %d: key %q, want %q", body.Seq, key, body.User.ID)
				}
				if tc.opts.KeyName != "" && m.Metadata["user"] != key {
					t.Fatalf("record %d: metadata key entry %q, want %q", body.Seq, m.Metadata["user"], key)
				}
				if m.Metadata["seq"] != strconv.Itoa(body.Seq) {
					t.Fatalf("record %d: header seq=%q", body.Seq, m.Metadata["seq"])
				}
				if p, ok := partOf[key]; ok && p != r.Partition {
					t.Fatalf("key %s on partitions %d and %d", key, p, r.Partition)
				}
				partOf[key] = r.Partition
				parts[r.Partition]++
				if last, ok := lastSeq[key]; ok && body.Seq < last {
					t.Fatalf("key %s: record %d after %d", key, body.Seq, last)
				}
				lastSeq[key] = body.Seq
			}
			if len(parts) != 6 {
				t.Errorf("records on %d partitions, want 6: %v", len(parts), parts)
			}
			t.Logf("%d records, %d keys, per partition %v", n, len(partOf), parts)
		})
	}
}

// TestSendBatchOrder: one driver batch of 2,000 records of one key reaches its partition
// in the batch's order.
func TestSendBatchOrder(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	b := startKafka(t, 6, "order")
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addrs...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	dt := &topic{cl: cl, name: "order", opts: TopicOptions{KeyName: "k"}}
	const n = 2000
	dms := make([]*driver.Message, n)
	for i := range dms {
		dms[i] = &driver.Message{Body: []byte(strconv.Itoa(i)), Metadata: map[string]string{"k": "same"}}
	}
	if err := dt.SendBatch(ctx, dms); err != nil {
		t.Fatal(err)
	}
	rs, err := b.ReadRaw(ctx, "order", n)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rs {
		if string(r.Value) != strconv.Itoa(i) {
			t.Fatalf("record %d on partition %d is %s", i, r.Partition, r.Value)
		}
	}
}

// TestKafkaPartitioning: keyed records land where the Java client puts them,
// murmur2(key) & 0x7fffffff mod partitions, with the murmur2 values of Kafka's own
// UtilsTest.testMurmur2.
func TestKafkaPartitioning(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	b := startKafka(t, 6, "hash")
	top := openTopic(t, b, "hash", TopicOptions{KeyName: "k"})
	javaMurmur2 := map[string]int32{
		"21":                         -973932308,
		"foobar":                     -790332482,
		"a-little-bit-long-string":   -985981536,
		"a-little-bit-longer-string": -1486304829,
		"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107,
	}
	for k := range javaMurmur2 {
		if err := top.Send(ctx, &pubsub.Message{Body: []byte(k), Metadata: map[string]string{"k": k}}); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := b.ReadRaw(ctx, "hash", len(javaMurmur2))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		want := int32((uint32(javaMurmur2[string(r.Key)]) & 0x7fffffff) % 6)
		if r.Partition != want {
			t.Errorf("key %q on partition %d, Kafka's partitioner puts it on %d", r.Key, r.Partition, want)
		}
	}
}

// TestKeyFieldMissing: a message without the key field is refused as a fault of the
// message, and the next message still goes.
func TestKeyFieldMissing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	b := startKafka(t, 1, "nokey")
	top := openTopic(t, b, "nokey", TopicOptions{KeyField: "user.id"})
	for _, body := range []string{`{"user":{}}`, `not json`, `{"user":{"id":{"a":1}}}`, `{"user":{"id":null}}`} {
		err := top.Send(ctx, &pubsub.Message{Body: []byte(body)})
		var ke *KeyError
		if !errors.As(err, &ke) || !fault.IsMessage(err) {
			t.Errorf("body %s: error %v, want a *KeyError of class message", body, err)
		}
	}
	if err := top.Send(ctx, &pubsub.Message{Body: []byte(`{"user":{"id":42}}`)}); err != nil {
		t.Fatal(err)
	}
	rs, err := b.ReadRaw(ctx, "nokey", 1)
	if err != nil {
		t.Fatal(err)
	}
	if string(rs[0].Key) != "42" {
		t.Errorf("key %q, want 42", rs[0].Key)
	}
}

// TestNack: a nacked record comes back, ahead of the records of its partition the driver
// still holds, and the group commits past it once it is acked.
func TestNack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	b := startKafka(t, 1, "nack")
	top := openTopic(t, b, "nack", TopicOptions{})
	for i := range 3 {
		if err := top.Send(ctx, &pubsub.Message{Body: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}

	// The driver: 0 is nacked and delivered again before 1 and 2.
	ds, err := openSubscription([]kgo.Opt{kgo.SeedBrokers(b.Addrs...)}, "g-nack-driver", []string{"nack"}, &SubscriptionOptions{Oldest: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	if !ds.CanNack() {
		t.Fatal("CanNack is false")
	}
	var first []*driver.Message
	for len(first) == 0 {
		if first, err = ds.ReceiveBatch(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	if string(first[0].Body) != "0" {
		t.Fatalf("first record %s", first[0].Body)
	}
	if err := ds.SendNacks(ctx, []driver.AckID{first[0].AckID}); err != nil {
		t.Fatal(err)
	}
	var got []string
	var ids []driver.AckID
	for len(got) < 3 {
		ms, err := ds.ReceiveBatch(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			got = append(got, string(m.Body))
			ids = append(ids, m.AckID)
		}
	}
	if fmt.Sprint(got) != "[0 1 2]" {
		t.Fatalf("after a nack of 0: %v, want [0 1 2]", got)
	}
	if err := ds.SendAcks(ctx, ids); err != nil {
		t.Fatal(err)
	}
	waitCommitted(ctx, t, b, "g-nack-driver", "nack", 0, 3)

	// Through gocloud, which may hold 1 and 2 already: 0 comes back after them at worst.
	sub := openSub(t, b, "g-nack", SubscriptionOptions{}, "nack")
	m0, err := sub.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m0.Nack()
	seen := map[string]int{}
	for len(seen) < 3 || seen["0"] < 1 {
		m, err := sub.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		seen[string(m.Body)]++
		m.Ack()
	}
	if err := Commit(ctx, sub, nil); err != nil {
		t.Fatal(err)
	}
	waitCommitted(ctx, t, b, "g-nack", "nack", 0, 3)
}

func waitCommitted(ctx context.Context, t *testing.T, b *devkafka.Broker, group, topic string, p int32, want int64) {
	t.Helper()
	var got int64
	for ctx.Err() == nil {
		var err error
		if got, err = b.CommittedOffset(ctx, group, topic, p); err == nil && got == want {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("group %s committed %d on %s/%d, want %d", group, got, topic, p, want)
}

// TestCommitContiguous: with a record of partition 0 left unacked, the subscription
// commits up to it there and everything on partition 1; a new member of the group after
// Close gets partition 0 again from the unacked record, and nothing of partition 1.
func TestCommitContiguous(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	b := startKafka(t, 2, "gap")
	rs := make([]*kgo.Record, 0, 20)
	for i := range 20 {
		rs = append(rs, &kgo.Record{Topic: "gap", Partition: int32(i % 2), Value: []byte(strconv.Itoa(i))})
	}
	if err := produceTo(ctx, b, rs...); err != nil {
		t.Fatal(err)
	}
	sub := openSub(t, b, "g-gap", SubscriptionOptions{}, "gap")
	var gap int64 = -1
	for range 20 {
		m, err := sub.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		r := record(t, m)
		if r.Partition == 0 && r.Offset == 4 {
			gap = r.Offset // left unacked
			continue
		}
		m.Ack()
	}
	if gap < 0 {
		t.Fatal("record 4 of partition 0 not received")
	}
	if err := sub.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	waitCommitted(ctx, t, b, "g-gap", "gap", 0, 4)
	waitCommitted(ctx, t, b, "g-gap", "gap", 1, 10)

	again := openSub(t, b, "g-gap", SubscriptionOptions{}, "gap")
	var got []string
	for range 6 {
		m, err := again.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		r := record(t, m)
		if r.Partition != 0 {
			t.Fatalf("partition 1 offset %d delivered again though acked and committed", r.Offset)
		}
		got = append(got, strconv.FormatInt(r.Offset, 10))
		m.Ack()
	}
	if fmt.Sprint(got) != "[4 5 6 7 8 9]" {
		t.Fatalf("partition 0 after the restart: offsets %v, want [4 5 6 7 8 9]", got)
	}
}

func endOffsets(ctx context.Context, b *devkafka.Broker, topic string) (map[int32]int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addrs...))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	out := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out, err
}

func produceTo(ctx context.Context, b *devkafka.Broker, rs ...*kgo.Record) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addrs...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		return err
	}
	defer cl.Close()
	return cl.ProduceSync(ctx, rs...).FirstErr()
}

// TestRebalance: two members of one group share a 6-partition topic, the second joining
// after a third of the records and the first leaving at two thirds; every record is
// received and acked, the group ends committed at the end of every partition, and each
// member's records of a partition come in offset order.
func TestRebalance(t *testing.T) {
	const n = 3000
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	b := startKafka(t, 6, "reb")
	top := openTopic(t, b, "reb", TopicOptions{KeyName: "k"})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := top.Send(ctx, &pubsub.Message{Body: []byte(strconv.Itoa(i)), Metadata: map[string]string{"k": strconv.Itoa(i % 97)}}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	var mu sync.Mutex
	seen := map[string]int{}
	share := map[string]int{}
	consume := func(name string, sub *pubsub.Subscription, stop func(int) bool) {
		last := map[int32]int64{}
		for {
			mu.Lock()
			total := len(seen)
			done := total == n || stop(total) // stop runs under mu
			mu.Unlock()
			if done {
				return
			}
			rctx, rcancel := context.WithTimeout(ctx, 200*time.Millisecond)
			m, err := sub.Receive(rctx)
			rcancel()
			if err != nil {
				if ctx.Err() != nil {
					t.Errorf("%s: %v", name, err)
					return
				}
				continue
			}
			r := record(t, m)
			if prev, ok := last[r.Partition]; ok && r.Offset <= prev {
				// A partition that came back after a revoke restarts at its commit.
				t.Logf("%s: partition %d from offset %d again after %d", name, r.Partition, r.Offset, prev)
			}
			last[r.Partition] = r.Offset
			mu.Lock()
			seen[string(m.Body)]++
			share[name]++
			mu.Unlock()
			m.Ack()
			time.Sleep(time.Millisecond) // a consumer that works: the rebalance happens mid-stream
		}
	}
	a := openSub(t, b, "g-reb", SubscriptionOptions{ReadAhead: 100}, "reb")
	var bsub *pubsub.Subscription
	consume("a", a, func(total int) bool { return total >= n/3 })
	bsub = openSub(t, b, "g-reb", SubscriptionOptions{ReadAhead: 100}, "reb")
	var cw sync.WaitGroup
	cw.Go(func() {
		// a stays until b has had a share: both members then own partitions.
		consume("a", a, func(total int) bool { return total >= 2*n/3 && share["b"] > 0 })
		if err := a.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	cw.Go(func() { consume("b", bsub, func(int) bool { return false }) })
	cw.Wait()
	// Acks that reached a after its partitions were revoked were ignored: b gets those
	// records again. Drain until nothing comes for a second.
	for {
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		m, err := bsub.Receive(rctx)
		rcancel()
		if err != nil {
			break
		}
		mu.Lock()
		seen[string(m.Body)]++
		mu.Unlock()
		m.Ack()
	}
	if len(seen) != n {
		t.Fatalf("%d of %d records received", len(seen), n)
	}
	dups := 0
	for _, c := range seen {
		dups += c - 1
	}
	if err := bsub.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	ends, err := endOffsets(ctx, b, "reb")
	if err != nil {
		t.Fatal(err)
	}
	for p, end := range ends {
		waitCommitted(ctx, t, b, "g-reb", "reb", p, end)
	}
	t.Logf("%d records, %d received twice (at-least-once across the rebalances), shares %v", n, dups, share)
}

// TestRecordPartitioner: with partitioner=record each record goes to the partition its
// BeforeSend names, modulo the topic's partitions, in the order of SendInOrder.
func TestRecordPartitioner(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	b := startKafka(t, 6, "pinned")
	top := openTopic(t, b, "pinned", TopicOptions{Partitioner: PartitionerRecord})
	var msgs []*pubsub.Message
	for i := range 60 {
		want := int32(i % 9) // 6, 7, 8 wrap to 0, 1, 2
		msgs = append(msgs, &pubsub.Message{Body: []byte(strconv.Itoa(i)), BeforeSend: func(as func(any) bool) error {
			var r *kgo.Record
			if as(&r) {
				r.Partition = want
			}
			return nil
		}})
	}
	if ok, err := SendInOrder(ctx, top, msgs); !ok || err != nil {
		t.Fatalf("SendInOrder = %v, %v", ok, err)
	}
	rs, err := b.ReadRaw(ctx, "pinned", len(msgs))
	if err != nil {
		t.Fatal(err)
	}
	last := map[int32]int{}
	for _, r := range rs {
		i, _ := strconv.Atoi(string(r.Value))
		if want := int32(i%9) % 6; r.Partition != want {
			t.Errorf("record %d on partition %d, want %d", i, r.Partition, want)
		}
		if prev, ok := last[r.Partition]; ok && i < prev {
			t.Errorf("partition %d: record %d after %d", r.Partition, i, prev)
		}
		last[r.Partition] = i
	}
	if err := (TopicOptions{Partitioner: "random"}).validate(); err == nil {
		t.Error("an unknown partitioner was accepted")
	}
	var other *pubsub.Topic
	if ok, _ := SendInOrder(ctx, other, msgs); ok {
		t.Error("SendInOrder claimed a nil topic")
	}
}
