package examples_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"strings"
	"time"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// Field-level encryption: only the name and the card number are protected; the rest of
// the JSON stays readable on the broker (and authenticated). The card number keeps its
// shape, so systems that validate or route on it keep working.
func Example_fieldPolicy() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	keys, err := keyring.NewVault(keyring.VaultOptions{Key: "pubcrypt"})
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
