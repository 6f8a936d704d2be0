package crypttopic_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"gocloud.dev/pubsub"
	"gocloud.dev/pubsub/mempubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/devkafka"
	"github.com/pubcrypt/pubcrypt/internal/devvault"
	"github.com/pubcrypt/pubcrypt/internal/envelope"
	"github.com/pubcrypt/pubcrypt/internal/fields"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// vaultServer and kafka are the real servers every test of the package runs against. If
// one cannot be started the package fails: these tests prove behaviour against the real
// thing.
var (
	vaultServer *devvault.Server
	kafka       *devkafka.Broker
)

const transitKey = "pubcrypt"

// kafkaTopics are the topics of the package's broker, one per test.
var kafkaTopics = []string{"poison-fields", "poison-body", "shipments", "keyed-new"}

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	srv, err := devvault.Start(ctx, devvault.Options{Keys: []string{transitKey}})
	if err == nil {
		err = srv.CreateFieldKeys(ctx, crypttopic.DefaultFieldKeys.Deterministic, crypttopic.DefaultFieldKeys.FPE)
	}
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: cannot start the Vault dev server these tests need:", err)
		if srv != nil {
			_ = srv.Stop()
		}
		os.Exit(1)
	}
	vaultServer = srv
	if err := srv.Setenv(); err != nil { // the Example functions read VAULT_ADDR and VAULT_TOKEN
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		_ = srv.Stop()
		os.Exit(1)
	}
	kafka, err = devkafka.Start(devkafka.Options{Topics: kafkaTopics})
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: cannot start the Kafka broker these tests need:", err)
		_ = srv.Stop()
		os.Exit(1)
	}
	os.Setenv("KAFKA_BROKERS", kafka.Addrs[0])
	code := m.Run()
	kafka.Close()
	_ = srv.Stop()
	os.Exit(code)
}

// vaultKeyring is a keyring on srv with the given token ("" for the root token) and key.
func vaultKeyring(t *testing.T, srv *devvault.Server, token, key string) *keyring.Vault {
	t.Helper()
	c, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		c.SetToken(token)
	}
	v, err := keyring.NewVault(keyring.VaultOptions{Client: c, Key: key, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// memTopic wraps a fresh in-memory topic; the broker's limits are Kafka's, so the
// oversized message of the tests is refused as it would be there.
func memTopic(t *testing.T, opts crypttopic.Options) *crypttopic.Topic {
	t.Helper()
	if opts.Broker == "" {
		opts.Broker = "kafka"
	}
	top, err := crypttopic.New(mempubsub.NewTopic(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { top.Shutdown(context.Background()) })
	return top
}

// bigValue is a JSON string of 850 KB of base64 text: over Vault's 1 MiB JSON string
// limit once base64-encoded again for the transit request.
func bigValue(t *testing.T) string {
	b := make([]byte, 640_000)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func purchase(i int) []byte {
	return fmt.Appendf(nil, `{"seq":%d,"name":"Customer %05d","card_number":"4111 1111 1111 %04d"}`, i, i, i%10000)
}

// TestSendErrorClasses: every way Send can fail says whose fault it is.
func TestSendErrorClasses(t *testing.T) {
	ctx := context.Background()
	root := vaultKeyring(t, vaultServer, "", transitKey)
	fieldsPolicy, err := crypttopic.ParseFieldPolicy("name=transit,card_number=fpe")
	if err != nil {
		t.Fatal(err)
	}
	good := memTopic(t, crypttopic.Options{Keyring: root})
	withFields := memTopic(t, crypttopic.Options{Keyring: root, Fields: fieldsPolicy})

	stopped, err := devvault.Start(ctx, devvault.Options{Keys: []string{transitKey}})
	if err != nil {
		t.Fatal(err)
	}
	down := memTopic(t, crypttopic.Options{Keyring: vaultKeyring(t, stopped, "", transitKey)})
	if err := stopped.Stop(); err != nil {
		t.Fatal(err)
	}
	refused := memTopic(t, crypttopic.Options{Keyring: vaultKeyring(t, vaultServer, "hvs.not-a-real-token-0123456789", transitKey)})
	missing := memTopic(t, crypttopic.Options{Keyring: vaultKeyring(t, vaultServer, "", "no-such-key")})
	closed := memTopic(t, crypttopic.Options{Keyring: root})
	if err := closed.Unwrap().Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	msg := func(body string, md map[string]string) *pubsub.Message {
		return &pubsub.Message{Body: []byte(body), Metadata: md}
	}
	for _, tc := range []struct {
		name  string
		top   *crypttopic.Topic
		m     *pubsub.Message
		class fault.Class
		kind  error // matched with errors.Is if not nil
	}{
		{"not JSON under a field policy", withFields, msg(`{"name":"Ann"`, nil), fault.Message, fields.ErrNotJSON},
		{"card number as a JSON number", withFields, msg(`{"name":"Ann","card_number":4111111111111111}`, nil), fault.Message, fields.ErrFieldType},
		{"850 KB transit value", withFields, msg(`{"name":"`+bigValue(t)+`"}`, nil), fault.Message, keyring.ErrValueRefused},
		{"per-message policy that is not one", good, msg(`{}`, map[string]string{crypttopic.ProtectKey: "a b=transit"}), fault.Message, fields.ErrPolicy},
		{"reserved metadata key", good, msg(`x`, map[string]string{"pubcrypt-x": "1"}), fault.Message, envelope.ErrInvalidInput},
		{"too large for the broker", good, msg(strings.Repeat("x", 2<<20), nil), fault.Message, crypttopic.ErrTooLarge},
		{"nil message", good, nil, fault.Message, nil},
		{"Vault down", down, msg(`x`, nil), fault.Environment, keyring.ErrUnavailable},
		{"token refused", refused, msg(`x`, nil), fault.Environment, keyring.ErrPermissionDenied},
		{"key missing", missing, msg(`x`, nil), fault.Environment, keyring.ErrKeyNotFound},
		{"broker send fails", closed, msg(`x`, nil), fault.Environment, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.top.Send(ctx, tc.m)
			if err == nil {
				t.Fatal("Send succeeded")
			}
			if c := fault.ClassOf(err); c != tc.class {
				t.Errorf("class %v, want %v: %v", c, tc.class, err)
			}
			if tc.kind != nil && !errors.Is(err, tc.kind) {
				t.Errorf("error %v, want %v", err, tc.kind)
			}
			t.Logf("%v (class %v)", firstLine(err), fault.ClassOf(err))
		})
	}

	// SendValue: a value that does not marshal is the message's fault.
	if err := good.SendValue(ctx, map[string]any{"f": func() {}}, nil); !fault.IsMessage(err) {
		t.Errorf("SendValue of a func: %v (class %v), want a message fault", err, fault.ClassOf(err))
	}
	type tagged struct {
		Card cardAsNumber `json:"card_number" pubcrypt:"fpe"`
	}
	if err := good.SendValue(ctx, tagged{Card: "4111111111111111"}, nil); !fault.IsMessage(err) || !errors.Is(err, fields.ErrFieldType) {
		t.Errorf("SendValue of a card number as a number: %v (class %v), want ErrFieldType, a message fault", err, fault.ClassOf(err))
	}
}

// cardAsNumber marshals a card number as a JSON number, as some producers do.
type cardAsNumber string

func (c cardAsNumber) MarshalJSON() ([]byte, error) { return []byte(c), nil }

func firstLine(err error) string {
	s := err.Error()
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

// TestSendBatchNamesPoisonMessages: a batch with messages that cannot be protected fails
// closed with a *BatchError naming exactly those, and nothing reaches the broker; the
// others, sent again without them, all arrive and decrypt.
func TestSendBatchNamesPoisonMessages(t *testing.T) {
	for _, tc := range []struct {
		topic  string
		policy string
		poison map[int]func(t *testing.T) *pubsub.Message
		kinds  map[int]error
	}{
		{
			topic:  "poison-fields",
			policy: "name=transit,card_number=fpe(bin)",
			poison: map[int]func(t *testing.T) *pubsub.Message{
				2: func(*testing.T) *pubsub.Message { return &pubsub.Message{Body: []byte(`{"name": "no end"`)} },
				5: func(*testing.T) *pubsub.Message {
					return &pubsub.Message{Body: []byte(`{"name":"Ann","card_number":4111111111111111}`)}
				},
				7: func(t *testing.T) *pubsub.Message {
					return &pubsub.Message{Body: []byte(`{"name":"` + bigValue(t) + `","card_number":"4111 1111 1111 1111"}`)}
				},
			},
			kinds: map[int]error{2: fields.ErrNotJSON, 5: fields.ErrFieldType, 7: keyring.ErrValueRefused},
		},
		{
			topic: "poison-body",
			poison: map[int]func(t *testing.T) *pubsub.Message{
				1: func(*testing.T) *pubsub.Message { return &pubsub.Message{Body: bytes.Repeat([]byte("x"), 2<<20)} },
				4: func(*testing.T) *pubsub.Message {
					return &pubsub.Message{Body: []byte(`{}`), Metadata: map[string]string{"k": "\xff"}}
				},
				6: func(*testing.T) *pubsub.Message { return nil },
			},
			kinds: map[int]error{1: crypttopic.ErrTooLarge, 4: envelope.ErrInvalidInput},
		},
	} {
		t.Run(tc.topic, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			opts := crypttopic.Options{Keyring: vaultKeyring(t, vaultServer, "", transitKey)}
			if tc.policy != "" {
				p, err := crypttopic.ParseFieldPolicy(tc.policy)
				if err != nil {
					t.Fatal(err)
				}
				opts.Fields = p
			}
			top, err := crypttopic.Open(ctx, "kafka://"+tc.topic, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer top.Shutdown(context.Background())

			const n = 10
			msgs := make([]*pubsub.Message, n)
			var rest []*pubsub.Message
			for i := range msgs {
				if p, ok := tc.poison[i]; ok {
					msgs[i] = p(t)
					continue
				}
				msgs[i] = &pubsub.Message{Body: purchase(i), Metadata: map[string]string{"seq": fmt.Sprint(i)}}
				rest = append(rest, msgs[i])
			}
			err = top.SendBatch(ctx, msgs)
			var be *crypttopic.BatchError
			if !errors.As(err, &be) {
				t.Fatalf("SendBatch = %v, want a *crypttopic.BatchError", err)
			}
			if fault.ClassOf(err) != fault.Message {
				t.Errorf("class %v, want message", fault.ClassOf(err))
			}
			if len(be.Errs) != n {
				t.Fatalf("%d errors for %d messages", len(be.Errs), n)
			}
			for i, e := range be.Errs {
				_, poison := tc.poison[i]
				switch {
				case poison && e == nil:
					t.Errorf("message %d cannot be protected but has no error", i)
				case !poison && e != nil:
					t.Errorf("message %d is good but: %v", i, e)
				case poison && (!fault.IsMessage(e) || !strings.Contains(e.Error(), fmt.Sprintf("message %d", i))):
					t.Errorf("message %d: %v (class %v), want a message fault naming it", i, e, fault.ClassOf(e))
				case poison && tc.kinds[i] != nil && !errors.Is(e, tc.kinds[i]):
					t.Errorf("message %d: %v, want %v", i, e, tc.kinds[i])
				}
			}
			t.Logf("SendBatch: %v", firstLine(err))

			// Nothing of the failed batch was sent: the topic holds exactly the good
			// messages once they are sent again on their own.
			if err := top.SendBatch(ctx, rest); err != nil {
				t.Fatalf("SendBatch of the %d good messages: %v", len(rest), err)
			}
			rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
			raw, _ := kafka.ReadRaw(rctx, tc.topic, len(rest)+1)
			rcancel()
			if len(raw) != len(rest) {
				t.Fatalf("%d records on the topic, want the %d good messages and nothing of the failed batch", len(raw), len(rest))
			}
			sub, err := cryptsub.Open(ctx, "kafka://g-"+tc.topic+"?topic="+tc.topic+"&offset=oldest", cryptsub.Options{Keyring: vaultKeyring(t, vaultServer, "", transitKey)})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Shutdown(context.Background())
			for range rest {
				m, err := sub.Receive(ctx)
				if err != nil {
					t.Fatal(err)
				}
				var i int
				fmt.Sscan(m.Metadata["seq"], &i)
				if !bytes.Equal(m.Body, purchase(i)) {
					t.Errorf("message %d: body differs", i)
				}
				m.Ack()
			}
		})
	}
}

// TestSendBatchEnvironmentFaultBlamesNoMessage: when the environment fails, the batch
// fails with that fault, whatever else is wrong in it, and no message is named poison.
func TestSendBatchEnvironmentFaultBlamesNoMessage(t *testing.T) {
	ctx := context.Background()
	refused := vaultKeyring(t, vaultServer, "hvs.not-a-real-token-0123456789", transitKey)
	p, err := crypttopic.ParseFieldPolicy("name=transit")
	if err != nil {
		t.Fatal(err)
	}
	msgs := []*pubsub.Message{{Body: purchase(0)}, {Body: []byte(`not json`)}, {Body: purchase(2)}}
	for _, top := range []*crypttopic.Topic{
		memTopic(t, crypttopic.Options{Keyring: refused}),
		memTopic(t, crypttopic.Options{Keyring: refused, Fields: p}),
	} {
		err := top.SendBatch(ctx, msgs)
		var be *crypttopic.BatchError
		if errors.As(err, &be) || fault.ClassOf(err) != fault.Environment || !errors.Is(err, keyring.ErrPermissionDenied) {
			t.Errorf("SendBatch with a refused token = %v (class %v); want the environment fault, no BatchError", err, fault.ClassOf(err))
		}
	}
}

// TestSendBatchBrokerRefusesOneLine: a broker that fails every send of a batch made
// SendBatch's error one line per message (errors.Join), so the outage line of a bridge,
// and the last line of a command that gave up (found by the fault suite: 51 lines for a
// batch of 50 against a silent broker), said the same thing fifty times. Now it is one
// line that counts the messages, and errors.Is still finds each message's error.
func TestSendBatchBrokerRefusesOneLine(t *testing.T) {
	ctx := context.Background()
	mt := mempubsub.NewTopic()
	top, err := crypttopic.New(mt, crypttopic.Options{Keyring: vaultKeyring(t, vaultServer, "", transitKey)})
	if err != nil {
		t.Fatal(err)
	}
	if err := mt.Shutdown(ctx); err != nil { // every send from now on fails: the broker is gone
		t.Fatal(err)
	}
	var msgs []*pubsub.Message
	for i := range 50 {
		msgs = append(msgs, &pubsub.Message{Body: []byte(fmt.Sprintf("message %d", i))})
	}
	err = top.SendBatch(ctx, msgs)
	if err == nil {
		t.Fatal("SendBatch on a topic that was shut down succeeded")
	}
	t.Logf("error: %v", err)
	if strings.Contains(err.Error(), "\n") {
		t.Fatalf("the error of a batch the broker refused takes %d lines; want one:\n%v", strings.Count(err.Error(), "\n")+1, err)
	}
	if !strings.Contains(err.Error(), "50 of 50 messages not sent") {
		t.Errorf("the error does not count the messages: %v", err)
	}
	if fault.ClassOf(err) != fault.Environment {
		t.Errorf("class %v, want environment", fault.ClassOf(err))
	}
	var be *crypttopic.BatchError
	if errors.As(err, &be) {
		t.Errorf("a broker failure is reported as messages at fault: %v", be)
	}
}
