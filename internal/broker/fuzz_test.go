package broker

import (
	"reflect"
	"strings"
	"testing"
)

// The fuzz targets of the Kafka client.properties reader. scripts/fuzz runs each for a
// set time; plain `go test` runs their seeds (and testdata/fuzz/<Target>/, if any) as
// unit tests.

// propertiesOf writes s in the client.properties form ReadKafkaProperties reads.
func propertiesOf(s KafkaSettings) string {
	proto := "PLAINTEXT"
	if s.TLS {
		proto = "SSL"
	}
	lines := []string{
		"bootstrap.servers=" + strings.Join(s.Brokers, ","),
		"security.protocol=" + proto,
		"sasl.username=" + s.SASLUsername,
		"sasl.password=" + s.SASLPassword,
		"ssl.ca.location=" + s.CAFile,
	}
	if s.SASLMechanism != "" {
		lines = append(lines, "sasl.mechanism="+s.SASLMechanism)
	}
	return strings.Join(lines, "\n") + "\n"
}

// FuzzKafkaProperties: ReadKafkaProperties never panics on any file; what it reads
// prints without the password, and writing it back as properties reads the same
// settings (when every value survives the reader's trimming).
func FuzzKafkaProperties(f *testing.F) {
	for _, s := range []string{
		"bootstrap.servers=pkc-1.eu-west-1.aws.confluent.cloud:9092\nsecurity.protocol=SASL_SSL\nsasl.mechanisms=PLAIN\nsasl.username=KEY\nsasl.password=SECRET-1234\n",
		"# comment\n! other comment\n\nbootstrap.servers = a:1 , b:2 ,,\nsecurity.protocol=ssl\nssl.ca.location=/etc/ca.pem\n",
		"bootstrap.servers=a:1\nsasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username='KEY' password='SECRET-1234';\nsecurity.protocol=SASL_PLAINTEXT\n",
		"bootstrap.servers=a:1\r\nsasl.jaas.config=x required username=\"K\" password=\"S\";\r\n",
		"security.protocol=KERBEROS\n",
		"no equals sign\n",
		"sasl.mechanism=scram-sha-512\nsasl.password=\n",
		"=\n",
	} {
		f.Add(s)
	}
	// The parser reads from memory here, so that a run costs no file system call;
	// ReadKafkaProperties only opens the file around it.
	const path = "client.properties"
	f.Fuzz(func(t *testing.T, text string) {
		if len(text) > 16<<10 {
			return
		}
		s, err := parseKafkaProperties(path, strings.NewReader(text))
		if err != nil {
			return
		}
		other := s
		other.SASLPassword += "-other"
		if other.String() != s.String() {
			t.Fatalf("String depends on the password: %q", s.String())
		}
		if strings.ToUpper(s.SASLMechanism) != s.SASLMechanism {
			return // not a fixed point of the reader's upper-casing
		}
		for _, v := range append([]string{s.SASLMechanism, s.SASLUsername, s.SASLPassword, s.CAFile}, s.Brokers...) {
			if v != strings.TrimSpace(v) || strings.ContainsAny(v, "\r\n") {
				return // does not survive a round trip through the reader's trimming
			}
		}
		for _, b := range s.Brokers {
			if b == "" || strings.Contains(b, ",") {
				t.Fatalf("broker %q in %q", b, s.Brokers)
			}
		}
		again := propertiesOf(s)
		got, err := parseKafkaProperties(path, strings.NewReader(again))
		if err != nil || !reflect.DeepEqual(got, s) {
			t.Fatalf("%q reads as %+v; written back as %q it reads as %+v, %v", text, s, again, got, err)
		}
	})
}

// FuzzJAAS: the username and password of a JAAS PlainLoginModule line, quoted either
// way, come back as written, for values without quotes and without the text
// "username=" or "password=" (which the reader does not handle: a known limit).
func FuzzJAAS(f *testing.F) {
	f.Add("KEY", "SECRET-1234", false)
	f.Add("", "", true)
	f.Add("a b", " c ", true)
	f.Add("user;", "p;w=x", false)
	f.Fuzz(func(t *testing.T, user, pass string, double bool) {
		q := "'"
		if double {
			q = `"`
		}
		for _, v := range []string{user, pass} {
			if strings.ContainsAny(v, `'"`) || strings.Contains(v, "username=") || strings.Contains(v, "password=") {
				return
			}
		}
		line := "org.apache.kafka.common.security.plain.PlainLoginModule required username=" + q + user + q + " password=" + q + pass + q + ";"
		if u, p := jaasCredentials(line); u != user || p != pass {
			t.Fatalf("jaasCredentials(%q) = %q, %q", line, u, p)
		}
	})
}
