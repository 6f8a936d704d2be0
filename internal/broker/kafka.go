package broker

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kgo"
	"gocloud.dev/pubsub"
	"gocloud.dev/pubsub/kafkapubsub"

	"github.com/pubcrypt/pubcrypt/kgopubsub"
)

const kafkaScheme = "kafka"

// Environment variables read by the Kafka opener. KAFKA_BROKERS is gocloud's own name.
const (
	EnvKafkaBrokers       = "KAFKA_BROKERS"             // comma-separated host:port list
	EnvKafkaProperties    = "PUBCRYPT_KAFKA_PROPERTIES" // path of a client.properties file
	EnvKafkaSASLUsername  = "KAFKA_SASL_USERNAME"
	EnvKafkaSASLPassword  = "KAFKA_SASL_PASSWORD"
	EnvKafkaSASLMechanism = "KAFKA_SASL_MECHANISM" // PLAIN (the default when a username is set), SCRAM-SHA-256 or SCRAM-SHA-512 (kgo:// only)
	EnvKafkaTLS           = "KAFKA_TLS"            // true/false; default true when SASL is used
	EnvKafkaCAFile        = "KAFKA_CA_FILE"        // PEM bundle to trust instead of the system roots
)

// KafkaSettings is what the opener needs to reach a cluster. Secrets stay in this struct;
// String() never prints them.
type KafkaSettings struct {
	Brokers       []string
	TLS           bool
	CAFile        string
	SASLMechanism string // "" (none), "PLAIN", "SCRAM-SHA-256" or "SCRAM-SHA-512"
	SASLUsername  string
	SASLPassword  string
}

func (s KafkaSettings) String() string {
	auth := "no SASL"
	if s.SASLMechanism != "" {
		auth = "SASL " + s.SASLMechanism + " as " + s.SASLUsername
	}
	return fmt.Sprintf("brokers=%s tls=%t %s", strings.Join(s.Brokers, ","), s.TLS, auth)
}

// KafkaSettingsFromEnv reads settings from a client.properties file (if
// PUBCRYPT_KAFKA_PROPERTIES names one), then lets the KAFKA_* environment variables
// override single values.
func KafkaSettingsFromEnv() (KafkaSettings, error) {
	var s KafkaSettings
	if path := os.Getenv(EnvKafkaProperties); path != "" {
		var err error
		if s, err = ReadKafkaProperties(path); err != nil {
			return s, err
		}
	}
	if v := os.Getenv(EnvKafkaBrokers); v != "" {
		s.Brokers = splitList(v)
	}
	if v := os.Getenv(EnvKafkaSASLUsername); v != "" {
		s.SASLUsername = v
	}
	if v := os.Getenv(EnvKafkaSASLPassword); v != "" {
		s.SASLPassword = v
	}
	if v := os.Getenv(EnvKafkaSASLMechanism); v != "" {
		s.SASLMechanism = strings.ToUpper(v)
	} else if s.SASLMechanism == "" && s.SASLUsername != "" {
		s.SASLMechanism = "PLAIN"
		s.TLS = true
	}
	if v := os.Getenv(EnvKafkaTLS); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return s, fmt.Errorf("kafka: %s=%q is not true or false", EnvKafkaTLS, v)
		}
		s.TLS = b
	}
	if v := os.Getenv(EnvKafkaCAFile); v != "" {
		s.CAFile = v
	}
	return s, s.validate()
}

// ReadKafkaProperties reads the Kafka client.properties file that Confluent Cloud hands
// out: bootstrap.servers, security.protocol, sasl.mechanism(s), sasl.username and
// sasl.password (or sasl.jaas.config), ssl.ca.location. Other keys are ignored.
func ReadKafkaProperties(path string) (KafkaSettings, error) {
	var s KafkaSettings
	f, err := os.Open(path)
	if err != nil {
		return s, fmt.Errorf("kafka: read client properties: %w", err)
	}
	defer f.Close()
	return parseKafkaProperties(path, f)
}

// parseKafkaProperties reads client.properties text from r; path names it in errors.
func parseKafkaProperties(path string, r io.Reader) (KafkaSettings, error) {
	var s KafkaSettings
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || text[0] == '#' || text[0] == '!' {
			continue
		}
		k, v, ok := strings.Cut(text, "=")
		if !ok {
			return s, fmt.Errorf("kafka: %s line %d: expected key=value", path, line)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "bootstrap.servers":
			s.Brokers = splitList(v)
		case "security.protocol":
			switch strings.ToUpper(v) {
			case "PLAINTEXT":
			case "SSL":
				s.TLS = true
			case "SASL_PLAINTEXT":
				if s.SASLMechanism == "" {
					s.SASLMechanism = "PLAIN"
				}
			case "SASL_SSL":
				s.TLS = true
				if s.SASLMechanism == "" {
					s.SASLMechanism = "PLAIN"
				}
			default:
				return s, fmt.Errorf("kafka: %s line %d: security.protocol %q is not supported (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)", path, line, v)
			}
		case "sasl.mechanism", "sasl.mechanisms":
			s.SASLMechanism = strings.ToUpper(v)
		case "sasl.username":
			s.SASLUsername = v
		case "sasl.password":
			s.SASLPassword = v
		case "sasl.jaas.config":
			s.SASLUsername, s.SASLPassword = jaasCredentials(v)
		case "ssl.ca.location":
			s.CAFile = v
		}
	}
	if err := sc.Err(); err != nil {
		return s, fmt.Errorf("kafka: read client properties %s: %w", path, err)
	}
	return s, nil
}

// jaasCredentials pulls username='...' password='...' out of a Java JAAS line.
func jaasCredentials(v string) (user, pass string) {
	field := func(name string) string {
		i := strings.Index(v, name+"=")
		if i < 0 {
			return ""
		}
		rest := v[i+len(name)+1:]
		if rest == "" {
			return ""
		}
		q := rest[0]
		if q != '\'' && q != '"' {
			return ""
		}
		end := strings.IndexByte(rest[1:], q)
		if end < 0 {
			return ""
		}
		return rest[1 : 1+end]
	}
	return field("username"), field("password")
}

func (s KafkaSettings) validate() error {
	if len(s.Brokers) == 0 {
		return fmt.Errorf("kafka: no brokers: set %s or bootstrap.servers in the file named by %s", EnvKafkaBrokers, EnvKafkaProperties)
	}
	switch s.SASLMechanism {
	case "":
	case saslPlain, saslScram256, saslScram512:
		if s.SASLUsername == "" || s.SASLPassword == "" {
			return fmt.Errorf("kafka: SASL %s needs a username and a password (%s/%s or sasl.username/sasl.password)", s.SASLMechanism, EnvKafkaSASLUsername, EnvKafkaSASLPassword)
		}
	default:
		return fmt.Errorf("kafka: SASL mechanism %q is not supported (%s, %s, %s)", s.SASLMechanism, saslPlain, saslScram256, saslScram512)
	}
	return nil
}

// SASL mechanisms, as client.properties names them.
const (
	saslPlain    = "PLAIN"
	saslScram256 = "SCRAM-SHA-256"
	saslScram512 = "SCRAM-SHA-512"
)

// tlsConfig is the TLS configuration of s, nil without TLS.
func (s KafkaSettings) tlsConfig() (*tls.Config, error) {
	if !s.TLS {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if s.CAFile != "" {
		pem, err := os.ReadFile(s.CAFile)
		if err != nil {
			return nil, fmt.Errorf("kafka: read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kafka: CA file %s holds no PEM certificate", s.CAFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// SaramaConfig builds the client configuration: headers need Kafka ≥ 0.11 and SASL
// against Confluent Cloud needs ≥ 1.0; every write waits for all in-sync replicas.
func (s KafkaSettings) SaramaConfig() (*sarama.Config, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	if strings.HasPrefix(s.SASLMechanism, "SCRAM-") {
		// sarama's SCRAM needs a client from another module; franz-go has its own.
		return nil, fmt.Errorf("kafka: SASL %s is not supported by kafka:// (sarama); use kgo://", s.SASLMechanism)
	}
	c := kafkapubsub.MinimalConfig()
	c.Version = sarama.V2_8_0_0
	c.ClientID = "pubcrypt"
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Return.Errors = true
	tc, err := s.tlsConfig()
	if err != nil {
		return nil, err
	}
	if tc != nil {
		c.Net.TLS.Enable = true
		c.Net.TLS.Config = tc
	}
	if s.SASLMechanism == saslPlain {
		c.Net.SASL.Enable = true
		c.Net.SASL.Mechanism = sarama.SASLTypePlaintext
		c.Net.SASL.User = s.SASLUsername
		c.Net.SASL.Password = s.SASLPassword
		c.Net.SASL.Handshake = true
	}
	return c, nil
}

// withTimeout bounds every request of c to timeout: a broker that accepts connections
// and never answers fails a request after that long instead of after sarama's defaults,
// which add up to minutes. Metadata lookups, retries included, get the same bound.
func withTimeout(c *sarama.Config, timeout time.Duration) {
	c.Net.DialTimeout = min(timeout, 10*time.Second)
	c.Net.ReadTimeout = timeout
	c.Net.WriteTimeout = timeout
	c.Metadata.Timeout = timeout
	// A typo in a topic name must be an error, not a new topic.
	c.Metadata.AllowAutoTopicCreation = false
}

func (s KafkaSettings) opener(opts Options) (*kafkapubsub.URLOpener, error) {
	c, err := s.SaramaConfig()
	if err != nil {
		return nil, err
	}
	withTimeout(c, opts.timeout())
	if opts.ReadAhead > 0 {
		c.ChannelBufferSize = opts.ReadAhead
	}
	return &kafkapubsub.URLOpener{Brokers: s.Brokers, Config: c, TopicOptions: kafkapubsub.TopicOptions{KeyName: noRecordKey}}, nil
}

// noRecordKey is the TopicOptions.KeyName of the topics pubcrypt opens, unless a URL sets
// key_name: a metadata key no message can have (the reserved namespace; a sealed message
// never carries it). kafkapubsub's default, "", would move a metadata entry with an empty
// key out of the headers into the record key, where the receiver does not look: such a
// message would fail authentication (docs/FORMAT.md section 3.1).
const noRecordKey = "pubcrypt-kafka-no-record-key"

// requireTopics fails unless every topic exists: a client that reaches the cluster is
// asked for the topics' partitions (one metadata request), so that a missing or silent
// topic is an error at open rather than a stall at the first send or receive.
func (s KafkaSettings) requireTopics(c *sarama.Config, topics []string) error {
	client, err := sarama.NewClient(s.Brokers, c)
	if err != nil {
		return fmt.Errorf("on %s: %w%s", strings.Join(s.Brokers, ","), err, s.hint(err))
	}
	defer client.Close()
	for _, t := range topics {
		if _, err := client.Partitions(t); err != nil {
			if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
				return fmt.Errorf("%w: %q on %s (create it first)", ErrTopicNotFound, t, strings.Join(s.Brokers, ","))
			}
			return fmt.Errorf("topic %q on %s: %w", t, strings.Join(s.Brokers, ","), err)
		}
	}
	return nil
}

func openKafkaTopic(u *url.URL, opts Options) (*pubsub.Topic, error) {
	s, err := KafkaSettingsFromEnv()
	if err != nil {
		return nil, fmt.Errorf("open topic %s: %w", redact(u), err)
	}
	o, err := s.opener(opts)
	if err != nil {
		return nil, fmt.Errorf("open topic %s: %w", redact(u), err)
	}
	if err := s.requireTopics(o.Config, []string{path.Join(u.Host, u.Path)}); err != nil {
		return nil, fmt.Errorf("open topic %s: %w", redact(u), err)
	}
	t, err := o.OpenTopicURL(context.Background(), u)
	if err != nil {
		return nil, fmt.Errorf("open topic %s on %s: %w%s", redact(u), strings.Join(s.Brokers, ","), err, s.hint(err))
	}
	return t, nil
}

func openKafkaSubscription(u *url.URL, opts Options) (*pubsub.Subscription, error) {
	s, err := KafkaSettingsFromEnv()
	if err != nil {
		return nil, fmt.Errorf("open subscription %s: %w", redact(u), err)
	}
	o, err := s.opener(opts)
	if err != nil {
		return nil, fmt.Errorf("open subscription %s: %w", redact(u), err)
	}
	if session := o.Config.Consumer.Group.Session.Timeout; o.Config.Net.ReadTimeout <= session {
		return nil, fmt.Errorf("open subscription %s: a timeout of %v is too short for a consumer group: joining waits up to the session timeout (%v) for a member that died; use more", redact(u), o.Config.Net.ReadTimeout, session)
	}
	if err := s.requireTopics(o.Config, u.Query()["topic"]); err != nil {
		return nil, fmt.Errorf("open subscription %s: %w", redact(u), err)
	}
	// key_name, as on kafka:// topics and kgo:// subscriptions: the record key goes back
	// into the metadata entry the sender took it from, so that the envelope, which
	// authenticated that entry, verifies (kafkapubsub's URL has no such parameter).
	if q := u.Query(); q.Has("key_name") {
		if len(q["key_name"]) != 1 || q.Get("key_name") == "" {
			return nil, fmt.Errorf("open subscription %s: key_name wants one metadata key", redact(u))
		}
		o.SubscriptionOptions.KeyName = q.Get("key_name")
		q.Del("key_name")
		stripped := *u
		stripped.RawQuery = q.Encode()
		u = &stripped
	}
	sub, err := o.OpenSubscriptionURL(context.Background(), u)
	if err != nil {
		return nil, fmt.Errorf("open subscription %s on %s: %w%s", redact(u), strings.Join(s.Brokers, ","), err, s.hint(err))
	}
	return sub, nil
}

// Commit makes the broker store, where it keeps a consumer group's position (Kafka), that
// msgs — and every message before them on their partitions — are done, and waits until it
// has, or until ctx ends. Call it only once msgs and every message received before them
// were acknowledged. gocloud's kafkapubsub otherwise leaves acknowledged offsets to
// sarama's commit once a second, so a process killed between two commits is sent again
// everything it finished in that second; committing after each batch bounds that to the
// batch. Where acknowledgements are per message (every other broker), Commit does
// nothing. A commit that fails is not reported by sarama; the cost is redelivery.
//
// On kgo:// the subscription commits acknowledged records by itself soon after each ack;
// Commit waits until msgs are committed, and reports a failed commit.
func Commit(ctx context.Context, sub *pubsub.Subscription, msgs []*pubsub.Message) error {
	var cl *kgo.Client
	if sub != nil && sub.As(&cl) {
		return kgopubsub.Commit(ctx, sub, msgs)
	}
	var sess sarama.ConsumerGroupSession
	if sub == nil || !sub.As(&sess) || sess == nil {
		return nil
	}
	type partition struct {
		topic string
		id    int32
	}
	last := map[partition]*sarama.ConsumerMessage{}
	for _, m := range msgs {
		var cm *sarama.ConsumerMessage
		if m == nil || !m.As(&cm) || cm == nil {
			continue
		}
		p := partition{cm.Topic, cm.Partition}
		if prev := last[p]; prev == nil || cm.Offset > prev.Offset {
			last[p] = cm
		}
	}
	if len(last) == 0 {
		return nil
	}
	for _, cm := range last {
		// MarkMessage only moves a partition forward, and does nothing for a partition
		// this member no longer owns after a rebalance.
		sess.MarkMessage(cm, "")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sess.Commit()
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Position names where a received message sits on its broker, for logs and dead letters:
// "topic purchases partition 0 offset 17" on Kafka, the message's LoggableID elsewhere.
func Position(m *pubsub.Message) string {
	if topic, partition, offset, ok := KafkaPosition(m); ok {
		return fmt.Sprintf("topic %s partition %d offset %d", topic, partition, offset)
	}
	if m == nil {
		return "(none)"
	}
	return m.LoggableID
}

// KafkaPosition is where a message received from Kafka was in its topic; ok is false for
// a message of another broker.
func KafkaPosition(m *pubsub.Message) (topic string, partition int32, offset int64, ok bool) {
	if m == nil {
		return "", 0, 0, false
	}
	// pubsub.Message.As panics on a message that was not received (one a program built
	// to send, say); such a message has no position.
	defer func() {
		if recover() != nil {
			topic, partition, offset, ok = "", 0, 0, false
		}
	}()
	var cm *sarama.ConsumerMessage
	if m.As(&cm) && cm != nil {
		return cm.Topic, cm.Partition, cm.Offset, true
	}
	var r *kgo.Record
	if m.As(&r) && r != nil {
		return r.Topic, r.Partition, r.Offset, true
	}
	return "", 0, 0, false
}

// RecordKey returns the Kafka record key m was received with (kafka:// or kgo://), and
// false for a record without one (a null key) or a message not received from Kafka. The
// key is often a customer's ID: callers must not print or log it.
func RecordKey(m *pubsub.Message) (key []byte, ok bool) {
	if m == nil {
		return nil, false
	}
	// As panics on a message that was not received, as in KafkaPosition.
	defer func() {
		if recover() != nil {
			key, ok = nil, false
		}
	}()
	var cm *sarama.ConsumerMessage
	if m.As(&cm) && cm != nil {
		return cm.Key, cm.Key != nil
	}
	var r *kgo.Record
	if m.As(&r) && r != nil {
		return r.Key, r.Key != nil
	}
	return nil, false
}

// hint tells what to check when sarama could reach no broker, which is all it says when
// the address, TLS or the SASL credentials are wrong.
func (s KafkaSettings) hint(err error) string {
	if !errors.Is(err, sarama.ErrOutOfBrokers) {
		return ""
	}
	return s.reachHint()
}

// reachHint names what to check when no broker could be reached.
func (s KafkaSettings) reachHint() string {
	h := fmt.Sprintf(" (check that %s is reachable", strings.Join(s.Brokers, ","))
	if s.TLS {
		h += ", speaks TLS"
	} else {
		h += " without TLS"
	}
	if s.SASLMechanism != "" {
		h += " and accepts the SASL " + s.SASLMechanism + " credentials of " + s.SASLUsername
	}
	return h + ")"
}

// redact drops userinfo from a URL before it reaches an error string.
func redact(u *url.URL) string {
	c := *u
	c.User = nil
	return c.String()
}

func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
