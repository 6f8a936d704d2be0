package cryptsub_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kgo"
	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/devkafka"
)

// TestRecordKeyRoundTrip, on kafka:// and kgo://, for the three ways a record key is
// named (docs/FORMAT.md sections 3.1 and 3.2): key_name=user alone (protected, the
// default), key_name=user&key_field=user (protected, taken from the plaintext body) and
// key_name=user&record_key=clear (readable, the only way to get one). 10,000 records of
// 50 keys over 6 partitions; a subscription with key_name=user decrypts every one and
// gives back the plaintext key in the entry user; the records of one key are all on one
// partition, in the order sent, with one record key, which is never the plaintext key
// unless clear was asked for. A copy of a record with one byte of its key flipped is
// refused as tampered (ErrTampered, a message fault) and the records after it still
// decrypt. Real Vault, kfake.
func TestRecordKeyRoundTrip(t *testing.T) {
	const n, users, partitions = 10000, 50, 6
	const batch = users
	for _, scheme := range []string{"kafka", "kgo"} {
		for _, mode := range []struct {
			name, query string
			clear, body bool
		}{
			{name: "protected", query: "key_name=user"},
			{name: "field", query: "key_name=user&key_field=user", body: true},
			{name: "clear", query: "key_name=user&record_key=clear", clear: true},
		} {
			t.Run(scheme+"/"+mode.name, func(t *testing.T) {
				topic := "keyed_" + scheme + "_" + mode.name
				ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
				defer cancel()
				kafka, err := devkafka.Start(devkafka.Options{Topics: []string{topic}, Partitions: partitions})
				if err != nil {
					t.Fatal(err)
				}
				defer kafka.Close()
				t.Setenv("KAFKA_BROKERS", kafka.Addrs[0])
				producer, consumer := newVault(t, vaultServer), newVault(t, vaultServer)
				top, err := crypttopic.Open(ctx, scheme+"://"+topic+"?"+mode.query, crypttopic.Options{Keyring: producer})
				if err != nil {
					t.Fatal(err)
				}
				user := func(i int) string { return fmt.Sprintf("user-%d", i%users) }
				// A batch holds one record per key, so that even kafka://, which sends a
				// batch concurrently, sends each key's records in order.
				start := time.Now()
				for i := 0; i < n; i += batch {
					var msgs []*pubsub.Message
					for j := i; j < i+batch; j++ {
						m := &pubsub.Message{Body: fmt.Appendf(nil, `{"seq":%d,"user":%q}`, j, user(j)), Metadata: map[string]string{"order": fmt.Sprint(j)}}
						if !mode.body {
							m.Metadata["user"] = user(j)
						}
						msgs = append(msgs, m)
					}
					if err := top.SendBatch(ctx, msgs); err != nil {
						t.Fatal(err)
					}
				}
				_ = top.Shutdown(ctx)
				sent := time.Since(start)
				raw, err := kafka.ReadRaw(ctx, topic, n)
				if err != nil {
					t.Fatal(err)
				}
				keys := map[string]bool{}
				for _, r := range raw {
					for _, h := range r.Headers {
						if h.Key == "user" {
							t.Fatalf("the key entry is also a header")
						}
						if h.Key == "pubcrypt-key" && mode.clear {
							t.Fatalf("a clear key is flagged as protected")
						}
					}
					k := string(r.Key)
					if k == "" {
						t.Fatalf("record without a key")
					}
					if !mode.clear && (strings.HasPrefix(k, "user-") || !strings.HasPrefix(k, "vault:v")) {
						t.Fatalf("record key %.12q... is not a protected key", k)
					}
					keys[k] = true
				}
				if len(keys) != users {
					t.Fatalf("%d distinct record keys for %d plaintext keys", len(keys), users)
				}
				bad := *raw[0]
				bad.Key = append([]byte(nil), bad.Key...)
				bad.Key[len(bad.Key)/2] ^= 0x01
				if err := kafka.ProduceRaw(ctx, &kgo.Record{Topic: topic, Key: bad.Key, Value: bad.Value, Headers: bad.Headers}); err != nil {
					t.Fatal(err)
				}

				sub, err := cryptsub.Open(ctx, scheme+"://keyed-reader?topic="+topic+"&offset=oldest&key_name=user", cryptsub.Options{Keyring: consumer})
				if err != nil {
					t.Fatal(err)
				}
				defer sub.Shutdown(context.Background())
				type seen struct {
					key       string
					partition int32
					last      int
				}
				per := map[string]*seen{}
				ok, tampered, inversions := 0, 0, 0
				start = time.Now()
				for ok+tampered < n+1 {
					rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
					msgs, infos, errs := sub.ReceiveBatch(rctx, 100)
					cancel()
					for i, m := range msgs {
						err := errs[i]
						var de *cryptsub.DecryptError
						switch {
						case errors.As(err, &de) && errors.Is(err, cryptsub.ErrTampered) && fault.IsMessage(err):
							tampered++
							de.Message.Ack()
							continue
						case err != nil:
							t.Fatalf("after %d: %v", ok+tampered, err)
						}
						ok++
						m.Ack()
						var seq int
						fmt.Sscanf(string(m.Body), `{"seq":%d`, &seq)
						u := m.Metadata["user"]
						if u != user(seq) {
							t.Fatalf("message %d: user %q, want %q", seq, u, user(seq))
						}
						if _, flagged := m.Metadata["pubcrypt-key"]; flagged {
							t.Fatalf("message %d: the flag reached the application", seq)
						}
						if want := map[bool]string{false: "user", true: ""}[mode.clear]; infos[i].RecordKey != want {
							t.Fatalf("message %d: Info.RecordKey %q, want %q", seq, infos[i].RecordKey, want)
						}
						rk, partition := recordKey(t, m)
						if mode.clear != (rk == u) {
							t.Fatalf("message %d: record key clear %t, want %t", seq, rk == u, mode.clear)
						}
						s := per[u]
						if s == nil {
							per[u] = &seen{key: rk, partition: partition, last: seq}
							continue
						}
						if s.key != rk || s.partition != partition {
							t.Fatalf("user %s: record key or partition changed (partition %d, then %d)", u, s.partition, partition)
						}
						if seq < s.last {
							inversions++
						}
						s.last = seq
					}
				}
				if ok != n || tampered != 1 || inversions != 0 {
					t.Fatalf("%d decrypted, %d tampered, %d inversions; want %d, 1 and 0", ok, tampered, inversions, n)
				}
				used := map[int32]bool{}
				for _, s := range per {
					used[s.partition] = true
				}
				t.Logf("%s: %d records of %d keys on %d of %d partitions: all decrypted, 0 inversions, 1 flipped key byte refused as ErrTampered; sent in %v (%d Vault calls), received in %v (%d Vault calls)",
					mode.query, ok, len(per), len(used), partitions, sent.Round(time.Millisecond), producer.Calls(), time.Since(start).Round(time.Millisecond), consumer.Calls())
			})
		}
	}
}

// recordKey returns the Kafka record key and partition m was received with.
func recordKey(t *testing.T, m *pubsub.Message) (string, int32) {
	t.Helper()
	var cm *sarama.ConsumerMessage
	if m.As(&cm) && cm != nil {
		return string(cm.Key), cm.Partition
	}
	var r *kgo.Record
	if m.As(&r) && r != nil {
		return string(r.Key), r.Partition
	}
	_, p, _, _ := broker.KafkaPosition(m)
	t.Fatalf("message without a Kafka record")
	return "", p
}

// TestRecordKeyWithoutKeyName: a subscription told no key_name still opens messages sent
// with a protected record key, on both drivers: the authenticated flag names the entry,
// and cryptsub puts the record key back into it before opening. 200 records of 20 keys;
// every one decrypts with its plaintext key in the entry. Real Vault, kfake.
func TestRecordKeyWithoutKeyName(t *testing.T) {
	const n, users = 200, 20
	for _, scheme := range []string{"kafka", "kgo"} {
		t.Run(scheme, func(t *testing.T) {
			topic := "nokeyname_" + scheme
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
			msgs := make([]*pubsub.Message, n)
			for i := range msgs {
				msgs[i] = &pubsub.Message{Body: fmt.Appendf(nil, `{"n":%d}`, i), Metadata: map[string]string{"user": fmt.Sprintf("user-%d", i%users), "n": fmt.Sprint(i)}}
			}
			if err := top.SendBatch(ctx, msgs); err != nil {
				t.Fatal(err)
			}
			_ = top.Shutdown(ctx)
			sub, err := cryptsub.Open(ctx, scheme+"://g-"+topic+"?topic="+topic+"&offset=oldest", cryptsub.Options{Keyring: newVault(t, vaultServer)})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Shutdown(context.Background())
			for got := 0; got < n; {
				ms, _, errs := sub.ReceiveBatch(ctx, n)
				for i, m := range ms {
					if errs[i] != nil {
						t.Fatalf("after %d: %v", got, errs[i])
					}
					m.Ack()
					var k int
					_, _ = fmt.Sscan(m.Metadata["n"], &k)
					if want := fmt.Sprintf("user-%d", k%users); m.Metadata["user"] != want {
						t.Fatalf("message %d: entry user is %q, want %q", k, m.Metadata["user"], want)
					}
					got++
				}
			}
			t.Logf("%s: %d of %d opened without key_name, each with its plaintext key", scheme, n, n)
		})
	}
}
