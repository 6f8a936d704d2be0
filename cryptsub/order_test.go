package cryptsub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/internal/devkafka"
)

// TestSendBatchKeepsOrder: on kgo://, crypttopic.SendBatch produces its batch in order,
// so over 10,000 messages of 50 keys (batches of 1,000, the demo's field policy: Vault
// still sees one call per key per batch) on a 6-partition topic, every key's messages
// arrive in the order they were sent, and 1,000 keyless messages on one partition too.
// Before, SendBatch sent its messages concurrently: 68 of 1,000 arrived out of order on
// one partition. Real Vault, kfake.
func TestSendBatchKeepsOrder(t *testing.T) {
	const n, keys, batch = 10000, 50, 1000
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kafka, err := devkafka.Start(devkafka.Options{Topics: []string{"ordered", "ordered_keyless"}, Partitions: 6})
	if err != nil {
		t.Fatal(err)
	}
	defer kafka.Close()
	t.Setenv("KAFKA_BROKERS", kafka.Addrs[0])
	policy, err := crypttopic.ParseFieldPolicy("name=transit,card_number=fpe(bin,luhn)")
	if err != nil {
		t.Fatal(err)
	}
	producer := newVault(t, vaultServer)
	top, err := crypttopic.Open(ctx, "kgo://ordered?key_name=user", crypttopic.Options{Keyring: producer, Fields: policy})
	if err != nil {
		t.Fatal(err)
	}
	defer top.Shutdown(context.Background())
	body := func(key, seq int) []byte {
		b, _ := json.Marshal(map[string]any{"user": key, "seq": seq, "name": "Jane Doe", "card_number": "4111-1111-1111-1111"})
		return b
	}
	for start := 0; start < n; start += batch {
		msgs := make([]*pubsub.Message, batch)
		for i := range msgs {
			seq := start + i
			msgs[i] = &pubsub.Message{Body: body(seq%keys, seq), Metadata: map[string]string{"user": fmt.Sprint(seq % keys)}}
		}
		if err := top.SendBatch(ctx, msgs); err != nil {
			t.Fatal(err)
		}
	}
	// Transit fields and record keys (key_name=user, protected): up to 4 parallel calls
	// each per batch.
	if calls := producer.Calls(); calls > int64(9*n/batch+5) {
		t.Errorf("%d Vault calls for %d messages: batching of Vault calls lost", calls, n)
	}

	sub, err := cryptsub.Open(ctx, "kgo://order-check?topic=ordered&offset=oldest&key_name=user", cryptsub.Options{Keyring: newVault(t, vaultServer)})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Shutdown(context.Background())
	last := map[int]int{}
	partitionOf := map[int]int32{}
	inversions := 0
	for got := 0; got < n; {
		msgs, _, errs := sub.ReceiveBatch(ctx, 1000)
		for i, m := range msgs {
			if errs[i] != nil {
				t.Fatalf("receive: %v", errs[i])
			}
			m.Ack()
			got++
			var doc struct{ User, Seq int }
			if err := json.Unmarshal(m.Body, &doc); err != nil {
				t.Fatal(err)
			}
			if m.Metadata["user"] != fmt.Sprint(doc.User) {
				t.Fatalf("record key %q for user %d", m.Metadata["user"], doc.User)
			}
			if prev, ok := last[doc.User]; ok && doc.Seq < prev {
				inversions++
			}
			last[doc.User] = doc.Seq
			p := position(t, m)
			if q, ok := partitionOf[doc.User]; ok && q != p {
				t.Fatalf("user %d on partitions %d and %d", doc.User, q, p)
			}
			partitionOf[doc.User] = p
		}
	}
	t.Logf("%d messages of %d keys over 6 partitions: %d order inversions per key", n, keys, inversions)
	if inversions != 0 {
		t.Fatalf("%d messages arrived before an earlier message of their key", inversions)
	}

	// Keyless, one batch: the sticky partitioner puts it on one partition, in order.
	plain, err := crypttopic.Open(ctx, "kgo://ordered_keyless", crypttopic.Options{Keyring: producer})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Shutdown(context.Background())
	msgs := make([]*pubsub.Message, batch)
	for i := range msgs {
		msgs[i] = &pubsub.Message{Body: body(0, i)}
	}
	if err := plain.SendBatch(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	recs, err := kafka.ReadRaw(ctx, "ordered_keyless", batch)
	if err != nil {
		t.Fatal(err)
	}
	lastOn := map[int32]int64{}
	for _, r := range recs {
		if prev, ok := lastOn[r.Partition]; ok && r.Offset < prev {
			t.Fatal("ReadRaw returned a partition out of offset order")
		}
		lastOn[r.Partition] = r.Offset
	}
	keyless, err := cryptsub.Open(ctx, "kgo://order-keyless?topic=ordered_keyless&offset=oldest", cryptsub.Options{Keyring: newVault(t, vaultServer)})
	if err != nil {
		t.Fatal(err)
	}
	defer keyless.Shutdown(context.Background())
	lastSeq := map[int32]int{}
	inversions = 0
	for got := 0; got < batch; {
		ms, _, errs := keyless.ReceiveBatch(ctx, batch)
		for i, m := range ms {
			if errs[i] != nil {
				t.Fatal(errs[i])
			}
			m.Ack()
			got++
			var doc struct{ Seq int }
			_ = json.Unmarshal(m.Body, &doc)
			p := position(t, m)
			if prev, ok := lastSeq[p]; ok && doc.Seq < prev {
				inversions++
			}
			lastSeq[p] = doc.Seq
		}
	}
	if inversions != 0 {
		t.Fatalf("keyless batch: %d inversions within a partition", inversions)
	}
}

// position is the partition a message was received from (kgo://).
func position(t *testing.T, m *pubsub.Message) int32 {
	t.Helper()
	var r *kgo.Record
	if !m.As(&r) || r == nil {
		t.Fatal("message has no Kafka record")
	}
	return r.Partition
}
