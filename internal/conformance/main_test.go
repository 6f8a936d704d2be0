package conformance

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pubcrypt/pubcrypt/internal/devvault"
)

// vaultServer is the real Vault dev server of every test here. If it cannot be started
// the package fails: the suite proves behaviour against the real thing.
var vaultServer *devvault.Server

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	srv, err := StartVault(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: cannot start the Vault dev server the conformance suite needs:", err)
		os.Exit(1)
	}
	vaultServer = srv
	code := m.Run()
	_ = srv.Stop()
	os.Exit(code)
}

// resourceName turns a test name into a topic, subject or subscription name every broker
// accepts.
func resourceName(t *testing.T) string {
	return "conf-" + strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, t.Name())
}
