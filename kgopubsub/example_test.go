package kgopubsub_test

import (
	"context"
	"log"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/kgopubsub"
)

// Opening by URL: importing the package registers kgo:// on gocloud's default mux, which
// reaches the brokers of KAFKA_BROKERS. The record key comes from the "user" entry and
// comes back in it.
func Example_byURL() {
	ctx := context.Background()
	top, err := pubsub.OpenTopic(ctx, "kgo://purchases?key_name=user")
	if err != nil {
		log.Fatal(err)
	}
	defer top.Shutdown(ctx)
	sub, err := pubsub.OpenSubscription(ctx, "kgo://billing?topic=purchases&offset=oldest&key_name=user")
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Shutdown(ctx)
	if err := top.Send(ctx, &pubsub.Message{Body: []byte(`{"total":12}`), Metadata: map[string]string{"user": "u-17"}}); err != nil {
		log.Fatal(err)
	}
	m, err := sub.Receive(ctx)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("%s from %s", m.Body, m.Metadata["user"])
	m.Ack()
}

// The constructors take franz-go options (TLS, SASL...) for a subscription, and a client
// of the caller's for a topic, which can be the subscription's own (As): a bridge then
// consumes and produces on one client.
func ExampleOpenSubscription() {
	ctx := context.Background()
	opts := []kgo.Opt{kgo.SeedBrokers("127.0.0.1:9092")}
	sub, err := kgopubsub.OpenSubscription(opts, "bridge", []string{"purchases"}, &kgopubsub.SubscriptionOptions{Oldest: true})
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Shutdown(ctx)
	var cl *kgo.Client
	if !sub.As(&cl) {
		log.Fatal("not a kgo subscription")
	}
	top, err := kgopubsub.OpenTopic(cl, "purchases_copy", &kgopubsub.TopicOptions{KeyField: "user.id"})
	if err != nil {
		log.Fatal(err)
	}
	defer top.Shutdown(ctx)
	m, err := sub.Receive(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if err := top.Send(ctx, &pubsub.Message{Body: m.Body, Metadata: m.Metadata}); err != nil {
		log.Fatal(err)
	}
	m.Ack()
}

// Exactly once: each batch is polled, transformed and produced in one transaction that
// also commits the group's offsets after it. A batch that fails is aborted and polled
// again; consumers reading committed records (the default) never see it twice.
func ExampleTransactor() {
	ctx := context.Background()
	opts := []kgo.Opt{kgo.SeedBrokers("127.0.0.1:9092")}
	tx, err := kgopubsub.OpenTransactor(opts, "bridge", []string{"purchases"}, &kgopubsub.TransactOptions{
		TransactionalID: "bridge-0", // one per instance, kept across its restarts
		Subscription:    kgopubsub.SubscriptionOptions{Oldest: true},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer tx.Close()
	top, err := tx.OpenTopic("purchases_copy", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer top.Shutdown(ctx)
	for {
		ms, err := tx.Poll(ctx, 100, 50*time.Millisecond)
		if err != nil {
			log.Fatal(err)
		}
		if err := tx.Begin(); err != nil {
			log.Fatal(err)
		}
		out := make([]*pubsub.Message, len(ms))
		for i, m := range ms {
			out[i] = &pubsub.Message{Body: m.Body, Metadata: m.Metadata}
		}
		if _, err := kgopubsub.SendInOrder(ctx, top, out); err != nil {
			if err := tx.Abort(ctx); err != nil { // the batch is polled again
				log.Fatal(err)
			}
			continue
		}
		if _, err := tx.Commit(ctx); err != nil { // not committed: polled again
			log.Fatal(err)
		}
	}
}
