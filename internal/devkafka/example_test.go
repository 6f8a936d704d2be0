package devkafka_test

import (
	"context"
	"os"

	"github.com/pubcrypt/pubcrypt/internal/devkafka"
)

// A broker restarted under its clients: same address, same records and group offsets.
// Behind its fault proxy it can also be silenced without stopping.
func ExampleBroker_Restart() {
	dir, _ := os.MkdirTemp("", "kafka-")
	defer os.RemoveAll(dir)
	b, err := devkafka.Start(devkafka.Options{Topics: []string{"orders"}, DataDir: dir, FaultProxy: true})
	if err != nil {
		panic(err)
	}
	defer b.Close()

	// ... clients produce and consume on b.Addrs ...
	if err := b.Restart(context.Background()); err != nil {
		panic(err)
	}
	b.Proxy().Silent() // accepts, never answers
	b.Proxy().Pass()   // held requests are answered
}
