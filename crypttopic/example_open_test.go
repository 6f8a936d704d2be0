package crypttopic_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"strings"
	"time"

	"gocloud.dev/pubsub"
	_ "gocloud.dev/pubsub/mempubsub" // mem://; a program links the driver of each broker it uses

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// Whole-body encryption, the default: the body leaves the producer encrypted under a data
// key from Vault, and the consumer gets it back with the producer's metadata.
func ExampleOpen() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	keys, err := keyring.NewVault(keyring.VaultOptions{Key: keyring.DefaultKey}) // VAULT_ADDR, VAULT_TOKEN
	if err != nil {
		log.Fatal(err)
	}
	top, err := crypttopic.Open(ctx, "mem://orders", crypttopic.Options{Keyring: keys})
	if err != nil {
		log.Fatal(err)
	}
	defer top.Shutdown(ctx)
	sub, err := cryptsub.Open(ctx, "mem://orders", cryptsub.Options{Keyring: keys})
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Shutdown(ctx)

	err = top.Send(ctx, &pubsub.Message{
		Body:     []byte("2 espresso cups for Ana Silva"),
		Metadata: map[string]string{"order": "ord-1"},
	})
	if err != nil {
		log.Fatal(err)
	}
	m, err := sub.Receive(ctx)
	if err != nil {
		log.Fatal(err)
	}
	m.Ack()
	fmt.Printf("%s (order %s)\n", m.Body, m.Metadata["order"])
	// Output:
	// 2 espresso cups for Ana Silva (order ord-1)
}

// Field-level encryption: only the name and the card number are protected; the rest of
// the JSON stays readable on the broker (and authenticated). The card number keeps its
// shape, so systems that validate or route on it keep working.
func ExampleOptions_fields() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	keys, err := keyring.NewVault(keyring.VaultOptions{Key: keyring.DefaultKey})
	if err != nil {
		log.Fatal(err)
	}
	policy, err := crypttopic.ParseFieldPolicy("name=transit,card_number=fpe(bin,luhn)")
	if err != nil {
		log.Fatal(err)
	}
	top, err := crypttopic.Open(ctx, "mem://purchases", crypttopic.Options{Keyring: keys, Fields: policy})
	if err != nil {
		log.Fatal(err)
	}
	defer top.Shutdown(ctx)
	// A plain subscription sees what the broker holds; the cryptsub one, what a consumer gets.
	broker, err := pubsub.OpenSubscription(ctx, "mem://purchases")
	if err != nil {
		log.Fatal(err)
	}
	defer broker.Shutdown(ctx)
	sub, err := cryptsub.Open(ctx, "mem://purchases", cryptsub.Options{Keyring: keys})
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Shutdown(ctx)

	const card = "4111-1111-1111-1111"
	body := `{"id":"ord-1","name":"Ana Silva","card_number":"` + card + `","amount":42.5}`
	if err := top.Send(ctx, &pubsub.Message{Body: []byte(body)}); err != nil {
		log.Fatal(err)
	}

	raw, err := broker.Receive(ctx)
	if err != nil {
		log.Fatal(err)
	}
	raw.Ack()
	var seen struct {
		ID     string  `json:"id"`
		Name   string  `json:"name"`
		Card   string  `json:"card_number"`
		Amount float64 `json:"amount"`
	}
	if err := json.Unmarshal(raw.Body, &seen); err != nil {
		log.Fatal(err)
	}
	fmt.Println("broker sees id and amount:", seen.ID, seen.Amount)
	fmt.Println("name is Vault Transit ciphertext:", strings.HasPrefix(seen.Name, "vault:v1:"))
	fmt.Println("card changed:", seen.Card != card)
	fmt.Println("card keeps its first 6 digits and length:", seen.Card[:7] == card[:7], len(seen.Card) == len(card))

	m, err := sub.Receive(ctx)
	if err != nil {
		log.Fatal(err)
	}
	m.Ack()
	fmt.Println("consumer gets:", string(m.Body))
	// Output:
	// broker sees id and amount: ord-1 42.5
	// name is Vault Transit ciphertext: true
	// card changed: true
	// card keeps its first 6 digits and length: true true
	// consumer gets: {"id":"ord-1","name":"Ana Silva","card_number":"4111-1111-1111-1111","amount":42.5}
}

// Signup is a message type whose struct tags say which fields are protected and how.
type Signup struct {
	User  string `json:"user"`
	Email string `json:"email" pubcrypt:"transit"`
	Card  string `json:"card" pubcrypt:"fpe,last4,luhn"`
	Plan  string `json:"plan" pubcrypt:"envelope"`
}

// Struct tags instead of a policy string: SendValue marshals the value to JSON and
// protects the tagged fields. The consumer needs no policy; each message says what it
// protects.
func ExampleTopic_SendValue() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	keys, err := keyring.NewVault(keyring.VaultOptions{Key: keyring.DefaultKey})
	if err != nil {
		log.Fatal(err)
	}
	top, err := crypttopic.Open(ctx, "mem://signups", crypttopic.Options{Keyring: keys})
	if err != nil {
		log.Fatal(err)
	}
	defer top.Shutdown(ctx)
	sub, err := cryptsub.Open(ctx, "mem://signups", cryptsub.Options{Keyring: keys})
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Shutdown(ctx)

	policy, err := crypttopic.FieldPolicyOf(Signup{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("policy from tags:", policy)

	in := Signup{User: "ana", Email: "ana@example.com", Card: "5555 5555 5555 4444", Plan: "pro"}
	if err := top.SendValue(ctx, in, map[string]string{"source": "web"}); err != nil {
		log.Fatal(err)
	}
	m, err := sub.Receive(ctx)
	if err != nil {
		log.Fatal(err)
	}
	m.Ack()
	var out Signup
	if err := json.Unmarshal(m.Body, &out); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("received: %+v from %s\n", out, m.Metadata["source"])
	// Output:
	// policy from tags: email=transit,card=fpe(last4,luhn),plan=envelope
	// received: {User:ana Email:ana@example.com Card:5555 5555 5555 4444 Plan:pro} from web
}

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

// The broker is a URL: the same code runs on an in-memory topic and on Kafka. Kafka's
// brokers come from KAFKA_BROKERS (or a client.properties file named by
// PUBCRYPT_KAFKA_PROPERTIES, for Confluent Cloud; see the README); here they are a
// broker the test starts in process.
func Example_swapBroker() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	keys, err := keyring.NewVault(keyring.VaultOptions{Key: keyring.DefaultKey})
	if err != nil {
		log.Fatal(err)
	}
	for _, u := range []struct{ topic, sub string }{
		{"mem://shipments", "mem://shipments"},
		{"kafka://shipments", "kafka://dispatch?topic=shipments&offset=oldest"},
	} {
		got, err := relay(ctx, keys, u.topic, u.sub)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%-18s %s\n", u.topic, got)
	}
	// Output:
	// mem://shipments    ship 1 cordless drill to Porto
	// kafka://shipments  ship 1 cordless drill to Porto
}
