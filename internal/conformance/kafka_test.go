package conformance

import (
	"context"
	"testing"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/devkafka"
)

// kafkaHarness: a kfake broker per test, opened through one of pubcrypt's Kafka openers:
// scheme kafka (sarama via gocloud's kafkapubsub) or kgo (franz-go via package
// kgopubsub). Kafka keeps messages, so the subscription reads from the oldest offset.
type kafkaHarness struct{ scheme, topic string }

func (h *kafkaHarness) Name() string { return h.scheme }

func (h *kafkaHarness) OpenTopic(ctx context.Context, t *testing.T) (*pubsub.Topic, string) {
	top, err := broker.OpenTopic(ctx, h.scheme+"://"+h.topic)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = top.Shutdown(context.Background()) })
	return top, h.scheme
}

func (h *kafkaHarness) OpenSubscription(ctx context.Context, t *testing.T) *pubsub.Subscription {
	sub, err := broker.OpenSubscription(ctx, h.scheme+"://g-"+h.topic+"?topic="+h.topic+"&offset=oldest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Shutdown(context.Background()) })
	return sub
}

// runKafkaConformance runs the suite on a fresh kfake broker per test, through scheme.
func runKafkaConformance(t *testing.T, scheme string) {
	RunConformance(t, vaultServer, func(t *testing.T) Harness {
		topic := resourceName(t)
		b, err := devkafka.Start(devkafka.Options{Topics: []string{topic}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		t.Setenv("KAFKA_BROKERS", b.Addrs[0])
		return &kafkaHarness{scheme: scheme, topic: topic}
	})
}

func TestConformanceKafka(t *testing.T) { runKafkaConformance(t, "kafka") }
