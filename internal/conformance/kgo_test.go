package conformance

import (
	"context"
	"testing"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/devkafka"
)

// kgoHarness: a kfake broker per test, opened through pubcrypt's kgo:// opener (franz-go
// via package kgopubsub). Kafka keeps messages, so the subscription reads from the
// oldest offset.
type kgoHarness struct{ topic string }

func (h *kgoHarness) Name() string { return "kgo" }

func (h *kgoHarness) OpenTopic(ctx context.Context, t *testing.T) (*pubsub.Topic, string) {
	top, err := broker.OpenTopic(ctx, "kgo://"+h.topic)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = top.Shutdown(context.Background()) })
	return top, "kgo"
}

func (h *kgoHarness) OpenSubscription(ctx context.Context, t *testing.T) *pubsub.Subscription {
	sub, err := broker.OpenSubscription(ctx, "kgo://g-"+h.topic+"?topic="+h.topic+"&offset=oldest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Shutdown(context.Background()) })
	return sub
}

func TestConformanceKgo(t *testing.T) {
	RunConformance(t, vaultServer, func(t *testing.T) Harness {
		topic := resourceName(t)
		b, err := devkafka.Start(devkafka.Options{Topics: []string{topic}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		t.Setenv("KAFKA_BROKERS", b.Addrs[0])
		return &kgoHarness{topic: topic}
	})
}
