package conformance

import (
	"context"
	"testing"
	"time"

	"gocloud.dev/pubsub"
	"gocloud.dev/pubsub/awssnssqs"

	"github.com/pubcrypt/pubcrypt/internal/devbrokers"
)

// sqsHarness: one SQS queue of fauxqs, used as both topic and subscription through
// gocloud's awssqs URLs (the https:// queue URL gocloud derives from them is accepted by
// the launcher). SQS carries text only: gocloud base64-encodes pubcrypt's binary bodies
// and adds the "base64encoded" attribute, which counts in SQS's 10.
type sqsHarness struct {
	f    *devbrokers.Fauxqs
	name string
	qURL string
}

func (h *sqsHarness) Name() string { return "awssqs (fauxqs)" }

func (h *sqsHarness) OpenTopic(ctx context.Context, t *testing.T) (*pubsub.Topic, string) {
	var err error
	if h.qURL, _, err = h.f.CreateQueue(ctx, h.name, 0); err != nil {
		t.Fatal(err)
	}
	return openAWSTopic(ctx, t, h.f.SQSURL(h.qURL)), awssnssqs.SQSScheme
}

func (h *sqsHarness) OpenSubscription(ctx context.Context, t *testing.T) *pubsub.Subscription {
	return openAWSSubscription(ctx, t, h.f.SQSURL(h.qURL))
}

// snsHarness: an SNS topic of fauxqs fanning out to an SQS queue subscribed with raw
// message delivery, so the queue holds the body and attributes as published; pubcrypt
// sends on the topic (SNS's 256 KiB and 10 attributes apply) and reads the queue.
type snsHarness struct {
	f    *devbrokers.Fauxqs
	name string
	qURL string
}

func (h *snsHarness) Name() string { return "awssns→awssqs (fauxqs)" }

func (h *snsHarness) OpenTopic(ctx context.Context, t *testing.T) (*pubsub.Topic, string) {
	topicARN, err := h.f.CreateTopic(ctx, h.name)
	if err != nil {
		t.Fatal(err)
	}
	qURL, qARN, err := h.f.CreateQueue(ctx, h.name, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.f.SubscribeQueue(ctx, topicARN, qARN); err != nil {
		t.Fatal(err)
	}
	h.qURL = qURL
	return openAWSTopic(ctx, t, h.f.SNSURL(topicARN)), awssnssqs.SNSScheme
}

func (h *snsHarness) OpenSubscription(ctx context.Context, t *testing.T) *pubsub.Subscription {
	return openAWSSubscription(ctx, t, h.f.SQSURL(h.qURL)+"&raw=true")
}

func openAWSTopic(ctx context.Context, t *testing.T, u string) *pubsub.Topic {
	t.Helper()
	top, err := pubsub.OpenTopic(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = top.Shutdown(context.Background()) })
	return top
}

func openAWSSubscription(ctx context.Context, t *testing.T, u string) *pubsub.Subscription {
	t.Helper()
	sub, err := pubsub.OpenSubscription(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Shutdown(context.Background()) })
	return sub
}

// startFauxqs starts fauxqs for one test function, with credentials in the environment
// the way a deployment has them: the AWS SDK signs requests, fauxqs does not check them.
func startFauxqs(t *testing.T) *devbrokers.Fauxqs {
	t.Helper()
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f, err := devbrokers.StartFauxqs(ctx)
	if err != nil {
		t.Fatalf("cannot start fauxqs: %v", err)
	}
	t.Cleanup(f.Stop)
	t.Logf("fauxqs on %s, ready in %v", f.Endpoint, f.Startup.Round(time.Millisecond))
	return f
}

func TestConformanceSQS(t *testing.T) {
	f := startFauxqs(t)
	RunConformance(t, vaultServer, func(t *testing.T) Harness {
		return &sqsHarness{f: f, name: resourceName(t)}
	})
}

func TestConformanceSNSToSQS(t *testing.T) {
	f := startFauxqs(t)
	RunConformance(t, vaultServer, func(t *testing.T) Harness {
		return &snsHarness{f: f, name: resourceName(t)}
	})
}
