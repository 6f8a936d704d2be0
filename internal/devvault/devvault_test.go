package devvault

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStartStop(t *testing.T) {
	ctx := context.Background()
	s, err := Start(ctx, Options{Keys: []string{"k1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	c, err := s.Client()
	if err != nil {
		t.Fatal(err)
	}
	h, err := c.Sys().HealthWithContext(ctx)
	if err != nil || !h.Initialized || h.Sealed {
		t.Fatalf("health = %+v, %v", h, err)
	}

	enc, err := c.Logical().WriteWithContext(ctx, "transit/encrypt/k1", map[string]any{"plaintext": "aGVsbG8="})
	if err != nil {
		t.Fatal(err)
	}
	ct := enc.Data["ciphertext"].(string)
	dec, err := c.Logical().WriteWithContext(ctx, "transit/decrypt/k1", map[string]any{"ciphertext": ct})
	if err != nil || dec.Data["plaintext"] != "aGVsbG8=" {
		t.Fatalf("decrypt = %v, %v", dec, err)
	}

	if err := s.RotateKey(ctx, "k1"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetMinDecryptionVersion(ctx, "k1", 2); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Logical().WriteWithContext(ctx, "transit/decrypt/k1", map[string]any{"ciphertext": ct}); err == nil || !strings.Contains(err.Error(), "too old") {
		t.Errorf("decrypt of v1 below min_decryption_version 2 = %v", err)
	}

	if err := s.CreateKey(ctx, "k2"); err != nil {
		t.Fatal(err)
	}
	tok, err := s.CreateToken(ctx, "encrypt-k2", `path "transit/encrypt/k2" { capabilities = ["update"] }`)
	if err != nil {
		t.Fatal(err)
	}
	limited, _ := s.Client()
	limited.SetToken(tok)
	enc, err = limited.Logical().WriteWithContext(ctx, "transit/encrypt/k2", map[string]any{"plaintext": "aGVsbG8="})
	if err != nil {
		t.Fatalf("encrypt with the encrypt-only token: %v", err)
	}
	if _, err := limited.Logical().WriteWithContext(ctx, "transit/decrypt/k2", map[string]any{"ciphertext": enc.Data["ciphertext"]}); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("decrypt with the encrypt-only token = %v", err)
	}

	env := strings.Join(s.Env(), " ")
	if !strings.Contains(env, "VAULT_ADDR="+s.Addr) || !strings.Contains(env, "VAULT_TOKEN="+s.Token) {
		t.Errorf("Env = %v", s.Env())
	}

	pid, logPath := s.PID(), s.logPath()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if alive(pid) {
		t.Errorf("vault pid %d still running after Stop", pid)
	}
	if _, err := os.Stat(logPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("log file %s left behind: %v", logPath, err)
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	c.SetMaxRetries(0)
	if _, err := c.Sys().HealthWithContext(ctx); err == nil {
		t.Error("health answered after Stop")
	}
}

func TestBinaryNotFound(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("PUBCRYPT_VAULT_BIN", "")
	t.Setenv("PUBCRYPT_CACHE", dir)
	t.Setenv("PATH", dir)
	_, err := Start(context.Background(), Options{})
	if !errors.Is(err, ErrNoBinary) || !strings.Contains(err.Error(), "run scripts/install-vault.sh") {
		t.Errorf("Start without a binary = %v", err)
	}
	_, err = FindBinary(filepath.Join(dir, "nope"))
	if !errors.Is(err, ErrNoBinary) || !strings.Contains(err.Error(), "Options.Binary") {
		t.Errorf("FindBinary of a missing explicit path = %v", err)
	}
}

func TestStartFailureShowsLog(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "vault")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho 'listener failed: boom' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := Start(context.Background(), Options{Binary: bin})
	if err == nil || !strings.Contains(err.Error(), "listener failed: boom") {
		t.Errorf("Start of a failing binary = %v, want the log tail in the error", err)
	}
}

// logPath is the log file of the running process, for tests that check it goes away.
func (s *Server) logPath() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return ""
	}
	return s.proc.logPath
}
