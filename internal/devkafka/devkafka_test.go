package devkafka_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/devkafka"
	"github.com/twmb/franz-go/pkg/kgo"
	"gocloud.dev/pubsub"
	"gocloud.dev/pubsub/kafkapubsub"
)

// hang bounds each wait: a hang fails the test, a slow machine does not.
const hang = 60 * time.Second

// saramaConfig is the client configuration pubcrypt itself uses for Kafka, with new
// groups reading from the start.
func saramaConfig(t *testing.T, addrs []string) *sarama.Config {
	t.Helper()
	cfg, err := broker.KafkaSettings{Brokers: addrs}.SaramaConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	return cfg
}

func send(ctx context.Context, t *testing.T, top *pubsub.Topic, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if err := top.Send(ctx, &pubsub.Message{Body: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
}

// receive receives until it has seen every body in [from, to) and returns how many
// messages it took (more than to-from means duplicates).
func receive(ctx context.Context, t *testing.T, sub *pubsub.Subscription, from, to int) int {
	t.Helper()
	seen := map[int]bool{}
	n := 0
	for len(seen) < to-from {
		m, err := sub.Receive(ctx)
		if err != nil {
			t.Fatalf("receive (%d of [%d,%d) seen): %v", len(seen), from, to, err)
		}
		m.Ack()
		n++
		i, err := strconv.Atoi(string(m.Body))
		if err != nil || i >= to {
			t.Fatalf("unexpected message %q", m.Body)
		}
		if i >= from {
			seen[i] = true
		}
	}
	return n
}

// waitCommitted waits until group has committed at least want on topic/0: sarama commits
// marked offsets in the background, about once a second.
func waitCommitted(ctx context.Context, t *testing.T, b *devkafka.Broker, group, topic string, want int64) {
	t.Helper()
	for {
		off, err := b.CommittedOffset(ctx, group, topic, 0)
		if err == nil && off >= want {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("group %s did not commit offset %d on %s: last %d, %v", group, want, topic, off, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestRestartKeepsRecordsAndOffsets restarts a broker with a DataDir under an open
// kafkapubsub topic and subscription and checks what survives: every record, the
// group's committed offset, and both clients, which carry on by themselves.
func TestRestartKeepsRecordsAndOffsets(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	const topic, group = "restart", "g1"
	b, err := devkafka.Start(devkafka.Options{Topics: []string{topic}, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	addr := b.Addrs[0]

	cfg := saramaConfig(t, b.Addrs)
	top, err := kafkapubsub.OpenTopic(b.Addrs, cfg, topic, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer top.Shutdown(context.Background())
	sub, err := kafkapubsub.OpenSubscription(b.Addrs, cfg, group, []string{topic}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { sub.Shutdown(context.Background()) }()

	send(ctx, t, top, 0, 100)
	if n := receive(ctx, t, sub, 0, 50); n != 50 {
		t.Fatalf("received %d messages for 50", n)
	}
	waitCommitted(ctx, t, b, group, topic, 50)

	start := time.Now()
	if err := b.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("broker restarted in %v", time.Since(start))
	if b.Addrs[0] != addr {
		t.Fatalf("address changed across restart: %s -> %s", addr, b.Addrs[0])
	}
	if off, err := b.CommittedOffset(ctx, group, topic, 0); err != nil || off < 50 {
		t.Fatalf("committed offset after restart = %d, %v; want ≥ 50", off, err)
	}
	raw, err := b.ReadRaw(ctx, topic, 100)
	if err != nil {
		t.Fatalf("records after restart: %v", err)
	}
	for i, r := range raw {
		if string(r.Value) != strconv.Itoa(i) || r.Offset != int64(i) {
			t.Fatalf("record %d after restart: offset %d value %q", i, r.Offset, r.Value)
		}
	}

	// The same producer and consumer group go on: the producer's first sends may fail
	// while sarama notices its connection died (a caller retries), then it delivers.
	start = time.Now()
	var sendErrs int
	for i := 100; i < 150; i++ {
		for {
			err := top.Send(ctx, &pubsub.Message{Body: []byte(strconv.Itoa(i))})
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("send %d after restart: %v", i, err)
			}
			sendErrs++
			if sendErrs > 50 {
				t.Fatalf("send %d after restart: still failing: %v", i, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	t.Logf("producer after restart: 50 sent in %v, %d failed sends retried", time.Since(start), sendErrs)
	start = time.Now()
	n := receive(ctx, t, sub, 50, 150)
	t.Logf("consumer group after restart: 100 received in %v, %d messages (%d duplicates)", time.Since(start), n, n-100)
	waitCommitted(ctx, t, b, group, topic, 150)

	// A new subscription in the same group after a second restart starts at the
	// committed offset: nothing is read twice.
	if err := sub.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	send(ctx, t, top, 150, 160)
	sub, err = kafkapubsub.OpenSubscription(b.Addrs, cfg, group, []string{topic}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := receive(ctx, t, sub, 150, 160); n != 10 {
		t.Errorf("a new member of the group read %d messages for the 10 new ones", n)
	}
}

// TestRestartWithoutDataDir: a broker without DataDir comes back empty, with its topics.
func TestRestartWithoutDataDir(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	b, err := devkafka.Start(devkafka.Options{Topics: []string{"t"}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.ProduceRaw(ctx, &kgo.Record{Topic: "t", Value: []byte("lost")}); err != nil {
		t.Fatal(err)
	}
	b.Stop()
	b.Stop() // twice is fine
	if b.Cluster() != nil {
		t.Error("Cluster() of a stopped broker is not nil")
	}
	if err := b.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.ProduceRaw(ctx, &kgo.Record{Topic: "t", Value: []byte("new")}); err != nil {
		t.Fatal(err)
	}
	raw, err := b.ReadRaw(ctx, "t", 1)
	if err != nil || string(raw[0].Value) != "new" || raw[0].Offset != 0 {
		t.Fatalf("first record after a restart without DataDir: %v, %v", raw, err)
	}
}

// TestFaultProxy checks that every connection goes through the proxy (the broker
// advertises it) and that a silent broker holds requests until it answers again.
func TestFaultProxy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	b, err := devkafka.Start(devkafka.Options{Topics: []string{"t"}, FaultProxy: true, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	p := b.Proxy()
	if b.Addrs[0] != p.Addr() {
		t.Fatalf("Addrs = %v, want the proxy %s", b.Addrs, p.Addr())
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addrs...), kgo.RecordRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	produce := func(timeout time.Duration, v string) error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return cl.ProduceSync(ctx, &kgo.Record{Topic: "t", Value: []byte(v)}).FirstErr()
	}
	if err := produce(hang, "0"); err != nil {
		t.Fatal(err)
	}
	// kgo opens one connection for metadata and others for produce: the proxy saw them
	// all, so none went around it to the broker's own port.
	if n := p.Accepted(); n < 2 {
		t.Errorf("proxy accepted %d connections, want the bootstrap one and the produce one", n)
	}

	// Silent: a new client's first request gets no answer (kgo's Ping honours its
	// context, where an in-flight produce waits for its answer), and the producer's
	// send waits; both go on once the broker answers again.
	p.Silent()
	sent := make(chan error, 1)
	go func() { sent <- produce(hang, "1") }()
	fresh, err := kgo.NewClient(kgo.SeedBrokers(b.Addrs...))
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	pingCtx, pingCancel := context.WithTimeout(ctx, 500*time.Millisecond)
	err = fresh.Ping(pingCtx)
	pingCancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ping of a silent broker: %v, want a deadline", err)
	}
	select {
	case err := <-sent:
		t.Fatalf("produce to a silent broker returned: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	p.Pass()
	if err := <-sent; err != nil {
		t.Fatalf("produce held by a silent broker, after it answers again: %v", err)
	}
	if err := fresh.Ping(ctx); err != nil {
		t.Fatalf("ping after the broker answers again: %v", err)
	}
	if err := produce(hang, "2"); err != nil {
		t.Fatalf("produce after the broker answers again: %v", err)
	}

	// Behind the proxy a restart keeps the address too.
	if err := b.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if b.Addrs[0] != p.Addr() {
		t.Fatalf("Addrs after restart = %v", b.Addrs)
	}
	var err2 error
	for i := 0; i < 50; i++ { // the client finds out its connections were reset
		if err2 = produce(hang, "3"); err2 == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err2 != nil {
		t.Fatalf("produce after restart behind the proxy: %v", err2)
	}
	raw, err := b.ReadRaw(ctx, "t", 4)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range raw {
		got = append(got, string(r.Value))
	}
	if fmt.Sprint(got) != "[0 1 2 3]" {
		t.Errorf("records after silence and restart: %v, want [0 1 2 3]", got)
	}
}
