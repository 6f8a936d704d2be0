package encurl_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/pubcrypt/pubcrypt/internal/devkafka"
	"github.com/pubcrypt/pubcrypt/internal/devvault"
)

// vaultServer is a real Vault dev server for every test of the package; its address and
// token are in VAULT_ADDR and VAULT_TOKEN, where enc+ URLs look for them.
var vaultServer *devvault.Server

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	srv, err := devvault.Start(ctx, devvault.Options{Keys: []string{"pubcrypt", "other"}})
	if err == nil {
		err = srv.CreateFieldKeys(ctx, "pubcrypt-det", "pubcrypt-fpe")
	}
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: cannot start the Vault dev server these tests need:", err)
		if srv != nil {
			_ = srv.Stop()
		}
		os.Exit(1)
	}
	vaultServer = srv
	// One broker for the package: gocloud's own kafka:// opener (which the plain-gocloud
	// application uses) reads KAFKA_BROKERS only once per process.
	kafka, err := devkafka.Start(devkafka.Options{Topics: kafkaTopics})
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: cannot start the Kafka broker these tests need:", err)
		_ = srv.Stop()
		os.Exit(1)
	}
	os.Setenv("KAFKA_BROKERS", kafka.Addrs[0])
	os.Setenv("VAULT_ADDR", srv.Addr)
	os.Setenv("VAULT_TOKEN", srv.Token)
	os.Unsetenv("VAULT_NAMESPACE")
	code := m.Run()
	kafka.Close()
	_ = srv.Stop()
	os.Exit(code)
}

// kafkaTopics are the topics of the package's broker, one set per test.
var kafkaTopics = []string{"kek", "keyed", "transit-batch", "app-plain", "app-enc", "orders", "orders-dlq", "per-message", "outage", "outage-dlq", "expired", "expired-dlq"}
