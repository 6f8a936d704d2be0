package filestream

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
)

func Example() {
	ctx := context.Background()
	// In pubcrypt: keyring.NewVault(keyring.VaultOptions{Key: "files"}), the same
	// Transit key on both sides.
	kr := newTestKeyring()
	src, _ := os.MkdirTemp("", "outbox")
	dst, _ := os.MkdirTemp("", "inbox")
	defer os.RemoveAll(src)
	defer os.RemoveAll(dst)
	path := filepath.Join(src, "Q3 salaries.csv")
	os.WriteFile(path, []byte("name,salary\nAda,100\nGrace,100\n"), 0o640)

	// The broker. With gocloud: topic.Send(ctx, &pubsub.Message{Body: bytes.Clone(body),
	// Metadata: md}); SendFile reuses body once send returns.
	type message struct {
		body []byte
		md   map[string]string
	}
	var broker []message
	send := func(ctx context.Context, body []byte, md map[string]string) error {
		broker = append(broker, message{bytes.Clone(body), md})
		return nil
	}
	st, err := SendFile(ctx, kr, path, send, SendOptions{ChunkSize: 16})
	if err != nil {
		panic(err)
	}
	fmt.Printf("sent %d bytes in %d messages\n", st.Size, st.Messages)

	r, err := NewReceiver(kr, dst, ReceiveOptions{})
	if err != nil {
		panic(err)
	}
	defer r.Close()
	for _, m := range broker { // with gocloud: sub.Receive, then m.Ack() once handled
		if !IsChunk(m.md) {
			continue // not a file: some other message on the topic
		}
		done, err := r.Handle(ctx, m.body, m.md)
		if err != nil {
			fmt.Println(err) // names the transfer (and the file once known); ack or dead-letter
			continue
		}
		if done != nil {
			data, _ := os.ReadFile(done.Path)
			fmt.Printf("received %q, %d bytes, %d messages: %q\n", done.Name, done.Size, done.Chunks, data[:11])
		}
	}
	// Output:
	// sent 30 bytes in 3 messages
	// received "Q3 salaries.csv", 30 bytes, 3 messages: "name,salary"
}
