package examples_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/internal/devkafka"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// relay sends one message on topicURL and receives it from subURL. Nothing in it names a
// broker.
func relay(ctx context.Context, keys keyring.Keyring, topicURL, subURL string) (string, error) {
	top, err := crypttopic.Open(ctx, topicURL, crypttopic.Options{Keyring: keys})
	if err != nil {
		return "", err
	}
	defer top.Shutdown(ctx)
	sub, err := cryptsub.Open(ctx, subURL, cryptsub.Options{Keyring: keys})
	if err != nil {
		return "", err
	}
	defer sub.Shutdown(ctx)

	if err := top.Send(ctx, &pubsub.Message{Body: []byte("ship 1 cordless drill to Porto")}); err != nil {
		return "", err
	}
	m, err := sub.Receive(ctx)
	if err != nil {
		return "", err
	}
	m.Ack()
	return string(m.Body), nil
}

// The broker is a URL: the same code runs on an in-memory topic and on Kafka.
func Example_swapBroker() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	keys, err := keyring.NewVault(keyring.VaultOptions{Key: "pubcrypt"})
	if err != nil {
		log.Fatal(err)
	}

	got, err := relay(ctx, keys, "mem://shipments", "mem://shipments")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("mem:  ", got)

	// A Kafka broker inside this process stands in for a cluster; KAFKA_BROKERS (or
	// PUBCRYPT_KAFKA_PROPERTIES, see the README) names a real one.
	kafka, err := devkafka.Start(devkafka.Options{Topics: []string{"shipments"}})
	if err != nil {
		log.Fatal(err)
	}
	defer kafka.Close()
	os.Setenv("KAFKA_BROKERS", kafka.Addrs[0])
	defer os.Unsetenv("KAFKA_BROKERS")

	got, err = relay(ctx, keys, "kafka://shipments", "kafka://dispatch?topic=shipments&offset=oldest")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("kafka:", got)
	// Output:
	// mem:   ship 1 cordless drill to Porto
	// kafka: ship 1 cordless drill to Porto
}
