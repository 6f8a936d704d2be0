package encurl

import (
	"context"
	"errors"
	"testing"
	"time"

	"gocloud.dev/pubsub"
	"gocloud.dev/pubsub/driver"

	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// TestSendBatchRestFailsForTheEnvironment: a batch with a message at fault is sent again
// without it; if that second send fails for a fault of the environment (the broker), the
// error every Send of the batch gets is of class Environment, not the first attempt's
// Message: a caller that takes message faults out (dead-letters or drops them) must
// not take out messages that pass once the broker is back. Real Vault (TestMain).
func TestSendBatchRestFailsForTheEnvironment(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kr, err := keyring.NewVault(keyring.VaultOptions{Key: "pubcrypt"}) // VAULT_ADDR, VAULT_TOKEN from TestMain
	if err != nil {
		t.Fatal(err)
	}
	inner, err := pubsub.OpenTopic(ctx, "mem://sendbatch-rest")
	if err != nil {
		t.Fatal(err)
	}
	ct, err := crypttopic.New(inner, crypttopic.Options{Keyring: kr})
	if err != nil {
		t.Fatal(err)
	}
	if err := ct.Check(ctx); err != nil { // the data key is at hand: the sends need no Vault
		t.Fatal(err)
	}
	// The broker is gone: every send to it fails, a fault of the environment.
	if err := inner.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	dms := []*driver.Message{
		{Body: []byte("good 1"), Metadata: map[string]string{"n": "1"}},
		{Body: []byte("poison"), Metadata: map[string]string{"pubcrypt-x": "reserved"}}, // a fault of this message
		{Body: []byte("good 2"), Metadata: map[string]string{"n": "2"}},
	}
	err = (&topic{ct: ct}).SendBatch(ctx, dms)
	var be *crypttopic.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("SendBatch: %v, want it to name the message at fault", err)
	}
	if got := fault.ClassOf(err); got != fault.Environment {
		t.Fatalf("SendBatch: class %v, want environment (the good messages were not sent for the broker's fault): %v", got, err)
	}
	if c := errorCode(err); c == 0 || c.String() == "InvalidArgument" {
		t.Errorf("gocloud code %v, want not InvalidArgument", c)
	}
}
