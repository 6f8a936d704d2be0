package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kgo"
	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/internal/devkafka"
	"github.com/pubcrypt/pubcrypt/internal/purchase"
)

// TestEncryptCarriesRecordKeys: `pubcrypt encrypt` carries each source record's key to
// the encrypted record (docs/FORMAT.md section 3.2), from kgo:// and kafka:// sources.
// By default (--record-key deterministic) the destination keys are ciphertexts, equal
// for equal source keys and never the plaintext bytes, so a key's records share one
// partition; a consumer with key_name=key gets the plaintext keys back, and records
// without a key stay without one. --record-key clear carries them readable, drop not at
// all; --exactly-once carries them as well. Nothing the command prints holds a key. Real
// Vault, kfake, the CLI binary.
func TestEncryptCarriesRecordKeys(t *testing.T) {
	const n, keys, partitions = 600, 20, 6
	env := startVault(t)
	for _, c := range []struct {
		source, mode string
		exactlyOnce  bool
	}{
		{"kgo", "deterministic", false}, {"kafka", "deterministic", false}, {"kgo", "clear", false}, {"kgo", "drop", false},
		{"kgo", "deterministic", true},
	} {
		name := c.source + "/" + c.mode
		if c.exactlyOnce {
			name += "/exactly-once"
		}
		t.Run(name, func(t *testing.T) {
			kafka, err := devkafka.Start(devkafka.Options{Topics: []string{topicPlain, topicEncrypted}, Partitions: partitions})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(kafka.Close)
			cliEnv := append(env.env, "KAFKA_BROKERS="+kafka.Addrs[0])
			gen := purchase.NewGenerator(53)
			keyOf := func(seq int) string {
				if seq%7 == 6 {
					return "" // a record without a key
				}
				return fmt.Sprintf("secret-customer-%02d", seq%keys)
			}
			recs := make([]*kgo.Record, n)
			sourceKeys, sourceKeyless := map[string]bool{}, 0
			for i := range recs {
				var doc map[string]any
				raw, _ := json.Marshal(gen.Next())
				_ = json.Unmarshal(raw, &doc)
				doc["seq"] = i
				body, _ := json.Marshal(doc)
				recs[i] = &kgo.Record{Topic: topicPlain, Value: body}
				if k := keyOf(i); k != "" {
					recs[i].Key = []byte(k)
					sourceKeys[k] = true
				} else {
					sourceKeyless++
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			if err := kafka.ProduceRaw(ctx, recs...); err != nil {
				t.Fatal(err)
			}
			args := []string{"encrypt", "--sub", c.source + "://enc?topic=" + topicPlain + "&offset=oldest", "--topic", "kgo://" + topicEncrypted,
				"--max", fmt.Sprint(n), "--record-key", c.mode}
			if c.exactlyOnce {
				args = append(args, "--exactly-once")
			}
			p := startCLI(t, cliEnv, args...)
			code, _ := p.wait(2 * time.Minute)
			out := p.stdout.String() + p.stderr.String()
			if code != exitOK {
				t.Fatalf("encrypt: exit %d\n%s", code, tail(out))
			}
			if strings.Contains(out, "secret-customer") {
				t.Fatalf("encrypt printed a record key:\n%s", tail(out))
			}

			raw, err := kafka.ReadRaw(ctx, topicEncrypted, n)
			if err != nil {
				t.Fatal(err)
			}
			distinct, keyless := map[string]bool{}, 0
			for _, r := range raw {
				k := string(r.Key)
				switch {
				case r.Key == nil:
					keyless++
					continue
				case c.mode == "drop":
					t.Fatalf("--record-key drop: a record with a key")
				case c.mode == "deterministic" && (strings.Contains(k, "secret-customer") || !strings.HasPrefix(k, "vault:v")):
					t.Fatalf("record key %.12q... is not a protected key", k)
				case c.mode == "clear" && !strings.HasPrefix(k, "secret-customer-"):
					t.Fatalf("--record-key clear: record key %.12q... is not the source's", k)
				}
				distinct[k] = true
			}
			wantKeyless, wantKeys := sourceKeyless, len(sourceKeys)
			if c.mode == "drop" {
				wantKeyless, wantKeys = n, 0
			}
			if keyless != wantKeyless || len(distinct) != wantKeys {
				t.Fatalf("%d records without a key (want %d), %d distinct keys (want %d)", keyless, wantKeyless, len(distinct), wantKeys)
			}

			t.Setenv("KAFKA_BROKERS", kafka.Addrs[0])
			sub, err := cryptsub.Open(ctx, "kgo://key-check?topic="+topicEncrypted+"&offset=oldest&key_name=key", cryptsub.Options{Keyring: env.keyring(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Shutdown(context.Background())
			type seen struct {
				cipher    string
				partition int32
			}
			per := map[string]seen{}
			for got := 0; got < n; {
				msgs, _, errs := sub.ReceiveBatch(ctx, 500)
				for i, m := range msgs {
					if errs[i] != nil {
						t.Fatalf("receive: %v", errs[i])
					}
					m.Ack()
					got++
					var doc struct{ Seq int }
					if err := json.Unmarshal(m.Body, &doc); err != nil {
						t.Fatal(err)
					}
					want := keyOf(doc.Seq)
					if c.mode == "drop" {
						want = ""
					}
					if m.Metadata["key"] != want {
						t.Fatalf("record %d: key entry wrong (has it: %t, want one: %t)", doc.Seq, m.Metadata["key"] != "", want != "")
					}
					if want == "" {
						continue
					}
					cipher, partition := receivedKey(t, m)
					if s, ok := per[want]; ok && (s.cipher != cipher || s.partition != partition) {
						t.Fatalf("record %d: one source key, two record keys or partitions", doc.Seq)
					}
					per[want] = seen{cipher, partition}
				}
			}
			t.Logf("--record-key %s from %s://: %d records, %d keyed with %d distinct source keys -> %d distinct destination keys, %d without a key; all decrypted with the key restored",
				c.mode, c.source, n, n-keyless, len(per), len(distinct), keyless)
		})
	}
}

// receivedKey returns the Kafka record key and partition m was received with.
func receivedKey(t *testing.T, m *pubsub.Message) (string, int32) {
	t.Helper()
	var cm *sarama.ConsumerMessage
	if m.As(&cm) && cm != nil {
		return string(cm.Key), cm.Partition
	}
	var r *kgo.Record
	if m.As(&r) && r != nil {
		return string(r.Key), r.Partition
	}
	t.Fatalf("message without a Kafka record")
	return "", 0
}
