package encurl_test

import (
	"context"
	"fmt"
	"log"
	"strings"
	"time"

	"gocloud.dev/pubsub"
	_ "gocloud.dev/pubsub/mempubsub" // the inner driver is linked as usual

	_ "github.com/pubcrypt/pubcrypt/encurl" // registers enc+mem, enc+kafka, ...
)

// An application written against plain gocloud encrypts by changing its URLs: "enc+" in
// front of the scheme, Vault's address and token from VAULT_ADDR and VAULT_TOKEN, the
// field policy as a URL parameter. The broker (here the inner mem://invoices) holds
// ciphertext only.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	top, err := pubsub.OpenTopic(ctx, "enc+mem://invoices?fields=email%3Dtransit")
	if err != nil {
		log.Fatal(err)
	}
	defer top.Shutdown(ctx)
	broker, err := pubsub.OpenSubscription(ctx, "mem://invoices") // what the broker holds
	if err != nil {
		log.Fatal(err)
	}
	defer broker.Shutdown(ctx)
	sub, err := pubsub.OpenSubscription(ctx, "enc+mem://invoices")
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Shutdown(ctx)

	if err := top.Send(ctx, &pubsub.Message{Body: []byte(`{"invoice":"inv-7","email":"ana@example.com"}`)}); err != nil {
		log.Fatal(err)
	}
	raw, err := broker.Receive(ctx)
	if err != nil {
		log.Fatal(err)
	}
	raw.Ack()
	fmt.Println("broker holds the address:", strings.Contains(string(raw.Body), "ana@example.com"))
	m, err := sub.Receive(ctx)
	if err != nil {
		log.Fatal(err)
	}
	m.Ack()
	fmt.Println("consumer gets:", string(m.Body))
	// Output:
	// broker holds the address: false
	// consumer gets: {"invoice":"inv-7","email":"ana@example.com"}
}
