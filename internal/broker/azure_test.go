package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"gocloud.dev/pubsub"
	"gocloud.dev/pubsub/azuresb" // azuresb://
)

// Azure offers no emulator that runs without Docker, so these tests prove what can be
// proved locally: Event Hubs' Kafka endpoint speaks TLS + SASL PLAIN with the literal user
// "$ConnectionString" and the namespace's connection string as password, which kfake
// reproduces; Service Bus URLs parse and fail cleanly without a reachable namespace.
// docs/AZURE.md is the runbook against real namespaces.

// fakeKey stands in for a SharedAccessKey: no test output or error may contain it.
const fakeKey = "c2VjcmV0LWtleS1ub3QtcmVhbC0wMTIzNDU2Nzg5YWJjZGVm="

func connectionString(host string) string {
	return "Endpoint=sb://" + host + "/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=" + fakeKey
}

// TestEventHubsSettings reads the client.properties Azure's Kafka quickstarts hand out,
// whose JAAS line quotes with double quotes and whose password holds '=' and ';'.
func TestEventHubsSettings(t *testing.T) {
	cs := connectionString("pubcrypt-demo.servicebus.windows.net")
	props := "bootstrap.servers=pubcrypt-demo.servicebus.windows.net:9093\n" +
		"security.protocol=SASL_SSL\nsasl.mechanism=PLAIN\n" +
		`sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="$ConnectionString" password="` + cs + `";` + "\n"
	for _, tc := range []struct {
		name string
		env  map[string]string
	}{
		{"environment", map[string]string{
			EnvKafkaBrokers:      "pubcrypt-demo.servicebus.windows.net:9093",
			EnvKafkaSASLUsername: "$ConnectionString",
			EnvKafkaSASLPassword: cs,
		}},
		{"client.properties", map[string]string{EnvKafkaProperties: writeFile(t, "client.properties", props)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearKafkaEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			s, err := KafkaSettingsFromEnv()
			if err != nil {
				t.Fatal(err)
			}
			if len(s.Brokers) != 1 || s.Brokers[0] != "pubcrypt-demo.servicebus.windows.net:9093" ||
				!s.TLS || s.SASLMechanism != "PLAIN" || s.SASLUsername != "$ConnectionString" || s.SASLPassword != cs {
				t.Fatalf("settings %v (password equal: %t), want Event Hubs' SASL_SSL/PLAIN as $ConnectionString", s, s.SASLPassword == cs)
			}
			if strings.Contains(s.String(), fakeKey) {
				t.Fatalf("String() prints the connection string's key: %s", s)
			}
		})
	}
}

// TestEventHubsKafkaEndpoint sends and receives through pubcrypt's kafka:// opener against
// a kfake broker set up like an Event Hubs namespace's Kafka endpoint: TLS only, SASL PLAIN,
// user "$ConnectionString", password the connection string; configured by the same
// environment variables docs/AZURE.md exports.
func TestEventHubsKafkaEndpoint(t *testing.T) {
	cert, caPEM := selfSignedCA(t)
	cs := connectionString("pubcrypt-demo.servicebus.windows.net")
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "purchases_encrypted", "purchases_kgo"),
		kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}}),
		kfake.EnableSASL(), kfake.Superuser("PLAIN", "$ConnectionString", cs))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	clearKafkaEnv(t)
	t.Setenv(EnvKafkaBrokers, c.ListenAddrs()[0]) // on Azure: NAMESPACE.servicebus.windows.net:9093
	t.Setenv(EnvKafkaSASLUsername, "$ConnectionString")
	t.Setenv(EnvKafkaSASLPassword, cs)
	t.Setenv(EnvKafkaCAFile, writeFile(t, "ca.pem", caPEM)) // on Azure: the system roots

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	roundTrip(t, ctx, "purchases_encrypted", "pubcrypt-consumer", "via Event Hubs")
	roundTripOn(t, ctx, "kgo", "purchases_kgo", "pubcrypt-consumer", "via Event Hubs on kgo://")

	// A connection string with another key is refused, and the error prints neither.
	t.Setenv(EnvKafkaSASLPassword, strings.Replace(cs, fakeKey, "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk=", 1))
	bad, err := OpenTopic(ctx, "kafka://purchases_encrypted")
	if err == nil {
		err = bad.Send(ctx, &pubsub.Message{Body: []byte("x")})
		_ = bad.Shutdown(ctx)
	}
	if err == nil {
		t.Fatal("wrong connection string accepted")
	}
	if strings.Contains(err.Error(), "SharedAccessKey=") {
		t.Fatalf("error prints the connection string: %v", err)
	}
	t.Logf("wrong connection string: %v", err)
}

// TestAzureLimits: what send-files and the size check do on Azure. Event Hubs (Standard)
// takes 1 MB events, and its Kafka endpoint goes through the kafka limits, which are
// smaller; Service Bus Standard takes 256 KiB, so file chunks shrink to fit.
func TestAzureLimits(t *testing.T) {
	if k := LimitsFor("kafka"); k.MaxTotalBytes <= 0 || k.MaxTotalBytes > 1<<20 {
		t.Errorf("kafka limit %d does not fit Event Hubs' 1 MB event", k.MaxTotalBytes)
	}
	sb := LimitsFor(azuresb.Scheme)
	if sb.MaxTotalBytes != 256<<10 {
		t.Errorf("azuresb limit %d, want 256 KiB", sb.MaxTotalBytes)
	}
	const overhead = 1024
	if got := sb.ChunkSize(512<<10, overhead); got != 256<<10-overhead {
		t.Errorf("azuresb chunk size %d, want %d", got, 256<<10-overhead)
	}
	if err := sb.Check(make([]byte, 256<<10+1), nil); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "Azure Service Bus") {
		t.Errorf("256 KiB body on Service Bus: %v, want ErrTooLarge naming Azure Service Bus", err)
	}
}

// TestServiceBusURL opens azuresb:// URLs through the broker package as the CLI does, with
// a connection string whose namespace is this machine, where no Service Bus listens
// (AMQP over TLS, port 5671): the URL parses, and using it fails in bounded time with an
// error that does not print the key. No network is used.
func TestServiceBusURL(t *testing.T) {
	// gocloud's default azuresb opener reads the variable once per process: this is the
	// only test that opens azuresb:// through it.
	t.Setenv("SERVICEBUS_CONNECTION_STRING", connectionString("localhost"))
	noKey := func(t *testing.T, err error) {
		t.Helper()
		if strings.Contains(err.Error(), fakeKey) {
			t.Fatalf("error prints the SharedAccessKey: %v", err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	top, err := OpenTopic(ctx, "azuresb://purchases_encrypted")
	if err != nil {
		t.Fatal(err) // the client connects lazily: opening needs no namespace
	}
	sendCtx, sendCancel := context.WithTimeout(ctx, 3*time.Second)
	start := time.Now()
	err = top.Send(sendCtx, &pubsub.Message{Body: []byte("x")})
	sendCancel()
	if err == nil {
		t.Fatal("send to a namespace that does not exist succeeded")
	}
	// gocloud retries the refused connection until the caller's deadline: that bounds it.
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("send gave up after %v, want about the 3 s deadline", d)
	}
	noKey(t, err)
	t.Logf("send without a namespace, after %v: %v", time.Since(start).Round(time.Millisecond), err)
	shutCtx, shutCancel := context.WithTimeout(ctx, 2*time.Second)
	_ = top.Shutdown(shutCtx)
	shutCancel()

	sub, err := OpenSubscription(ctx, "azuresb://purchases_encrypted?subscription=billing&listener_timeout=1s")
	if err != nil {
		t.Fatal(err)
	}
	recvCtx, recvCancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = sub.Receive(recvCtx)
	recvCancel()
	if err == nil {
		t.Fatal("receive from a namespace that does not exist succeeded")
	}
	noKey(t, err)
	t.Logf("receive without a namespace: %v", err)
	shutCtx, shutCancel = context.WithTimeout(ctx, 2*time.Second)
	_ = sub.Shutdown(shutCtx)
	shutCancel()

	// Configuration mistakes are reported at open, naming what is wrong.
	for _, tc := range []struct {
		name, url, want string
		topic           bool
	}{
		{"subscription without its name", "azuresb://purchases_encrypted", "missing required query parameter subscription", false},
		{"unknown topic parameter", "azuresb://purchases_encrypted?offset=oldest", `invalid query parameter "offset"`, true},
		{"bad listener timeout", "azuresb://purchases_encrypted?subscription=billing&listener_timeout=soon", "invalid listener_timeout", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.topic {
				_, err = OpenTopic(ctx, tc.url)
			} else {
				_, err = OpenSubscription(ctx, tc.url)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			noKey(t, err)
		})
	}

	// A malformed connection string is refused at open, its key redacted.
	o := &azuresb.URLOpener{ConnectionString: "Endpoint=not a url;SharedAccessKey=" + fakeKey}
	u, _ := url.Parse("azuresb://purchases_encrypted")
	if _, err := o.OpenTopicURL(ctx, u); err == nil {
		t.Error("malformed connection string accepted")
	} else {
		noKey(t, err)
		t.Logf("malformed connection string: %v", err)
	}
}
