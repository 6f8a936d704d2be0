package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/fault"
)

// TestKgoSASL: kgo:// reaches a kfake broker that only speaks TLS with SASL, configured
// by a client.properties file, for each mechanism; a wrong password is refused at open
// without being printed. kafka:// refuses SCRAM with an error that names kgo://.
func TestKgoSASL(t *testing.T) {
	cert, caPEM := selfSignedCA(t)
	for _, mech := range []string{"SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"} {
		t.Run(mech, func(t *testing.T) {
			c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "secure"),
				kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}}),
				kfake.EnableSASL(), kfake.Superuser(mech, "APIKEY", "APISECRET"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			clearKafkaEnv(t)
			t.Setenv(EnvKafkaProperties, writeFile(t, "client.properties", "bootstrap.servers="+c.ListenAddrs()[0]+
				"\nsecurity.protocol=SASL_SSL\nsasl.mechanism="+mech+"\nsasl.username=APIKEY\nsasl.password=APISECRET\n"))
			t.Setenv(EnvKafkaCAFile, writeFile(t, "ca.pem", caPEM))
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()

			sub, err := OpenSubscription(ctx, "kgo://g?topic=secure&offset=oldest&key_name=user")
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Shutdown(context.Background())
			top, err := OpenTopic(ctx, "kgo://secure?key_name=user")
			if err != nil {
				t.Fatal(err)
			}
			if err := top.Send(ctx, &pubsub.Message{Body: []byte("over TLS"), Metadata: map[string]string{"k": "v", "user": "u1"}}); err != nil {
				t.Fatal(err)
			}
			_ = top.Shutdown(ctx)
			m, err := sub.Receive(ctx)
			if err != nil {
				t.Fatal(err)
			}
			m.Ack()
			if string(m.Body) != "over TLS" || m.Metadata["k"] != "v" || m.Metadata["user"] != "u1" {
				t.Fatalf("got %q %v", m.Body, m.Metadata)
			}
			topic, part, off, ok := KafkaPosition(m)
			if !ok || topic != "secure" || off != 0 {
				t.Fatalf("KafkaPosition = %s %d %d %v", topic, part, off, ok)
			}
			if p := Position(m); p != fmt.Sprintf("topic secure partition %d offset 0", part) {
				t.Fatalf("Position = %q", p)
			}
			// Commit stores the offset now, with the subscription still open.
			if err := Commit(ctx, sub, []*pubsub.Message{m}); err != nil {
				t.Fatal(err)
			}
			s, err := KafkaSettingsFromEnv()
			if err != nil {
				t.Fatal(err)
			}
			adm, err := s.admin()
			if err != nil {
				t.Fatal(err)
			}
			defer adm.Close()
			offs, err := adm.FetchOffsets(ctx, "g")
			if err != nil {
				t.Fatal(err)
			}
			if o, ok := offs.Lookup("secure", part); !ok || o.At != 1 {
				t.Fatalf("committed %+v, want 1", o)
			}

			t.Setenv(EnvKafkaSASLPassword, "WRONGSECRET")
			bad, err := OpenTopicWith(ctx, "kgo://secure", Options{Timeout: 5 * time.Second})
			if err == nil {
				_ = bad.Shutdown(ctx)
				t.Fatal("wrong SASL password accepted")
			}
			if strings.Contains(err.Error(), "WRONGSECRET") {
				t.Fatalf("error prints the password: %v", err)
			}
			t.Logf("wrong password: %v", err)

			if strings.HasPrefix(mech, "SCRAM") {
				_, err := OpenTopic(ctx, "kafka://secure")
				if err == nil || !strings.Contains(err.Error(), "use kgo://") {
					t.Fatalf("kafka:// with %s: err = %v, want one that names kgo://", mech, err)
				}
			}
		})
	}
}

// TestKgoOpen: a missing topic is ErrTopicNotFound at open, a silent broker fails the
// open after Options.Timeout as an environment fault, and a CreateKafkaTopics topic
// opens.
func TestKgoOpen(t *testing.T) {
	startKfake(t, "present")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := OpenTopic(ctx, "kgo://absent"); !errors.Is(err, ErrTopicNotFound) {
		t.Fatalf("topic: err = %v, want ErrTopicNotFound", err)
	}
	if _, err := OpenSubscription(ctx, "kgo://g?topic=absent"); !errors.Is(err, ErrTopicNotFound) {
		t.Fatalf("subscription: err = %v, want ErrTopicNotFound", err)
	}
	top, err := OpenTopic(ctx, "kgo://present")
	if err != nil {
		t.Fatal(err)
	}
	var cl *kgo.Client
	if !top.As(&cl) || cl == nil {
		t.Fatal("topic As(**kgo.Client) failed")
	}
	if _, err := kadm.NewClient(cl).ListTopics(ctx, "present"); err != nil {
		t.Fatal(err)
	}
	// A record as large as the Kafka limits allow is accepted by franz-go and the broker.
	big := &pubsub.Message{Body: make([]byte, LimitsFor("kgo").MaxTotalBytes)}
	if err := LimitsFor("kgo").Check(big.Body, nil); err != nil {
		t.Fatal(err)
	}
	if err := top.Send(ctx, big); err != nil {
		t.Fatalf("a record of %d bytes: %v", len(big.Body), err)
	}
	_ = top.Shutdown(ctx)

	t.Setenv(EnvKafkaBrokers, silentListener(t))
	start := time.Now()
	_, err = OpenTopicWith(context.Background(), "kgo://purchases", Options{Timeout: 2 * time.Second})
	took := time.Since(start)
	if err == nil || fault.ClassOf(err) != fault.Environment || took > 10*time.Second {
		t.Fatalf("silent broker: err = %v (class %v) after %v, want an environment fault after about 2s", err, fault.ClassOf(err), took)
	}
	t.Logf("silent broker: %v after %v", err, took.Round(time.Millisecond))
	if _, err := OpenSubscriptionWith(ctx, "kgo://g?topic=t", Options{Timeout: 5 * time.Second}); err == nil || !strings.Contains(err.Error(), "too short") {
		t.Fatalf("subscription with a 5s timeout: err = %v, want too short", err)
	}
}
