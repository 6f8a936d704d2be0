package cryptsub_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pubcrypt/pubcrypt/internal/devkafka"
	"github.com/pubcrypt/pubcrypt/internal/devvault"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// vaultServer is a real Vault dev server for every test in this package. If it cannot be
// started the whole package fails: these tests prove behaviour against the real thing.
var vaultServer *devvault.Server

const (
	transitKey = "pubcrypt"
	detKey     = "pubcrypt-det"
	fpeKey     = "pubcrypt-fpe"
)

func TestMain(m *testing.M) {
	devkafka.ServeChildIfAsked() // a benchmark's broker in its own process
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	srv, err := devvault.Start(ctx, devvault.Options{Keys: []string{transitKey}})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: cannot start the Vault dev server these tests need:", err)
		os.Exit(1)
	}
	vaultServer = srv
	if err := srv.Setenv(); err != nil { // the Example functions read VAULT_ADDR and VAULT_TOKEN
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		_ = srv.Stop()
		os.Exit(1)
	}
	ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	err = srv.CreateFieldKeys(ctx, detKey, fpeKey)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: cannot create the field-level keys:", err)
		_ = srv.Stop()
		os.Exit(1)
	}
	code := m.Run()
	_ = srv.Stop()
	os.Exit(code)
}

// newVault returns a keyring on the package's Vault server with its own call counter.
func newVault(t testing.TB, srv *devvault.Server) *keyring.Vault {
	t.Helper()
	c, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	v, err := keyring.NewVault(keyring.VaultOptions{Client: c, Key: transitKey})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// newKafka starts an in-process broker with the given topics and points the kafka://
// opener at it.
func newKafka(t *testing.T, topics ...string) *devkafka.Broker {
	t.Helper()
	b, err := devkafka.Start(devkafka.Options{Topics: topics})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	t.Setenv("KAFKA_BROKERS", b.Addrs[0])
	return b
}

// readRaw reads n records of topic the way an outside admin would: a plain Kafka client,
// no decryption.
func readRaw(t *testing.T, b *devkafka.Broker, topic string, n int) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rs, err := b.ReadRaw(ctx, topic, n)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// produceRaw writes records straight to the broker, bypassing pubcrypt (to tamper).
func produceRaw(t *testing.T, b *devkafka.Broker, rs ...*kgo.Record) {
	t.Helper()
	if err := b.ProduceRaw(context.Background(), rs...); err != nil {
		t.Fatal(err)
	}
}
