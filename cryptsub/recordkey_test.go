package cryptsub_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/internal/devkafka"
)

// TestRecordKeyRoundTrip, on kafka:// and kgo://: with key_name=user on the topic and the
// subscription, the metadata entry user becomes the record key and comes back as that
// entry, so the envelope, which authenticated it, verifies; a copy of a record with one
// byte of its key flipped is refused as tampered (ErrTampered, a message fault), and the
// records after it still decrypt. Before, key_name on kafka:// made every message fail
// authentication: its subscription URL could not name the entry. Real Vault, kfake.
func TestRecordKeyRoundTrip(t *testing.T) {
	for _, scheme := range []string{"kafka", "kgo"} {
		t.Run(scheme, func(t *testing.T) {
			const n = 20
			topic := "keyed_" + scheme
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			kafka, err := devkafka.Start(devkafka.Options{Topics: []string{topic}, Partitions: 3})
			if err != nil {
				t.Fatal(err)
			}
			defer kafka.Close()
			t.Setenv("KAFKA_BROKERS", kafka.Addrs[0])
			top, err := crypttopic.Open(ctx, scheme+"://"+topic+"?key_name=user", crypttopic.Options{Keyring: newVault(t, vaultServer)})
			if err != nil {
				t.Fatal(err)
			}
			for i := range n {
				m := &pubsub.Message{Body: fmt.Appendf(nil, `{"seq":%d}`, i), Metadata: map[string]string{"user": fmt.Sprintf("user-%d", i%4), "order": fmt.Sprint(i)}}
				if err := top.Send(ctx, m); err != nil {
					t.Fatal(err)
				}
			}
			_ = top.Shutdown(ctx)
			raw, err := kafka.ReadRaw(ctx, topic, n)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range raw {
				for _, h := range r.Headers {
					if h.Key == "user" {
						t.Fatalf("the key entry is also a header")
					}
				}
				if len(r.Key) == 0 {
					t.Fatalf("record without a key")
				}
			}
			bad := *raw[0]
			bad.Key = append([]byte(nil), bad.Key...)
			bad.Key[0] ^= 0x01
			bad.Partition, bad.Offset, bad.Context = 0, 0, nil
			if err := kafka.ProduceRaw(ctx, &kgo.Record{Topic: topic, Key: bad.Key, Value: bad.Value, Headers: bad.Headers}); err != nil {
				t.Fatal(err)
			}
			sub, err := cryptsub.Open(ctx, scheme+"://keyed-reader?topic="+topic+"&offset=oldest&key_name=user", cryptsub.Options{Keyring: newVault(t, vaultServer)})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Shutdown(context.Background())
			ok, tampered := 0, 0
			for ok+tampered < n+1 {
				rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				m, err := sub.Receive(rctx)
				cancel()
				var de *cryptsub.DecryptError
				switch {
				case errors.As(err, &de) && errors.Is(err, cryptsub.ErrTampered):
					tampered++
					de.Message.Ack()
				case err != nil:
					t.Fatalf("after %d: %v", ok+tampered, err)
				default:
					ok++
					m.Ack()
					var seq int
					fmt.Sscanf(string(m.Body), `{"seq":%d}`, &seq)
					if m.Metadata["user"] != fmt.Sprintf("user-%d", seq%4) {
						t.Fatalf("message %d: user %q", seq, m.Metadata["user"])
					}
				}
			}
			if ok != n || tampered != 1 {
				t.Fatalf("%d decrypted, %d tampered; want %d and 1", ok, tampered, n)
			}
		})
	}
}
