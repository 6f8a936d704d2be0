package netfault_test

import (
	"fmt"
	"io"
	"net"
	"time"

	"github.com/pubcrypt/pubcrypt/internal/netfault"
)

// A proxy in front of a server: the client dials the proxy's address, and the test cuts
// the wire under it.
func ExampleListen() {
	server, _ := net.Listen("tcp", "127.0.0.1:0")
	defer server.Close()
	go func() {
		for {
			c, err := server.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()

	p, err := netfault.Listen(server.Addr().String())
	if err != nil {
		panic(err)
	}
	defer p.Close()

	c, _ := net.Dial("tcp", p.Addr())
	c.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4)
	c.Write([]byte("ping"))
	io.ReadFull(c, buf)
	fmt.Printf("pass: %s\n", buf)

	p.Cut()
	c.Write([]byte("ping"))
	_, err = io.ReadFull(c, buf)
	fmt.Println("cut: error:", err != nil)
	// Output:
	// pass: ping
	// cut: error: true
}
