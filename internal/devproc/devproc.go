// Package devproc holds what the test servers' harnesses (internal/devvault,
// internal/devkms, internal/devbrokers) share about the processes they start: where
// scripts/install-*.sh keep the binaries, whether a path is one, and a process group that
// dies with the test binary.
package devproc

import (
	"errors"
	"os"
	"path/filepath"
)

// CacheDir is where the install scripts put what the tests run: $PUBCRYPT_CACHE, else
// ${XDG_CACHE_HOME:-$HOME/.cache}/pubcrypt.
func CacheDir() (string, error) {
	if d := os.Getenv("PUBCRYPT_CACHE"); d != "" {
		return d, nil
	}
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", errors.New("neither PUBCRYPT_CACHE nor a home directory is set")
		}
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "pubcrypt"), nil
}

// Cached is the path of name under CacheDir, "" if there is no cache directory.
func Cached(elem ...string) string {
	dir, err := CacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(append([]string{dir}, elem...)...)
}

// IsExecutable reports whether path is a regular file someone may execute.
func IsExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}
