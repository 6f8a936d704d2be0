package conformance

import (
	"context"
	"testing"

	raw "cloud.google.com/go/pubsub/apiv1"
	pb "cloud.google.com/go/pubsub/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"gocloud.dev/pubsub"
	"gocloud.dev/pubsub/gcppubsub"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// gcpHarness: Google Pub/Sub's in-process fake (pstest) behind gocloud's gcppubsub
// driver, on clients built by the harness rather than through the URL opener, whose
// connection is made once per process from PUBSUB_EMULATOR_HOST. The topic and the
// subscription are created with the admin API first, as on the real service.
type gcpHarness struct {
	pub *raw.PublisherClient
	sub *raw.SubscriberClient
	top string // topic name
}

const gcpProject = "pubcrypt-conformance"

func (h *gcpHarness) Name() string { return "gcppubsub (pstest)" }

func (h *gcpHarness) OpenTopic(ctx context.Context, t *testing.T) (*pubsub.Topic, string) {
	if _, err := h.pub.CreateTopic(ctx, &pb.Topic{Name: "projects/" + gcpProject + "/topics/" + h.top}); err != nil {
		t.Fatal(err)
	}
	top := gcppubsub.OpenTopic(h.pub, gcpProject, h.top, nil)
	t.Cleanup(func() { _ = top.Shutdown(context.Background()) })
	return top, gcppubsub.Scheme
}

func (h *gcpHarness) OpenSubscription(ctx context.Context, t *testing.T) *pubsub.Subscription {
	_, err := h.sub.CreateSubscription(ctx, &pb.Subscription{
		Name:               "projects/" + gcpProject + "/subscriptions/" + h.top,
		Topic:              "projects/" + gcpProject + "/topics/" + h.top,
		AckDeadlineSeconds: 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	sub := gcppubsub.OpenSubscription(h.sub, gcpProject, h.top, nil)
	t.Cleanup(func() { _ = sub.Shutdown(context.Background()) })
	return sub
}

func TestConformanceGCPPubSub(t *testing.T) {
	RunConformance(t, vaultServer, func(t *testing.T) Harness {
		srv := pstest.NewServer()
		t.Cleanup(func() { _ = srv.Close() })
		conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		ctx := context.Background()
		pub, err := gcppubsub.PublisherClient(ctx, conn)
		if err != nil {
			t.Fatal(err)
		}
		sub, err := gcppubsub.SubscriberClient(ctx, conn)
		if err != nil {
			t.Fatal(err)
		}
		return &gcpHarness{pub: pub, sub: sub, top: resourceName(t)}
	})
}
