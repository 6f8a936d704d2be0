package broker_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/devkafka"
	"github.com/pubcrypt/pubcrypt/internal/envelope"
)

// kafkaVectors are testdata/envelope/kafka.json: envelope messages as Kafka records.
type kafkaVectors struct {
	Cases []struct {
		Name   string `json:"name"`
		Key    string `json:"key"`
		Record struct {
			Key     *string     `json:"key"`
			Headers [][2]string `json:"headers"`
			Value   string      `json:"value"`
		} `json:"record"`
		Metadata map[string]string `json:"metadata"`
		Body     *string           `json:"body"`
		Error    string            `json:"error"`
	} `json:"cases"`
}

// TestKafkaRecordVectors writes each record of the vectors to a real Kafka-protocol
// broker (kfake) with a plain client, receives it through pubcrypt's kafka:// opener,
// and checks the metadata it yields and what opening it gives (docs/FORMAT.md section
// 3.1): one header per entry, the later header of a key wins, the record key is not
// metadata.
func TestKafkaRecordVectors(t *testing.T) {
	b, err := os.ReadFile("../../testdata/envelope/kafka.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs kafkaVectors
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatal(err)
	}
	kafka, err := devkafka.Start(devkafka.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer kafka.Close()
	t.Setenv(broker.EnvKafkaBrokers, kafka.Addrs[0])
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i, c := range vs.Cases {
		t.Run(c.Name, func(t *testing.T) {
			topic := fmt.Sprintf("vector-%d", i)
			if _, err := broker.CreateKafkaTopics(ctx, broker.KafkaSettings{Brokers: kafka.Addrs}, []broker.TopicSpec{{Name: topic, Partitions: 1}}); err != nil {
				t.Fatal(err)
			}
			rec := &kgo.Record{Topic: topic, Value: unhex(t, c.Record.Value)}
			if c.Record.Key != nil {
				rec.Key = unhex(t, *c.Record.Key)
			}
			for _, h := range c.Record.Headers {
				rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: h[0], Value: []byte(h[1])})
			}
			if err := kafka.ProduceRaw(ctx, rec); err != nil {
				t.Fatal(err)
			}
			sub, err := broker.OpenSubscription(ctx, "kafka://vectors?topic="+topic+"&offset=oldest")
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Shutdown(ctx)
			m, err := sub.Receive(ctx)
			if err != nil {
				t.Fatal(err)
			}
			m.Ack()
			if !maps.Equal(m.Metadata, c.Metadata) {
				t.Fatalf("metadata received %q, want %q", m.Metadata, c.Metadata)
			}
			block, _ := aes.NewCipher(unhex(t, c.Key))
			aead, _ := cipher.NewGCM(block)
			env, err := envelope.Parse(m.Metadata)
			var body []byte
			if err == nil {
				body, _, err = env.Open(aead, m.Body, m.Metadata)
			}
			switch {
			case c.Error == "auth":
				if !errors.Is(err, envelope.ErrAuth) {
					t.Fatalf("opened: %v, want an authentication failure", err)
				}
			case err != nil:
				t.Fatalf("open: %v", err)
			case hex.EncodeToString(body) != *c.Body:
				t.Fatalf("body %x, want %s", body, *c.Body)
			}
		})
	}
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKafkaSenderRecord: what pubcrypt's kafka:// opener writes for a message is the
// record docs/FORMAT.md section 3.1 describes: the body as the value, one header per
// metadata entry (an empty key or value included), and a null record key.
func TestKafkaSenderRecord(t *testing.T) {
	kafka, err := devkafka.Start(devkafka.Options{Topics: []string{"sender"}})
	if err != nil {
		t.Fatal(err)
	}
	defer kafka.Close()
	t.Setenv(broker.EnvKafkaBrokers, kafka.Addrs[0])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	top, err := broker.OpenTopic(ctx, "kafka://sender")
	if err != nil {
		t.Fatal(err)
	}
	md := map[string]string{"pubcrypt": "v1;alg=A256GCM;kid=k;n=AAAAAAAAAAAAAAAA", "pubcrypt-dek": "vault:v1:x", "content-type": "application/json", "": "empty key", "x-empty": ""}
	if err := top.Send(ctx, &pubsub.Message{Body: []byte("body"), Metadata: md}); err != nil {
		t.Fatal(err)
	}
	if err := top.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	rs, err := kafka.ReadRaw(ctx, "sender", 1)
	if err != nil {
		t.Fatal(err)
	}
	r := rs[0]
	got := map[string]string{}
	for _, h := range r.Headers {
		if _, dup := got[h.Key]; dup {
			t.Errorf("header %q written twice", h.Key)
		}
		got[h.Key] = string(h.Value)
	}
	if r.Key != nil || string(r.Value) != "body" || !maps.Equal(got, md) {
		t.Fatalf("record: key %q, value %q, headers %q; want a null key, the body, one header per entry %q", r.Key, r.Value, got, md)
	}
}
