package reencrypt_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/keyring"
	"github.com/pubcrypt/pubcrypt/reencrypt"
)

// After a rotation, copy a retained topic under the latest key versions; then raise
// min_decryption_version and point the consumers at the copy.
func ExampleCopy() {
	ctx := context.Background()
	keys, err := keyring.NewVault(keyring.VaultOptions{Key: keyring.DefaultKey}) // VAULT_ADDR, VAULT_TOKEN
	if err != nil {
		log.Fatal(err)
	}
	defer keys.Close()
	src, err := cryptsub.Open(ctx, "kafka://reencrypt?topic=purchases_encrypted&offset=oldest", cryptsub.Options{Keyring: keys})
	if err != nil {
		log.Fatal(err)
	}
	defer src.Shutdown(ctx)
	dst, err := crypttopic.Open(ctx, "kafka://purchases_encrypted_v3", crypttopic.Options{Keyring: keys}) // no Fields: each message keeps its own protection
	if err != nil {
		log.Fatal(err)
	}
	defer dst.Shutdown(ctx)
	st, err := reencrypt.Copy(ctx, src, dst, reencrypt.Options{Idle: 10 * time.Second})
	if err != nil {
		log.Fatal(err) // nothing after the last batch sent was acknowledged: run again
	}
	fmt.Println(st.Copied, "messages copied; they were under key versions", st.ByVersion)
}
