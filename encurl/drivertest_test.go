package encurl

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"gocloud.dev/pubsub"
	"gocloud.dev/pubsub/driver"
	"gocloud.dev/pubsub/drivertest"
	"gocloud.dev/pubsub/mempubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// memHarness runs gocloud's own driver conformance tests (drivertest) on the enc+
// driver over mem: every message goes through crypttopic and cryptsub with a real Vault
// (the package's TestMain points VAULT_ADDR and VAULT_TOKEN at its dev server).
type memHarness struct{ keys keyring.Keyring }

func newMemHarness(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
	kr, err := keyring.NewVault(keyring.VaultOptions{Key: keyring.DefaultKey})
	if err != nil {
		return nil, err
	}
	return &memHarness{keys: kr}, nil
}

func (h *memHarness) wrapTopic(inner *pubsub.Topic) (driver.Topic, error) {
	ct, err := crypttopic.New(inner, crypttopic.Options{Keyring: h.keys})
	if err != nil {
		return nil, err
	}
	return &topic{ct: ct}, nil
}

func (h *memHarness) wrapSubscription(inner *pubsub.Subscription) (driver.Subscription, error) {
	cs, err := cryptsub.New(inner, cryptsub.Options{Keyring: h.keys})
	if err != nil {
		return nil, err
	}
	return newDriverSubscription(cs, nil, true, slog.New(slog.NewTextHandler(os.Stderr, nil))), nil
}

func (h *memHarness) CreateTopic(ctx context.Context, testName string) (driver.Topic, func(), error) {
	dt, err := h.wrapTopic(mempubsub.NewTopic())
	return dt, func() {}, err
}

func (h *memHarness) MakeNonexistentTopic(ctx context.Context) (driver.Topic, error) {
	return nil, fmt.Errorf("TODO")
}

func (h *memHarness) CreateSubscription(ctx context.Context, dt driver.Topic, testName string) (driver.Subscription, func(), error) {
	ds, err := h.wrapSubscription(mempubsub.NewSubscription(dt.(*topic).ct.Unwrap(), time.Second))
	return ds, func() {}, err
}

func (h *memHarness) MakeNonexistentSubscription(ctx context.Context) (driver.Subscription, func(), error) {
	return nil, func() {}, fmt.Errorf("TODO")
}

func (h *memHarness) Close()                              {}
func (h *memHarness) MaxBatchSizes() (int, int)           { return 0, 0 }
func (h *memHarness) SupportsMultipleSubscriptions() bool { return true }

var _ atomic.Int64

func TestDriverConformanceMem(t *testing.T) {
	drivertest.RunConformanceTests(t, newMemHarness, nil)
}
