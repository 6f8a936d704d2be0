package examples_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"time"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/keyring"
)

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
func Example_structTags() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	keys, err := keyring.NewVault(keyring.VaultOptions{Key: "pubcrypt"})
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
