package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/fault"
)

// silentListener accepts TCP connections and never answers, like a broker that hangs.
func silentListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				_ = c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	return ln.Addr().String()
}

// TestOpenSilentBrokerIsBounded: an address that accepts TCP and never answers fails an
// open after Options.Timeout with an environment fault, and a cancelled context ends an
// open at once (kafkapubsub itself connects without a context).
func TestOpenSilentBrokerIsBounded(t *testing.T) {
	clearKafkaEnv(t)
	t.Setenv(EnvKafkaBrokers, silentListener(t))

	start := time.Now()
	_, err := OpenTopicWith(context.Background(), "kafka://purchases", Options{Timeout: 2 * time.Second})
	took := time.Since(start)
	if err == nil {
		t.Fatal("open on a silent broker succeeded")
	}
	if !errors.Is(err, context.DeadlineExceeded) || fault.ClassOf(err) != fault.Environment {
		t.Fatalf("err = %v (class %v), want a deadline that is an environment fault", err, fault.ClassOf(err))
	}
	if took > 10*time.Second {
		t.Fatalf("open took %v with a 2s timeout", took)
	}
	t.Logf("silent broker, topic: %v after %v", err, took.Round(time.Millisecond))

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	start = time.Now()
	_, err = OpenSubscriptionWith(ctx, "kafka://g?topic=purchases", Options{})
	took = time.Since(start)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if took > 5*time.Second {
		t.Fatalf("a cancelled open returned after %v", took)
	}
	t.Logf("silent broker, subscription cancelled after 300ms: returned after %v", took.Round(time.Millisecond))
}

// TestOpenMissingTopic: a topic that does not exist is an error at open, for a topic and
// for a subscription, instead of a stall at the first send or receive.
func TestOpenMissingTopic(t *testing.T) {
	startKfake(t, "present")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := OpenTopic(ctx, "kafka://absent"); !errors.Is(err, ErrTopicNotFound) {
		t.Fatalf("topic: err = %v, want ErrTopicNotFound", err)
	}
	if _, err := OpenSubscription(ctx, "kafka://g?topic=absent"); !errors.Is(err, ErrTopicNotFound) {
		t.Fatalf("subscription: err = %v, want ErrTopicNotFound", err)
	} else {
		t.Logf("missing topic: %v", err)
	}
	top, err := OpenTopic(ctx, "kafka://present")
	if err != nil {
		t.Fatal(err)
	}
	_ = top.Shutdown(ctx)
}

// TestCommitStoresOffsetAtOnce: after Commit the group's offset is on the broker, without
// waiting for sarama's once-a-second commit and without shutting the subscription down
// (as after a SIGKILL).
func TestCommitStoresOffsetAtOnce(t *testing.T) {
	c := startKfake(t, "t")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	top, err := OpenTopic(ctx, "kafka://t")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := top.Send(ctx, &pubsub.Message{Body: fmt.Appendf(nil, "m%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	_ = top.Shutdown(ctx)

	sub, err := OpenSubscription(ctx, "kafka://g?topic=t&offset=oldest")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Shutdown(context.Background())
	var batch []*pubsub.Message
	for range 4 {
		m, err := sub.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m.Ack()
		batch = append(batch, m)
	}
	if p := Position(batch[3]); p != "topic t partition 0 offset 3" {
		t.Fatalf("Position = %q", p)
	}
	if err := Commit(ctx, sub, batch); err != nil {
		t.Fatal(err)
	}
	admin, err := sarama.NewClusterAdmin(c.ListenAddrs(), kafkaTestConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	resp, err := admin.ListConsumerGroupOffsets("g", map[string][]int32{"t": {0}})
	if err != nil {
		t.Fatal(err)
	}
	if b := resp.GetBlock("t", 0); b == nil || b.Offset != 4 {
		t.Fatalf("committed offset = %+v, want 4", b)
	}

	// Elsewhere Commit does nothing.
	memTop, err := pubsub.OpenTopic(ctx, "mem://commit-test")
	if err != nil {
		t.Fatal(err)
	}
	defer memTop.Shutdown(ctx)
	mem, err := OpenSubscription(ctx, "mem://commit-test")
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Shutdown(ctx)
	if err := Commit(ctx, mem, nil); err != nil {
		t.Fatal(err)
	}
}

func kafkaTestConfig() *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V2_8_0_0
	return c
}
