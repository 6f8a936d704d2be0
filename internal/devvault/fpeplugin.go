package devvault

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/vault/api"

	"github.com/pubcrypt/pubcrypt/internal/devproc"
)

// FPEPluginName is the file name of pubcrypt's Vault FPE plugin binary, and so the name a
// dev server registers it under.
const FPEPluginName = "pubcrypt-fpe"

// ErrNoFPEPlugin is returned by Start with Options.FPEPluginMount when the plugin binary
// cannot be found.
var ErrNoFPEPlugin = errors.New("pubcrypt's Vault FPE plugin binary not found; build it with scripts/install-fpe-plugin.sh and set PUBCRYPT_FPE_PLUGIN_BIN to the path it prints")

// FindFPEPlugin returns the plugin binary Start would load: explicit if not empty, else
// $PUBCRYPT_FPE_PLUGIN_BIN. Its file name must be FPEPluginName.
func FindFPEPlugin(explicit string) (string, error) {
	path, from := explicit, "Options.FPEPluginBin"
	if path == "" {
		path, from = os.Getenv("PUBCRYPT_FPE_PLUGIN_BIN"), "$PUBCRYPT_FPE_PLUGIN_BIN"
	}
	if path == "" {
		return "", fmt.Errorf("devvault: %w", ErrNoFPEPlugin)
	}
	if !devproc.IsExecutable(path) {
		return "", fmt.Errorf("devvault: %s=%q is not an executable file: %w", from, path, ErrNoFPEPlugin)
	}
	if filepath.Base(path) != FPEPluginName {
		return "", fmt.Errorf("devvault: %s=%q: the plugin binary must be named %s (Vault registers it by file name)", from, path, FPEPluginName)
	}
	return filepath.Abs(path)
}

// fpePluginDir is the -dev-plugin-dir of opts: the directory of the plugin binary, which
// scripts/install-fpe-plugin.sh keeps for that one file (Vault registers every binary in
// it). "" without Options.FPEPluginMount.
func fpePluginDir(opts Options) (string, error) {
	if opts.FPEPluginMount == "" {
		return "", nil
	}
	if opts.StorageDir != "" {
		return "", errors.New("devvault: FPEPluginMount is for dev servers only, not with StorageDir")
	}
	bin, err := FindFPEPlugin(opts.FPEPluginBin)
	if err != nil {
		return "", err
	}
	return filepath.Dir(bin), nil
}

// EnableFPEPlugin enables the FPE plugin, which the dev server registered at start, at
// mount.
func (s *Server) EnableFPEPlugin(ctx context.Context, mount string) error {
	if s.pluginDir == "" {
		return errors.New("devvault: the server was started without Options.FPEPluginMount, so the FPE plugin is not registered")
	}
	c, err := s.Client()
	if err != nil {
		return err
	}
	if err := c.Sys().MountWithContext(ctx, mount, &api.MountInput{Type: FPEPluginName}); err != nil {
		return fmt.Errorf("devvault: enable the FPE plugin at %s: %w", mount, err)
	}
	return nil
}

// CreateFPEPluginKey creates the plugin key name at mount (its first version).
func (s *Server) CreateFPEPluginKey(ctx context.Context, mount, name string) error {
	return s.write(ctx, "create FPE plugin key "+name, mount+"/keys/"+name, nil)
}

// RotateFPEPluginKey adds a version to the plugin key name at mount.
func (s *Server) RotateFPEPluginKey(ctx context.Context, mount, name string) error {
	return s.write(ctx, "rotate FPE plugin key "+name, mount+"/keys/"+name+"/rotate", nil)
}
