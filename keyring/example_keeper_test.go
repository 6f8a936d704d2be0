package keyring_test

import (
	"context"
	"fmt"
	"strings"

	_ "gocloud.dev/secrets/localsecrets" // base64key://; an application links the drivers it opens

	"github.com/pubcrypt/pubcrypt/keyring"
)

// A key-encryption key by URL. base64key:// holds the key in the URL and needs no
// server; in production the URL names a key in a key service, e.g.
// awskms:///alias/orders?region=eu-west-2 (with import _ "gocloud.dev/secrets/awskms").
// With DataKeys and UnwrapCache, a thousand messages cost one keeper call per side.
func ExampleOpenKeeper() {
	ctx := context.Background()
	const kek = "base64key://smGbjm71Nxd1Ig5FS0wj9SlbzAIrnolCz9bQQ6uAhl4="
	send, err := keyring.OpenKeeper(ctx, kek, keyring.KeeperOptions{KeyID: "orders-kek"})
	if err != nil {
		panic(err)
	}
	defer send.Close()
	recv, err := keyring.OpenKeeper(ctx, kek, keyring.KeeperOptions{KeyID: "orders-kek"})
	if err != nil {
		panic(err)
	}
	defer recv.Close()

	keys, err := keyring.NewDataKeys(send, keyring.ReusePolicy{})
	if err != nil {
		panic(err)
	}
	cache := keyring.NewUnwrapCache(recv, keyring.CacheOptions{})
	var last *keyring.DataKey
	for range 1000 {
		k, _, err := keys.Take(ctx, 100) // the send side: the key for one message of 100 bytes
		if err != nil {
			panic(err)
		}
		if last, err = cache.Get(ctx, k.KeyID, k.Wrapped); err != nil { // the receive side
			panic(err)
		}
	}
	fmt.Println(last.KeyID, strings.HasPrefix(last.Wrapped, "kp1:"))
	fmt.Println("keeper calls:", send.Calls(), recv.Calls())
	// Output:
	// orders-kek true
	// keeper calls: 1 1
}
