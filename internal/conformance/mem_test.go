package conformance

import (
	"context"
	"testing"

	"gocloud.dev/pubsub"
	_ "gocloud.dev/pubsub/mempubsub"
)

// memHarness: gocloud's in-memory broker. The topic must exist before the subscription.
type memHarness struct{ url string }

func (h *memHarness) Name() string { return "mem" }

func (h *memHarness) OpenTopic(ctx context.Context, t *testing.T) (*pubsub.Topic, string) {
	top, err := pubsub.OpenTopic(ctx, h.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = top.Shutdown(context.Background()) })
	return top, "mem"
}

func (h *memHarness) OpenSubscription(ctx context.Context, t *testing.T) *pubsub.Subscription {
	sub, err := pubsub.OpenSubscription(ctx, h.url+"?ackdeadline=1s")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Shutdown(context.Background()) })
	return sub
}

func TestConformanceMem(t *testing.T) {
	RunConformance(t, vaultServer, func(t *testing.T) Harness {
		return &memHarness{url: "mem://" + resourceName(t)}
	})
}
