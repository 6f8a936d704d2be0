package examples_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pubcrypt/pubcrypt/internal/devvault"
)

// TestMain starts a Vault dev server with the keys the examples use and points Vault's own
// environment variables at it, so the examples configure their keyring as a program
// would. If Vault cannot start, the examples fail: they are documentation that runs.
func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	srv, err := devvault.Start(ctx, devvault.Options{Keys: []string{"pubcrypt"}})
	if err == nil {
		err = srv.CreateFieldKeys(ctx, "pubcrypt-det", "pubcrypt-fpe")
	}
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: cannot start the Vault dev server the examples need:", err)
		if srv != nil {
			_ = srv.Stop()
		}
		os.Exit(1)
	}
	// A VAULT_NAMESPACE or VAULT_CACERT of the caller's shell would misdirect the client.
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "VAULT_") {
			os.Unsetenv(name)
		}
	}
	for _, kv := range srv.Env() {
		name, value, _ := strings.Cut(kv, "=")
		os.Setenv(name, value)
	}
	code := m.Run()
	_ = srv.Stop()
	os.Exit(code)
}
