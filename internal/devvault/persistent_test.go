package devvault

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

func encrypt(ctx context.Context, t *testing.T, c *api.Client, key string, extra map[string]any) string {
	t.Helper()
	data := map[string]any{"plaintext": base64.StdEncoding.EncodeToString([]byte("hello"))}
	for k, v := range extra {
		data[k] = v
	}
	sec, err := c.Logical().WriteWithContext(ctx, "transit/encrypt/"+key, data)
	if err != nil {
		t.Fatalf("encrypt with %s: %v", key, err)
	}
	return sec.Data["ciphertext"].(string)
}

func decrypt(ctx context.Context, c *api.Client, key, ct string) error {
	sec, err := c.Logical().WriteWithContext(ctx, "transit/decrypt/"+key, map[string]any{"ciphertext": ct})
	if err != nil {
		return err
	}
	if sec.Data["plaintext"] != base64.StdEncoding.EncodeToString([]byte("hello")) {
		return errors.New("wrong plaintext")
	}
	return nil
}

func latestVersion(ctx context.Context, t *testing.T, c *api.Client, key string) int64 {
	t.Helper()
	sec, err := c.Logical().ReadWithContext(ctx, "transit/keys/"+key)
	if err != nil || sec == nil {
		t.Fatalf("read key %s: %v", key, err)
	}
	v, err := sec.Data["latest_version"].(json.Number).Int64()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestPersistentRestart checks that a file-storage server keeps its keys, their versions,
// its deterministic key material and its tokens across Stop, Kill and Restart, on the
// same address, and that neither the unseal key nor the root token reaches a file.
func TestPersistentRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	start := time.Now()
	s, err := Start(ctx, Options{StorageDir: dir, Keys: []string{"k1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	t.Logf("start + init + unseal + transit: %v", time.Since(start))
	if !s.Persistent() {
		t.Fatal("Persistent() = false")
	}
	addr, token := s.Addr, s.Token
	logPath := s.logPath()

	c, err := s.Client()
	if err != nil {
		t.Fatal(err)
	}
	c.SetMaxRetries(0)
	ct1 := encrypt(ctx, t, c, "k1", nil)
	if err := s.RotateKey(ctx, "k1"); err != nil {
		t.Fatal(err)
	}
	ct2 := encrypt(ctx, t, c, "k1", nil)
	if err := s.CreateFieldKeys(ctx, "det", "fpe"); err != nil {
		t.Fatal(err)
	}
	detCtx := map[string]any{"context": base64.StdEncoding.EncodeToString([]byte("card"))}
	det := encrypt(ctx, t, c, "det", detCtx)
	if err := s.CreateKey(ctx, "retired"); err != nil {
		t.Fatal(err)
	}
	ctOld := encrypt(ctx, t, c, "retired", nil)
	if err := s.RotateKey(ctx, "retired"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetMinDecryptionVersion(ctx, "retired", 2); err != nil {
		t.Fatal(err)
	}
	tok, err := s.CreateToken(ctx, "enc-k1", `path "transit/encrypt/k1" { capabilities = ["update"] }`)
	if err != nil {
		t.Fatal(err)
	}

	check := func(when string) {
		t.Helper()
		if s.Addr != addr || s.Token != token {
			t.Fatalf("%s: address or root token changed", when)
		}
		for _, ct := range []string{ct1, ct2} {
			if err := decrypt(ctx, c, "k1", ct); err != nil {
				t.Errorf("%s: decrypt %.12s…: %v", when, ct, err)
			}
		}
		if v := latestVersion(ctx, t, c, "k1"); v != 2 {
			t.Errorf("%s: k1 latest_version = %d, want 2", when, v)
		}
		// Same key material: a convergent key gives the same ciphertext for the same context.
		if got := encrypt(ctx, t, c, "det", detCtx); got != det {
			t.Errorf("%s: deterministic ciphertext changed: %s -> %s", when, det, got)
		}
		if latestVersion(ctx, t, c, "fpe") != 1 {
			t.Errorf("%s: fpe key missing", when)
		}
		if err := decrypt(ctx, c, "retired", ctOld); err == nil || !strings.Contains(err.Error(), "too old") {
			t.Errorf("%s: min_decryption_version lost: decrypt of v1 = %v", when, err)
		}
		limited, _ := s.Client()
		limited.SetToken(tok)
		encrypt(ctx, t, limited, "k1", nil)
	}
	check("before restart")

	pid := s.PID()
	start = time.Now()
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("graceful restart (stop + start + unseal): %v", time.Since(start))
	if s.PID() == pid || s.PID() == 0 {
		t.Errorf("PID after restart = %d (was %d)", s.PID(), pid)
	}
	check("after graceful restart")

	pid = s.PID()
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	if alive(pid) {
		t.Fatalf("vault pid %d alive after Kill", pid)
	}
	if _, err := c.Sys().HealthWithContext(ctx); err == nil {
		t.Fatal("health answered after Kill")
	}
	start = time.Now()
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("restart after SIGKILL (start + unseal): %v", time.Since(start))
	check("after kill and restart")

	start = time.Now()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("graceful stop: %v", time.Since(start))
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if _, err := os.Stat(logPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("log file %s left behind: %v", logPath, err)
	}
	start = time.Now()
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("start of a stopped server (start + unseal): %v", time.Since(start))
	check("after stop and restart")

	// Secrets stay in memory: no file of the storage directory holds the unseal key or
	// the root token (Vault keeps its data encrypted and tokens as salted hashes).
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for name, secret := range map[string]string{"unseal key": s.unsealKey, "root token": s.Token, "token": tok} {
			if strings.Contains(string(b), secret) {
				t.Errorf("%s holds the %s", path, name)
			}
		}
		return nil
	})
	if b, err := os.ReadFile(s.logPath()); err != nil || strings.Contains(string(b), s.Token) || strings.Contains(string(b), s.unsealKey) {
		t.Errorf("vault log holds a secret (or cannot be read: %v)", err)
	}

	// A second Start on the same directory cannot unseal it: a clear error, not a hang.
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := Start(ctx, Options{StorageDir: dir}); err == nil || !strings.Contains(err.Error(), "already holds a Vault") {
		t.Errorf("Start on an initialised directory = %v", err)
	}
}

func TestRestartOfDevServer(t *testing.T) {
	s, err := Start(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if err := s.Restart(context.Background()); !errors.Is(err, ErrNotPersistent) {
		t.Errorf("Restart of a dev server = %v", err)
	}
}

// TestTokenExpiryAndRevoke checks the two token faults the suite injects: a token whose
// TTL runs out and a revoked one are both refused with "permission denied".
func TestTokenExpiryAndRevoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Start(ctx, Options{Keys: []string{"k"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	const policy = `path "transit/encrypt/k" { capabilities = ["update"] }`
	use := func(tok string) error {
		c, _ := s.Client()
		c.SetToken(tok)
		_, err := c.Logical().WriteWithContext(ctx, "transit/encrypt/k", map[string]any{"plaintext": "aGVsbG8="})
		return err
	}

	const ttl = 3 * time.Second
	created := time.Now()
	short, err := s.CreateTokenWith(ctx, TokenOptions{Policy: "enc", PolicyHCL: policy, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	if err := use(short); err != nil && time.Since(created) < ttl {
		t.Fatalf("fresh token refused: %v", err)
	}
	for {
		err := use(short)
		if err != nil {
			if !strings.Contains(err.Error(), "permission denied") {
				t.Fatalf("expired token: %v, want permission denied", err)
			}
			if time.Since(created) < ttl {
				t.Fatalf("token refused after %v, before its TTL of %v", time.Since(created), ttl)
			}
			t.Logf("a %v token was refused %v after creation", ttl, time.Since(created))
			break
		}
		if ctx.Err() != nil {
			t.Fatal("token never expired")
		}
		time.Sleep(100 * time.Millisecond)
	}

	long, err := s.CreateTokenWith(ctx, TokenOptions{Policy: "enc"}) // the policy is there already
	if err != nil {
		t.Fatal(err)
	}
	if err := use(long); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeToken(ctx, long); err != nil {
		t.Fatal(err)
	}
	if err := use(long); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("revoked token: %v, want permission denied", err)
	}
	// Vault answers 204 to the revocation of a token it does not know: revoking is idempotent.
	if err := s.RevokeToken(ctx, long); err != nil {
		t.Errorf("second revoke: %v", err)
	}

	once, err := s.CreateTokenWith(ctx, TokenOptions{Policy: "enc", NumUses: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := use(once); err != nil {
		t.Fatal(err)
	}
	if err := use(once); err == nil {
		t.Error("a one-use token worked twice")
	}
	if _, err := s.CreateTokenWith(ctx, TokenOptions{Policy: "enc", TTL: time.Millisecond}); err == nil {
		t.Error("a TTL under a second was accepted")
	}
}
