package conformance

import (
	"context"
	"os"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"gocloud.dev/pubsub"
	_ "gocloud.dev/pubsub/rabbitpubsub" // rabbit://

	"github.com/pubcrypt/pubcrypt/internal/broker"
)

// rabbitDefaultURL is what scripts/start-rabbitmq.sh prints; RABBIT_SERVER_URL, gocloud's
// own variable, points the suite at another server.
const rabbitDefaultURL = "amqp://guest:guest@127.0.0.1:5672/"

// rabbitHarness: a real RabbitMQ server (Debian's rabbitmq-server, started by
// scripts/start-rabbitmq.sh), opened by URL through pubcrypt's broker package as the CLI
// does: rabbit://EXCHANGE for the topic, rabbit://QUEUE for the subscription. gocloud
// declares neither, so each test declares a fanout exchange and a queue bound to it, on a
// connection of its own, and deletes both afterwards. Nack requeues the message.
type rabbitHarness struct {
	ch   *amqp.Channel
	name string // exchange and queue
}

func (h *rabbitHarness) Name() string { return "rabbit" }

func (h *rabbitHarness) OpenTopic(ctx context.Context, t *testing.T) (*pubsub.Topic, string) {
	top, err := broker.OpenTopic(ctx, "rabbit://"+h.name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = top.Shutdown(context.Background()) })
	return top, "rabbit"
}

func (h *rabbitHarness) OpenSubscription(ctx context.Context, t *testing.T) *pubsub.Subscription {
	sub, err := broker.OpenSubscription(ctx, "rabbit://"+h.name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Shutdown(context.Background()) })
	return sub
}

// dialRabbit connects to the server at RABBIT_SERVER_URL (default: the one
// scripts/start-rabbitmq.sh starts) and fails the test, saying how to start it, if nothing
// answers there: the suite proves behaviour against the real broker, it never skips.
func dialRabbit(t *testing.T) (*amqp.Connection, string) {
	t.Helper()
	u := os.Getenv("RABBIT_SERVER_URL")
	if u == "" {
		u = rabbitDefaultURL
	}
	conn, err := amqp.DialConfig(u, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		t.Fatalf("RabbitMQ is not reachable at RABBIT_SERVER_URL (default %s): %v\n"+
			"start it with: sudo scripts/start-rabbitmq.sh", rabbitDefaultURL, err)
	}
	return conn, u
}

// declareRabbit declares a fanout exchange and a queue bound to it, both named name, and
// deletes them when the test ends.
func declareRabbit(t *testing.T, conn *amqp.Connection, name string) *amqp.Channel {
	t.Helper()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	// Leftovers of an interrupted run would hold old messages: start empty.
	_, _ = ch.QueueDelete(name, false, false, false)
	_ = ch.ExchangeDelete(name, false, false)
	if err := ch.ExchangeDeclare(name, amqp.ExchangeFanout, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(name, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(name, "", name, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = ch.QueueDelete(name, false, false, false)
		_ = ch.ExchangeDelete(name, false, false)
		_ = ch.Close()
	})
	return ch
}

func TestConformanceRabbit(t *testing.T) {
	conn, u := dialRabbit(t)
	t.Cleanup(func() { _ = conn.Close() })
	t.Setenv("RABBIT_SERVER_URL", u) // read by gocloud's rabbit:// opener
	RunConformance(t, vaultServer, func(t *testing.T) Harness {
		name := resourceName(t)
		return &rabbitHarness{ch: declareRabbit(t, conn, name), name: name}
	})
}
