package broker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"gocloud.dev/pubsub"
)

// TestGather: on kafka:// (a real Kafka-protocol broker, kfake), whose gocloud driver
// hands messages over one at a time, a backlog is gathered in whole batches, in order,
// and a drained subscription ends its batch with what it has.
func TestGather(t *testing.T) {
	startKfake(t, "backlog")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	const n, batch = 450, 100
	top, err := OpenTopic(ctx, "kafka://backlog")
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := top.Send(ctx, &pubsub.Message{Body: fmt.Appendf(nil, "%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := top.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	sub, err := OpenSubscription(ctx, "kafka://g-gather?topic=backlog&offset=oldest")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Shutdown(context.Background())

	if got := Gather(ctx, sub, nil, 1); len(got) != 1 {
		t.Fatalf("Gather with max 1 returned %d messages, want the first alone", len(got))
	}
	var sizes []int
	next := 0
	for next < n {
		first, err := sub.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		msgs := Gather(ctx, sub, first, batch)
		sizes = append(sizes, len(msgs))
		for _, m := range msgs {
			if string(m.Body) != fmt.Sprint(next) {
				t.Fatalf("message %d is %q: out of order", next, m.Body)
			}
			m.Ack()
			next++
		}
	}
	t.Logf("batch sizes for a backlog of %d: %v", n, sizes)
	// The backlog was all in the topic, so batches are whole except where the machine
	// stalled for a whole Linger between two messages (on a loaded machine, sarama's next
	// fetch can take that long); a driver handed over one message per batch would make
	// hundreds.
	if len(sizes) > n/batch+3 {
		t.Fatalf("a backlog of %d came in batches of %v, want batches of %d", n, sizes, batch)
	}
}
