package fields

import (
	"context"
	"fmt"
	"reflect"

	"github.com/pubcrypt/pubcrypt/keyring"
)

func ExampleParsePolicy() {
	p, err := ParsePolicy("name=transit, card_number=fpe(luhn,bin), items[].sku=envelope")
	if err != nil {
		panic(err)
	}
	fmt.Println(p)
	fmt.Println(p[1].Mode, p[1].KeepBIN, p[1].Luhn)
	// Output:
	// name=transit,card_number=fpe(bin,luhn),items[].sku=envelope
	// fpe true true
}

func ExamplePolicyOf() {
	type Item struct {
		SKU   string  `json:"sku" pubcrypt:"deterministic"`
		Price float64 `json:"price"`
	}
	type Purchase struct {
		ID         string `json:"id"`
		Name       string `json:"name" pubcrypt:"transit"`
		CardNumber string `json:"card_number" pubcrypt:"fpe,bin,luhn"`
		Items      []Item `json:"items"`
	}
	p, err := PolicyOf(reflect.TypeFor[Purchase]())
	if err != nil {
		panic(err)
	}
	fmt.Println(p)
	// Output:
	// name=transit,card_number=fpe(bin,luhn),items[].sku=deterministic
}

// Example protects a purchase on the send side and restores it on the receive side. The
// key services here are in-process fakes; in production both are a *keyring.Vault.
func Example() {
	ctx := context.Background()
	vault, kms := newFakeVault(), &fakeKMS{}

	// Send side: a Sealer per topic, with the data keys of the topic.
	dk, _ := keyring.NewDataKeys(kms, keyring.ReusePolicy{})
	sealer := NewSealer(vault, dk, Keys{Transit: "pii", Deterministic: "pii-det", FPE: "pii-fpe"}, SealerOptions{})
	policy, _ := ParsePolicy("name=transit,card_number=fpe(bin,luhn),items[].sku=envelope")
	out, err := sealer.Protect(ctx, []Input{{
		Body:     []byte(`{"id":"ord-1","name":"Ann","card_number":"4111 1111 1111 1111","items":[{"sku":"BK-101","qty":1}]}`),
		Metadata: map[string]string{"content-type": "application/json"},
		Policy:   policy,
	}})
	if err != nil {
		panic(err)
	}
	// out[0].Body keeps "id" and "qty" as they were; name, card_number and sku are
	// protected, and out[0].Metadata has the three pubcrypt entries.

	// Receive side: no policy needed.
	opener := NewOpener(vault, keyring.NewUnwrapCache(kms, keyring.CacheOptions{}))
	body, md, err := opener.Open(ctx, out[0].Body, out[0].Metadata)
	if err != nil {
		panic(err)
	}
	fmt.Println(IsFields(out[0].Metadata), string(body), md)
	// Output:
	// true {"id":"ord-1","name":"Ann","card_number":"4111 1111 1111 1111","items":[{"sku":"BK-101","qty":1}]} map[content-type:application/json]
}
