package devvault

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestFPEPluginMissing: a server asked for the FPE plugin fails to start, before running
// Vault, when the binary cannot be found or is misnamed: tests that need the plugin fail
// rather than skip.
func TestFPEPluginMissing(t *testing.T) {
	dir := t.TempDir()
	misnamed := filepath.Join(dir, "fpe-plugin")
	if err := os.WriteFile(misnamed, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, env, bin string }{
		{"no binary named", "", ""},
		{"env names a missing file", filepath.Join(dir, FPEPluginName), ""},
		{"option names a missing file", "", filepath.Join(dir, "nope", FPEPluginName)},
	} {
		t.Setenv("PUBCRYPT_FPE_PLUGIN_BIN", c.env)
		_, err := Start(context.Background(), Options{FPEPluginMount: "fpe", FPEPluginBin: c.bin})
		if !errors.Is(err, ErrNoFPEPlugin) {
			t.Errorf("%s: Start = %v, want ErrNoFPEPlugin", c.name, err)
		}
	}
	t.Setenv("PUBCRYPT_FPE_PLUGIN_BIN", misnamed)
	if _, err := Start(context.Background(), Options{FPEPluginMount: "fpe"}); err == nil {
		t.Error("Start with a plugin binary not named pubcrypt-fpe succeeded")
	}
}
