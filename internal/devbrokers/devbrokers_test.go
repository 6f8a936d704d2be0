package devbrokers_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/pubcrypt/pubcrypt/internal/devbrokers"
)

// Both servers must listen on loopback only, and be gone after Stop.
func checkStopped(t *testing.T, hostPort string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", hostPort, 200*time.Millisecond)
		if err != nil {
			return
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("%s still accepts connections after Stop", hostPort)
		}
	}
}

func TestPubSubEmulator(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e, err := devbrokers.StartPubSubEmulator(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	t.Logf("Pub/Sub emulator on %s, ready in %v", e.HostPort, e.Startup.Round(time.Millisecond))
	if !strings.HasPrefix(e.HostPort, "127.0.0.1:") {
		t.Errorf("HostPort %q, want 127.0.0.1:PORT", e.HostPort)
	}
	if err := e.CreateTopic(ctx, "proj", "topic"); err != nil {
		t.Fatal(err)
	}
	if err := e.CreateSubscription(ctx, "proj", "sub", "topic", 0); err != nil {
		t.Fatal(err)
	}
	if err := e.CreateTopic(ctx, "proj", "topic"); err == nil {
		t.Error("creating a topic twice succeeded")
	}
	e.Stop()
	e.Stop()
	checkStopped(t, e.HostPort)
}

func TestFauxqs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f, err := devbrokers.StartFauxqs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	t.Logf("fauxqs on %s, ready in %v", f.Endpoint, f.Startup.Round(time.Millisecond))
	qURL, qARN, err := f.CreateQueue(ctx, "q", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(qURL, f.Endpoint+"/") || !strings.HasSuffix(qARN, ":q") {
		t.Errorf("queue %s, %s", qURL, qARN)
	}
	tARN, err := f.CreateTopic(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.SubscribeQueue(ctx, tARN, qARN); err != nil {
		t.Fatal(err)
	}
	// The https:// form gocloud makes of a queue URL reaches the same queue.
	c := sqs.New(sqs.Options{Region: devbrokers.Region, BaseEndpoint: aws.String(f.Endpoint), Credentials: aws.AnonymousCredentials{}})
	https := "https://" + strings.TrimPrefix(qURL, "http://")
	if _, err := c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(https), MessageBody: aws.String("hi")}); err != nil {
		t.Fatalf("send to %s: %v", https, err)
	}
	out, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(qURL)})
	if err != nil || len(out.Messages) != 1 || aws.ToString(out.Messages[0].Body) != "hi" {
		t.Fatalf("receive: %v, %+v", err, out)
	}
	hostPort := strings.TrimPrefix(f.Endpoint, "http://")
	f.Stop()
	f.Stop()
	checkStopped(t, hostPort)
}
