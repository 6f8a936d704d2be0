package wire_test

import (
	"fmt"

	"github.com/pubcrypt/pubcrypt/internal/wire"
)

func Example() {
	h := wire.FormatHeader("orders", wire.Nonce(5), true)
	fmt.Println(h)

	kid, nonce, sensitive, err := wire.ParseHeader(h)
	fmt.Printf("%s %x %v %v\n", kid, nonce, sensitive, err)

	_, _, _, err = wire.ParseHeader(h + ";m=1")
	fmt.Println(err)

	ad := wire.AppendString(nil, h)
	s, n, ok := wire.ReadString(ad)
	fmt.Println(s == h, n, ok)
	// Output:
	// v1;alg=A256GCM;kid=orders;n=AAAAAAAAAAAAAAAF;m=1
	// orders 000000000000000000000005 true <nil>
	// header: unexpected text after the nonce (only ";m=1" may follow)
	// true 52 true
}
