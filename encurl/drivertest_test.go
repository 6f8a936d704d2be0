package encurl

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"gocloud.dev/pubsub"
	"gocloud.dev/pubsub/driver"
	"gocloud.dev/pubsub/drivertest"
	"gocloud.dev/pubsub/kafkapubsub"
	"gocloud.dev/pubsub/mempubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// TestDriverConformance runs gocloud's own driver conformance tests
// (gocloud.dev/pubsub/drivertest) on the enc+ driver over mem and over Kafka (the
// package's kfake broker): every message goes through crypttopic and cryptsub with the
// real Vault the package's TestMain starts (VAULT_ADDR, VAULT_TOKEN).
func TestDriverConformance(t *testing.T) {
	for _, inner := range []string{"mem", "kafka"} {
		t.Run(inner, func(t *testing.T) {
			drivertest.RunConformanceTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
				return newHarness(inner)
			}, nil)
		})
	}
}

// harness makes enc+ drivers over an inner gocloud driver. Topics and subscriptions that
// do not exist come from Kafka for both: mempubsub cannot make one through its exported
// API, and what the enc+ driver does with the inner driver's NotFound is the same
// whatever the driver.
type harness struct {
	inner   string
	keys    keyring.Keyring
	brokers []string
	config  *sarama.Config

	mu     sync.Mutex
	topics map[driver.Topic]string // Kafka topic name of each topic made
}

var harnessSeq atomic.Int64

func newHarness(inner string) (*harness, error) {
	kr, err := keyring.NewVault(keyring.VaultOptions{Key: keyring.DefaultKey})
	if err != nil {
		return nil, err
	}
	s, err := broker.KafkaSettingsFromEnv()
	if err != nil {
		return nil, err
	}
	cfg, err := s.SaramaConfig()
	if err != nil {
		return nil, err
	}
	return &harness{inner: inner, keys: kr, brokers: s.Brokers, config: cfg, topics: map[driver.Topic]string{}}, nil
}

func (h *harness) wrapTopic(inner *pubsub.Topic) (*topic, error) {
	ct, err := crypttopic.New(inner, crypttopic.Options{Keyring: h.keys})
	if err != nil {
		return nil, err
	}
	return &topic{ct: ct}, nil
}

func (h *harness) wrapSubscription(inner *pubsub.Subscription) (driver.Subscription, error) {
	cs, err := cryptsub.New(inner, cryptsub.Options{Keyring: h.keys})
	if err != nil {
		return nil, err
	}
	return newDriverSubscription(cs, nil, broker.CapabilitiesFor(h.inner).CanNack, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))), nil
}

func (h *harness) CreateTopic(ctx context.Context, testName string) (driver.Topic, func(), error) {
	if h.inner == "mem" {
		dt, err := h.wrapTopic(mempubsub.NewTopic())
		return dt, func() {}, err
	}
	name := fmt.Sprintf("dt-%s-%d", strings.NewReplacer("/", "-", " ", "_").Replace(testName), harnessSeq.Add(1))
	admin, err := sarama.NewClusterAdmin(h.brokers, h.config)
	if err != nil {
		return nil, nil, err
	}
	defer admin.Close()
	if err := admin.CreateTopic(name, &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1}, false); err != nil {
		return nil, nil, fmt.Errorf("create topic %s: %w", name, err)
	}
	inner, err := kafkapubsub.OpenTopic(h.brokers, h.config, name, nil)
	if err != nil {
		return nil, nil, err
	}
	dt, err := h.wrapTopic(inner)
	if err != nil {
		return nil, nil, err
	}
	h.mu.Lock()
	h.topics[dt] = name
	h.mu.Unlock()
	return dt, func() {}, nil
}

func (h *harness) MakeNonexistentTopic(ctx context.Context) (driver.Topic, error) {
	inner, err := kafkapubsub.OpenTopic(h.brokers, h.config, "nonexistent-topic", nil)
	if err != nil {
		return nil, err
	}
	return h.wrapTopic(inner)
}

func (h *harness) CreateSubscription(ctx context.Context, dt driver.Topic, testName string) (driver.Subscription, func(), error) {
	if h.inner == "mem" {
		ds, err := h.wrapSubscription(mempubsub.NewSubscription(dt.(*topic).ct.Unwrap(), time.Second))
		return ds, func() {}, err
	}
	h.mu.Lock()
	name := h.topics[dt]
	h.mu.Unlock()
	group := fmt.Sprintf("dt-group-%d", harnessSeq.Add(1))
	inner, err := kafkapubsub.OpenSubscription(h.brokers, h.config, group, []string{name}, &kafkapubsub.SubscriptionOptions{WaitForJoin: time.Minute})
	if err != nil {
		return nil, nil, err
	}
	ds, err := h.wrapSubscription(inner)
	return ds, func() {}, err
}

func (h *harness) MakeNonexistentSubscription(ctx context.Context) (driver.Subscription, func(), error) {
	inner, err := kafkapubsub.OpenSubscription(h.brokers, h.config, "unused-group", []string{"nonexistent-topic"}, nil)
	if err != nil {
		return nil, func() {}, err
	}
	ds, err := h.wrapSubscription(inner)
	return ds, func() {}, err
}

func (h *harness) Close()                              {}
func (h *harness) MaxBatchSizes() (int, int)           { return 0, 0 }
func (h *harness) SupportsMultipleSubscriptions() bool { return true }
