package conformance

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gocloud.dev/pubsub"
	"gocloud.dev/pubsub/gcppubsub"

	"github.com/pubcrypt/pubcrypt/internal/devbrokers"
)

// emuHarness: Google's official Pub/Sub emulator behind gocloud's gcppubsub driver,
// opened by URL as an application would, with PUBSUB_EMULATOR_HOST set. The topic and
// the subscription are created with the admin API first, as on the real service.
type emuHarness struct {
	emu  *devbrokers.Emulator
	name string // topic and subscription
}

const emuProject = "pubcrypt-conformance"

func (h *emuHarness) Name() string { return "gcppubsub (emulator)" }

func (h *emuHarness) OpenTopic(ctx context.Context, t *testing.T) (*pubsub.Topic, string) {
	if err := h.emu.CreateTopic(ctx, emuProject, h.name); err != nil {
		t.Fatal(err)
	}
	top, err := pubsub.OpenTopic(ctx, "gcppubsub://projects/"+emuProject+"/topics/"+h.name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = top.Shutdown(context.Background()) })
	return top, gcppubsub.Scheme
}

func (h *emuHarness) OpenSubscription(ctx context.Context, t *testing.T) *pubsub.Subscription {
	if err := h.emu.CreateSubscription(ctx, emuProject, h.name, h.name, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	sub, err := pubsub.OpenSubscription(ctx, "gcppubsub://projects/"+emuProject+"/subscriptions/"+h.name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Shutdown(context.Background()) })
	return sub
}

// The gcppubsub URL opener dials PUBSUB_EMULATOR_HOST once per process, so the process
// has one emulator, started by the first test that needs it and left to the kernel to
// kill when the test binary exits (devbrokers sets a parent-death signal): stopping it
// after one test would leave the opener's connection dead for the next (-count=2).
var (
	emuOnce    sync.Once
	sharedEmu  *devbrokers.Emulator
	sharedErr  error
	emuStartup time.Duration
	emuRuns    atomic.Int64 // names differ between runs (-count=2) on the one emulator
)

func pubsubEmulator(t *testing.T) *devbrokers.Emulator {
	t.Helper()
	emuOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		sharedEmu, sharedErr = devbrokers.StartPubSubEmulator(ctx)
		if sharedErr == nil {
			emuStartup = sharedEmu.Startup
			os.Setenv("PUBSUB_EMULATOR_HOST", sharedEmu.HostPort)
		}
	})
	if sharedErr != nil {
		t.Fatalf("cannot start the Pub/Sub emulator: %v", sharedErr)
	}
	return sharedEmu
}

func TestConformancePubSubEmulator(t *testing.T) {
	emu := pubsubEmulator(t)
	t.Logf("Pub/Sub emulator on %s, ready in %v", emu.HostPort, emuStartup.Round(time.Millisecond))
	run := emuRuns.Add(1)
	RunConformance(t, vaultServer, func(t *testing.T) Harness {
		return &emuHarness{emu: emu, name: fmt.Sprintf("%s-r%d", resourceName(t), run)}
	})
}
