package examples_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// Whole-body encryption, the default: the body leaves the producer encrypted under a data
// key from Vault, and the consumer gets it back with the producer's metadata.
func Example_encryptBodies() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	keys, err := keyring.NewVault(keyring.VaultOptions{Key: "pubcrypt"}) // VAULT_ADDR, VAULT_TOKEN
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
