package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/kgopubsub"
)

// kgoScheme is Kafka through franz-go (package kgopubsub), with the same settings as
// kafka:// (KafkaSettingsFromEnv) and SASL SCRAM besides PLAIN.
const kgoScheme = kgopubsub.Scheme

// IsKafka reports whether scheme reaches Kafka with this package's Kafka settings
// (KafkaSettingsFromEnv): kafka:// or kgo://.
func IsKafka(scheme string) bool { return scheme == kafkaScheme || scheme == kgoScheme }

// kafkaMaxMessageBytes is Kafka's default message.max.bytes; franz-go's own default
// batch bound is lower (1000012), which would refuse records the broker accepts and the
// Kafka limits (LimitsFor) allow.
const kafkaMaxMessageBytes = 1048588

// kgoSessionTimeout is the consumer group session timeout: sarama's default, so that a
// member that died is replaced as fast on kgo:// as on kafka://.
const kgoSessionTimeout = 10 * time.Second

// KgoOpts are the franz-go client options that reach the cluster of s: seed brokers,
// TLS, SASL PLAIN or SCRAM, and timeout as the bound of a dial, of each request's wait
// beyond its own timeout, of retries and of a record's delivery.
func (s KafkaSettings) KgoOpts(timeout time.Duration) ([]kgo.Opt, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(s.Brokers...),
		kgo.ClientID("pubcrypt"),
		kgo.DialTimeout(min(timeout, 10*time.Second)),
		kgo.RequestTimeoutOverhead(timeout),
		kgo.RetryTimeout(timeout),
		kgo.RecordDeliveryTimeout(timeout),
		kgo.ProducerBatchMaxBytes(kafkaMaxMessageBytes),
		kgo.SessionTimeout(kgoSessionTimeout),
		// What pubcrypt sends is ciphertext, which no codec shrinks: franz-go's default
		// (snappy) would only cost CPU on both sides. sarama does not compress either.
		kgo.ProducerBatchCompression(kgo.NoCompression()),
	}
	tc, err := s.tlsConfig()
	if err != nil {
		return nil, err
	}
	if tc != nil {
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	switch s.SASLMechanism {
	case saslPlain:
		opts = append(opts, kgo.SASL(plain.Auth{User: s.SASLUsername, Pass: s.SASLPassword}.AsMechanism()))
	case saslScram256:
		opts = append(opts, kgo.SASL(scram.Auth{User: s.SASLUsername, Pass: s.SASLPassword}.AsSha256Mechanism()))
	case saslScram512:
		opts = append(opts, kgo.SASL(scram.Auth{User: s.SASLUsername, Pass: s.SASLPassword}.AsSha512Mechanism()))
	}
	return opts, nil
}

// requireKgoTopics fails unless every topic exists (one metadata request), as
// requireTopics does for kafka://.
func (s KafkaSettings) requireKgoTopics(ctx context.Context, opts []kgo.Opt, topics []string) error {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	return s.requireKgoTopicsOn(ctx, cl, topics)
}

// requireKgoTopicsOn is requireKgoTopics through cl, a client of s.
func (s KafkaSettings) requireKgoTopicsOn(ctx context.Context, cl *kgo.Client, topics []string) error {
	td, err := kadm.NewClient(cl).ListTopics(ctx, topics...)
	if err != nil {
		return fmt.Errorf("on %s: %w%s", strings.Join(s.Brokers, ","), err, s.kgoHint(err))
	}
	for _, t := range topics {
		d, ok := td[t]
		switch {
		case !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition):
			return fmt.Errorf("%w: %q on %s (create it first)", ErrTopicNotFound, t, strings.Join(s.Brokers, ","))
		case d.Err != nil:
			return fmt.Errorf("topic %q on %s: %w", t, strings.Join(s.Brokers, ","), d.Err)
		}
	}
	return nil
}

// kgoHint tells what to check when no broker answered or authentication failed.
func (s KafkaSettings) kgoHint(err error) string {
	var ne net.Error
	// A broker that wants TLS or refuses the SASL credentials closes the connection: EOF.
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, kerr.SaslAuthenticationFailed) ||
		errors.Is(err, io.EOF) || errors.As(err, &ne) {
		return s.reachHint()
	}
	return ""
}

func openKgoTopic(ctx context.Context, u *url.URL, opts Options) (*pubsub.Topic, error) {
	s, err := KafkaSettingsFromEnv()
	if err != nil {
		return nil, fmt.Errorf("open topic %s: %w", redact(u), err)
	}
	kopts, err := s.KgoOpts(opts.timeout())
	if err != nil {
		return nil, fmt.Errorf("open topic %s: %w", redact(u), err)
	}
	if err := s.requireKgoTopics(ctx, kopts, []string{path.Join(u.Host, u.Path)}); err != nil {
		return nil, fmt.Errorf("open topic %s: %w", redact(u), err)
	}
	o := &kgopubsub.URLOpener{Opts: kopts}
	return o.OpenTopicURL(ctx, u)
}

func openKgoSubscription(ctx context.Context, u *url.URL, opts Options) (*pubsub.Subscription, error) {
	s, err := KafkaSettingsFromEnv()
	if err != nil {
		return nil, fmt.Errorf("open subscription %s: %w", redact(u), err)
	}
	if t := opts.timeout(); t <= kgoSessionTimeout {
		return nil, fmt.Errorf("open subscription %s: a timeout of %v is too short for a consumer group: joining waits up to the session timeout (%v) for a member that died; use more", redact(u), t, kgoSessionTimeout)
	}
	kopts, err := s.KgoOpts(opts.timeout())
	if err != nil {
		return nil, fmt.Errorf("open subscription %s: %w", redact(u), err)
	}
	if err := s.requireKgoTopics(ctx, kopts, u.Query()["topic"]); err != nil {
		return nil, fmt.Errorf("open subscription %s: %w", redact(u), err)
	}
	o := &kgopubsub.URLOpener{Opts: kopts, SubscriptionOptions: kgopubsub.SubscriptionOptions{ReadAhead: opts.ReadAhead}}
	return o.OpenSubscriptionURL(ctx, u)
}

// SendInOrder sends msgs on t as one batch, in order, when t's driver can
// (kgopubsub.SendInOrder: kgo:// topics), and reports whether it could; records of one
// partition then arrive in the order of msgs. Otherwise it sends nothing and returns
// false: the caller sends as it would have.
func SendInOrder(ctx context.Context, t *pubsub.Topic, msgs []*pubsub.Message) (bool, error) {
	return kgopubsub.SendInOrder(ctx, t, msgs)
}

// KeyNaming returns the key_name and key_field of t when it is a kgo:// topic, and false
// otherwise (other drivers do not say): a sender that protects record keys learns from it
// which entry the driver sends as the record key.
func KeyNaming(t *pubsub.Topic) (keyName, keyField string, ok bool) {
	return kgopubsub.KeyNaming(t)
}

// KeepPartition makes out, a message sent on a kgo:// topic opened with
// partitioner=record, go to the partition number src was received from (modulo the
// destination's partitions): records of one source partition, so of one key, stay in one
// destination partition, in order. For a src that was not received from Kafka it does
// nothing; on other topics the hook has no effect. It chains out's BeforeSend.
func KeepPartition(out, src *pubsub.Message) {
	_, partition, _, ok := KafkaPosition(src)
	if !ok {
		return
	}
	before := out.BeforeSend
	out.BeforeSend = func(asFunc func(any) bool) error {
		var r *kgo.Record
		if asFunc(&r) && r != nil {
			r.Partition = partition
		}
		if before != nil {
			return before(asFunc)
		}
		return nil
	}
}

// OpenTransactor opens a transactional member (exactly once, kgopubsub.Transactor) for
// rawURL, a kgo:// subscription URL, with the Kafka settings of the environment, bounded
// as OpenSubscriptionWith is.
func OpenTransactor(ctx context.Context, rawURL string, to kgopubsub.TransactOptions, opts Options) (*kgopubsub.Transactor, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("open subscription: invalid URL %q: %w", rawURL, err)
	}
	if u.Scheme != kgoScheme {
		return nil, fmt.Errorf("open subscription %s: exactly once needs a %s:// subscription", redact(u), kgoScheme)
	}
	if t := opts.timeout(); t <= kgoSessionTimeout {
		return nil, fmt.Errorf("open subscription %s: a timeout of %v is too short for a consumer group: joining waits up to the session timeout (%v) for a member that died; use more", redact(u), t, kgoSessionTimeout)
	}
	open := func(ctx context.Context) (*kgopubsub.Transactor, error) {
		s, err := KafkaSettingsFromEnv()
		if err != nil {
			return nil, fmt.Errorf("open subscription %s: %w", redact(u), err)
		}
		kopts, err := s.KgoOpts(opts.timeout())
		if err != nil {
			return nil, fmt.Errorf("open subscription %s: %w", redact(u), err)
		}
		if err := s.requireKgoTopics(ctx, kopts, u.Query()["topic"]); err != nil {
			return nil, fmt.Errorf("open subscription %s: %w", redact(u), err)
		}
		return (&kgopubsub.URLOpener{Opts: kopts}).OpenTransactorURL(u, to)
	}
	return bounded(ctx, opts.timeout(), "open subscription "+where(u), open, (*kgopubsub.Transactor).Close)
}

// OpenTransactorTopic opens rawURL, a kgo:// topic URL, as a topic that produces inside
// tx's transactions, once it has checked that the topic exists.
func OpenTransactorTopic(ctx context.Context, tx *kgopubsub.Transactor, rawURL string, opts Options) (*pubsub.Topic, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("open topic: invalid URL %q: %w", rawURL, err)
	}
	if u.Scheme != kgoScheme {
		return nil, fmt.Errorf("open topic %s: exactly once needs a %s:// topic", redact(u), kgoScheme)
	}
	s, err := KafkaSettingsFromEnv()
	if err != nil {
		return nil, fmt.Errorf("open topic %s: %w", redact(u), err)
	}
	cctx, cancel := context.WithTimeout(ctx, opts.timeout())
	defer cancel()
	if err := s.requireKgoTopicsOn(cctx, tx.Client(), []string{path.Join(u.Host, u.Path)}); err != nil {
		return nil, fmt.Errorf("open topic %s: %w", redact(u), err)
	}
	t, err := tx.OpenTopicURL(u)
	if err != nil {
		return nil, fmt.Errorf("open topic %s: %w", redact(u), err)
	}
	return t, nil
}
