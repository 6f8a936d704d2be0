package broker

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"gocloud.dev/pubsub"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// startKfake starts a one-broker kfake cluster holding topics (one partition each), for
// the test's lifetime, and points the Kafka settings of the environment at it alone.
func startKfake(t *testing.T, topics ...string) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topics...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	clearKafkaEnv(t)
	t.Setenv(EnvKafkaBrokers, c.ListenAddrs()[0])
	return c
}

func clearKafkaEnv(t *testing.T) {
	for _, k := range []string{EnvKafkaBrokers, EnvKafkaProperties, EnvKafkaSASLUsername, EnvKafkaSASLPassword, EnvKafkaSASLMechanism, EnvKafkaTLS, EnvKafkaCAFile} {
		t.Setenv(k, "")
	}
}

func TestKafkaSettings(t *testing.T) {
	confluent := `# Required connection configs for Kafka producer, consumer, and admin
bootstrap.servers=pkc-abc12.eu-west-1.aws.confluent.cloud:9092
security.protocol=SASL_SSL
sasl.mechanisms=PLAIN
sasl.username=APIKEY123
sasl.password=s3cret/+=
session.timeout.ms=45000
`
	jaas := `bootstrap.servers=b1:9092, b2:9092
security.protocol=SASL_SSL
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username='KEY' password='SECRET';
`
	for _, tc := range []struct {
		name    string
		env     map[string]string
		want    KafkaSettings
		wantErr string
	}{
		{name: "brokers only", env: map[string]string{EnvKafkaBrokers: "127.0.0.1:9092"},
			want: KafkaSettings{Brokers: []string{"127.0.0.1:9092"}}},
		{name: "confluent properties", env: map[string]string{EnvKafkaProperties: "FILE:" + confluent},
			want: KafkaSettings{Brokers: []string{"pkc-abc12.eu-west-1.aws.confluent.cloud:9092"}, TLS: true, SASLMechanism: "PLAIN", SASLUsername: "APIKEY123", SASLPassword: "s3cret/+="}},
		{name: "jaas config", env: map[string]string{EnvKafkaProperties: "FILE:" + jaas},
			want: KafkaSettings{Brokers: []string{"b1:9092", "b2:9092"}, TLS: true, SASLMechanism: "PLAIN", SASLUsername: "KEY", SASLPassword: "SECRET"}},
		{name: "env overrides file", env: map[string]string{EnvKafkaProperties: "FILE:" + confluent, EnvKafkaBrokers: "localhost:1", EnvKafkaTLS: "false"},
			want: KafkaSettings{Brokers: []string{"localhost:1"}, SASLMechanism: "PLAIN", SASLUsername: "APIKEY123", SASLPassword: "s3cret/+="}},
		{name: "sasl from env turns TLS on", env: map[string]string{EnvKafkaBrokers: "h:9092", EnvKafkaSASLUsername: "u", EnvKafkaSASLPassword: "p"},
			want: KafkaSettings{Brokers: []string{"h:9092"}, TLS: true, SASLMechanism: "PLAIN", SASLUsername: "u", SASLPassword: "p"}},
		{name: "no brokers", env: map[string]string{}, wantErr: "no brokers"},
		{name: "sasl without password", env: map[string]string{EnvKafkaBrokers: "h:9092", EnvKafkaSASLUsername: "u"}, wantErr: "needs a username and a password"},
		{name: "bad TLS flag", env: map[string]string{EnvKafkaBrokers: "h:9092", EnvKafkaTLS: "maybe"}, wantErr: "not true or false"},
		{name: "unsupported mechanism", env: map[string]string{EnvKafkaBrokers: "h:9092", EnvKafkaSASLMechanism: "GSSAPI"}, wantErr: "not supported"},
		{name: "missing file", env: map[string]string{EnvKafkaProperties: "/nonexistent/client.properties"}, wantErr: "read client properties"},
		{name: "bad line", env: map[string]string{EnvKafkaProperties: "FILE:bootstrap.servers\n"}, wantErr: "line 1: expected key=value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearKafkaEnv(t)
			for k, v := range tc.env {
				if rest, ok := strings.CutPrefix(v, "FILE:"); ok {
					v = writeFile(t, "client.properties", rest)
				}
				t.Setenv(k, v)
			}
			got, err := KafkaSettingsFromEnv()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != tc.want.String() || got.SASLPassword != tc.want.SASLPassword {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			if strings.Contains(got.String(), "s3cret") || strings.Contains(got.String(), "SECRET") {
				t.Fatalf("String() prints the password: %s", got)
			}
		})
	}
}

// selfSignedCA returns a server certificate for 127.0.0.1 and its PEM, to stand in for a
// managed cluster's TLS endpoint.
func selfSignedCA(t *testing.T) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kfake"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// TestKafkaTLSAndSASL sends and receives through a kfake broker that, like Confluent
// Cloud, only speaks TLS with SASL PLAIN, configured by a client.properties file.
func TestKafkaTLSAndSASL(t *testing.T) {
	cert, caPEM := selfSignedCA(t)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "secure"),
		kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}}),
		kfake.EnableSASL(), kfake.Superuser("PLAIN", "APIKEY", "APISECRET"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	clearKafkaEnv(t)
	t.Setenv(EnvKafkaProperties, writeFile(t, "client.properties", "bootstrap.servers="+c.ListenAddrs()[0]+
		"\nsecurity.protocol=SASL_SSL\nsasl.mechanisms=PLAIN\nsasl.username=APIKEY\nsasl.password=APISECRET\n"))
	t.Setenv(EnvKafkaCAFile, writeFile(t, "ca.pem", caPEM))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	roundTrip(t, ctx, "secure", "g", "over TLS")

	// A wrong password is refused by the broker, and the error does not print it.
	t.Setenv(EnvKafkaSASLPassword, "WRONGSECRET")
	bad, err := OpenTopic(ctx, "kafka://secure")
	if err == nil {
		err = bad.Send(ctx, &pubsub.Message{Body: []byte("x")})
		_ = bad.Shutdown(ctx)
	}
	if err == nil {
		t.Fatal("wrong SASL password accepted")
	}
	if strings.Contains(err.Error(), "WRONGSECRET") {
		t.Fatalf("error prints the password: %v", err)
	}
	t.Logf("wrong password: %v", err)
}

// roundTrip sends body on topic through the opener and receives it back in group, as the
// settings in the environment say to reach the broker.
func roundTrip(t *testing.T, ctx context.Context, topic, group, body string) {
	t.Helper()
	roundTripOn(t, ctx, "kafka", topic, group, body)
}

// roundTripOn is roundTrip with URLs of scheme (kafka or kgo).
func roundTripOn(t *testing.T, ctx context.Context, scheme, topic, group, body string) {
	t.Helper()
	sub, err := OpenSubscription(ctx, scheme+"://"+group+"?topic="+topic+"&offset=oldest")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Shutdown(context.Background())
	top, err := OpenTopic(ctx, scheme+"://"+topic)
	if err != nil {
		t.Fatal(err)
	}
	if err := top.Send(ctx, &pubsub.Message{Body: []byte(body), Metadata: map[string]string{"k": "v"}}); err != nil {
		t.Fatal(err)
	}
	_ = top.Shutdown(ctx)
	m, err := sub.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m.Ack()
	if string(m.Body) != body || m.Metadata["k"] != "v" {
		t.Fatalf("got %q %v", m.Body, m.Metadata)
	}
}
