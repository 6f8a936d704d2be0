package conformance

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"gocloud.dev/pubsub"
	"gocloud.dev/pubsub/natspubsub"
)

// natsHarness: an embedded NATS server and gocloud's natspubsub with native headers
// (the V2 constructors, ?natsv2=true by URL). Core NATS keeps nothing and offers no Nack;
// the suite opens the subscription before sending.
type natsHarness struct {
	nc      *nats.Conn
	subject string
}

func (h *natsHarness) Name() string { return "nats" }

func (h *natsHarness) OpenTopic(ctx context.Context, t *testing.T) (*pubsub.Topic, string) {
	top, err := natspubsub.OpenTopicV2(h.nc, h.subject, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = top.Shutdown(context.Background()) })
	return top, "nats"
}

func (h *natsHarness) OpenSubscription(ctx context.Context, t *testing.T) *pubsub.Subscription {
	sub, err := natspubsub.OpenSubscriptionV2(h.nc, h.subject, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Shutdown(context.Background()) })
	if err := h.nc.Flush(); err != nil { // the server knows the subscription before any send
		t.Fatal(err)
	}
	return sub
}

func TestConformanceNATS(t *testing.T) {
	RunConformance(t, vaultServer, func(t *testing.T) Harness {
		ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true})
		if err != nil {
			t.Fatal(err)
		}
		go ns.Start()
		t.Cleanup(ns.Shutdown)
		if !ns.ReadyForConnections(10 * time.Second) {
			t.Fatal("embedded NATS server not ready")
		}
		nc, err := nats.Connect(ns.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return &natsHarness{nc: nc, subject: resourceName(t)}
	})
}
