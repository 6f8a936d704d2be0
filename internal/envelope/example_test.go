package envelope_test

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"

	"github.com/pubcrypt/pubcrypt/internal/envelope"
)

func Example() {
	// In pubcrypt the key comes from keyring.DataKeys.Take and the AEAD from
	// DataKey.AEAD; the receiver unwraps the key with the key service.
	key := make([]byte, 32)
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)

	body, md, err := envelope.Seal(envelope.SealInput{
		AEAD:      aead,
		KeyID:     "payroll",
		Wrapped:   "vault:v1:c2FtcGxlIHdyYXBwZWQga2V5",
		Seq:       5,
		Body:      []byte("hello, world"),
		Metadata:  map[string]string{"content-type": "text/plain", "filename": "Q3 salaries.txt"},
		Sensitive: []string{"filename"},
	})
	if err != nil {
		panic(err)
	}
	fmt.Println("sent:", md)

	env, err := envelope.Parse(md)
	if err != nil {
		panic(err)
	}
	plain, meta, err := env.Open(aead, body, md)
	if err != nil {
		panic(err)
	}
	fmt.Printf("received: %q %v\n", plain, meta)
	// Output:
	// sent: map[content-type:text/plain pubcrypt:v1;alg=A256GCM;kid=payroll;n=AAAAAAAAAAAAAAAF;m=1 pubcrypt-dek:vault:v1:c2FtcGxlIHdyYXBwZWQga2V5]
	// received: "hello, world" map[content-type:text/plain filename:Q3 salaries.txt]
}
