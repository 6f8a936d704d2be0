package cryptsub_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"gocloud.dev/pubsub"
	_ "gocloud.dev/pubsub/mempubsub" // mem://; a program links the driver of each broker it uses

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// A message that cannot be decrypted is an error about that message only: the consumer
// learns why, acks (or dead-letters) it, and receives the next one.
func ExampleDecryptError() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	keys, err := keyring.NewVault(keyring.VaultOptions{Key: keyring.DefaultKey})
	if err != nil {
		log.Fatal(err)
	}
	top, err := crypttopic.Open(ctx, "mem://refunds", crypttopic.Options{Keyring: keys})
	if err != nil {
		log.Fatal(err)
	}
	defer top.Shutdown(ctx)
	sub, err := cryptsub.Open(ctx, "mem://refunds", cryptsub.Options{Keyring: keys})
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Shutdown(ctx)

	// Someone who can write to the broker but holds no key: a copy of a genuine message
	// with one byte changed, and a message in plaintext. Unwrap bypasses encryption.
	if err := top.Send(ctx, &pubsub.Message{Body: []byte("refund 10.00 EUR on ord-1")}); err != nil {
		log.Fatal(err)
	}
	genuine, err := sub.Unwrap().Receive(ctx) // as the broker holds it
	if err != nil {
		log.Fatal(err)
	}
	genuine.Ack()
	forged := bytes.Clone(genuine.Body)
	forged[0] ^= 1

	for _, bad := range []*pubsub.Message{
		{Body: forged, Metadata: genuine.Metadata},
		{Body: []byte("refund 9999.00 EUR on ord-1")},
	} {
		if err := top.Unwrap().Send(ctx, bad); err != nil {
			log.Fatal(err)
		}
		_, err := sub.Receive(ctx)
		var de *cryptsub.DecryptError
		switch {
		case errors.As(err, &de) && errors.Is(err, cryptsub.ErrTampered):
			fmt.Println("refused, tampered; retryable:", de.Retryable())
		case errors.As(err, &de) && errors.Is(err, cryptsub.ErrNoEnvelope):
			fmt.Println("refused, not encrypted; retryable:", de.Retryable())
		default:
			log.Fatalf("want a DecryptError, got %v", err)
		}
		de.Message.Ack() // or dead-letter it; the subscription goes on
	}

	if err := top.Send(ctx, &pubsub.Message{Body: []byte("refund 5.00 EUR on ord-2")}); err != nil {
		log.Fatal(err)
	}
	m, err := sub.Receive(ctx)
	if err != nil {
		log.Fatal(err)
	}
	m.Ack()
	fmt.Printf("received: %s\n", m.Body)
	// Output:
	// refused, tampered; retryable: false
	// refused, not encrypted; retryable: false
	// received: refund 5.00 EUR on ord-2
}
