package conformance

import (
	"context"
	"testing"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/devkafka"
)

// kafkaHarness: a kfake broker per test, opened through pubcrypt's own kafka:// opener
// (sarama via gocloud's kafkapubsub). Kafka keeps messages, so the subscription reads
// from the oldest offset.
type kafkaHarness struct{ topic string }

func (h *kafkaHarness) Name() string { return "kafka" }

func (h *kafkaHarness) OpenTopic(ctx context.Context, t *testing.T) (*pubsub.Topic, string) {
	top, err := broker.OpenTopic(ctx, "kafka://"+h.topic)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = top.Shutdown(context.Background()) })
	return top, "kafka"
}

func (h *kafkaHarness) OpenSubscription(ctx context.Context, t *testing.T) *pubsub.Subscription {
	sub, err := broker.OpenSubscription(ctx, "kafka://g-"+h.topic+"?topic="+h.topic+"&offset=oldest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Shutdown(context.Background()) })
	return sub
}

func TestConformanceKafka(t *testing.T) {
	RunConformance(t, vaultServer, func(t *testing.T) Harness {
		topic := resourceName(t)
		b, err := devkafka.Start(devkafka.Options{Topics: []string{topic}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		t.Setenv("KAFKA_BROKERS", b.Addrs[0])
		return &kafkaHarness{topic: topic}
	})
}
