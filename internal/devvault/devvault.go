// Package devvault starts a real HashiCorp Vault dev server as a child process, for tests
// and the demo. pubcrypt's Vault keyring is tested against the real server rather than a
// fake because the behaviour that matters (error texts, key versions, policies,
// min_decryption_version) is Vault's own; an in-process Vault core would drag hundreds of
// modules into the main module, so the server runs from a binary built once by
// scripts/install-vault.sh.
//
// A dev server keeps everything in memory and unseals itself with a root token; it is a
// test fixture, never a place for real keys.
package devvault

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
)

// VaultVersion is the Vault release scripts/install-vault.sh builds and caches.
const VaultVersion = "v1.21.0"

// ErrNoBinary is returned by Start when no Vault server binary can be found.
var ErrNoBinary = errors.New("Vault server binary not found; run scripts/install-vault.sh (builds Vault " + VaultVersion + " once, ~9 minutes)")

const (
	startTimeout = 20 * time.Second
	startTries   = 3 // a free port found by listening can be taken before Vault binds it
)

// Options configures Start. The zero value starts a server with transit enabled and no keys.
type Options struct {
	// Binary is the Vault server binary. Empty: $PUBCRYPT_VAULT_BIN, then the cache
	// scripts/install-vault.sh fills, then `vault` on PATH.
	Binary string
	// Keys are transit keys (aes256-gcm96) to create once the server is up.
	Keys []string
	// Logger receives start and stop events; nil discards them.
	Logger *slog.Logger
}

// Server is a running Vault dev server.
type Server struct {
	// Addr is the server's address, http://127.0.0.1:PORT.
	Addr string
	// Token is the root token.
	Token string

	log     *slog.Logger
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{} // closed when the child has been reaped
	waitErr error         // set before exited is closed

	stopOnce sync.Once
	stopErr  error
}

// Start starts a Vault dev server on a free port of 127.0.0.1, waits until it is healthy,
// enables the transit engine at "transit" and creates opts.Keys. The caller must Stop it.
func Start(ctx context.Context, opts Options) (*Server, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	bin, err := FindBinary(opts.Binary)
	if err != nil {
		return nil, err
	}
	var s *Server
	for try := 1; ; try++ {
		s, err = start(ctx, bin, log)
		if err == nil {
			break
		}
		if try == startTries || !strings.Contains(err.Error(), "address already in use") {
			return nil, err
		}
	}
	if err := s.setup(ctx, opts.Keys); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// FindBinary returns the Vault binary Start would run: explicit if not empty, else
// $PUBCRYPT_VAULT_BIN, else ${PUBCRYPT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pubcrypt}/vault/VERSION/vault,
// else `vault` on PATH.
func FindBinary(explicit string) (string, error) {
	for _, c := range []struct{ path, from string }{
		{explicit, "Options.Binary"},
		{os.Getenv("PUBCRYPT_VAULT_BIN"), "$PUBCRYPT_VAULT_BIN"},
	} {
		if c.path == "" {
			continue
		}
		if !isExecutable(c.path) {
			return "", fmt.Errorf("devvault: %s=%q is not an executable file: %w", c.from, c.path, ErrNoBinary)
		}
		return c.path, nil
	}
	if p := cachedBinary(); p != "" && isExecutable(p) {
		return p, nil
	}
	if p, err := exec.LookPath("vault"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("devvault: %w", ErrNoBinary)
}

func cachedBinary() string {
	cache := os.Getenv("PUBCRYPT_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return ""
			}
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "pubcrypt")
	}
	return filepath.Join(cache, "vault", VaultVersion, "vault")
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

func start(ctx context.Context, bin string, log *slog.Logger) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("devvault: find a free port: %w", err)
	}
	token, err := randomToken()
	if err != nil {
		return nil, err
	}
	logFile, err := os.CreateTemp("", "devvault-*.log")
	if err != nil {
		return nil, fmt.Errorf("devvault: create log file: %w", err)
	}
	listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	// The token goes through the environment, not argv, so that ps does not show it;
	// -dev-no-store-token keeps the dev server from writing it to ~/.vault-token.
	cmd := exec.Command(bin, "server", "-dev", "-dev-no-store-token", "-dev-listen-address="+listen)
	cmd.Env = append(childEnv(), "VAULT_DEV_ROOT_TOKEN_ID="+token)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		os.Remove(logFile.Name())
		return nil, fmt.Errorf("devvault: start %s: %w", bin, err)
	}
	logFile.Close() // the child holds its own descriptor
	s := &Server{
		Addr:    "http://" + listen,
		Token:   token,
		log:     log,
		cmd:     cmd,
		logPath: logFile.Name(),
		exited:  make(chan struct{}),
	}
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitHealthy(ctx); err != nil {
		tail := s.logExcerpt()
		s.Stop()
		return nil, fmt.Errorf("devvault: %s did not become healthy: %w\n--- vault log (errors and last lines) ---\n%s", bin, err, tail)
	}
	log.Info("vault dev server started", "addr", s.Addr, "pid", s.PID(), "binary", bin)
	return s, nil
}

// childEnv is the parent's environment without VAULT_* variables, which would otherwise
// configure the dev server (a stray VAULT_ADDR, VAULT_TOKEN, ...).
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") {
			env = append(env, kv)
		}
	}
	return env
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("devvault: random token: %w", err)
	}
	return "devroot-" + hex.EncodeToString(b), nil // Vault refuses "." in a custom token ID
}

func (s *Server) waitHealthy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	hc := &http.Client{Timeout: time.Second}
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.Addr+"/v1/sys/health", nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("health: HTTP %d", resp.StatusCode)
		}
		last = err
		select {
		case <-s.exited:
			return fmt.Errorf("vault exited: %v", s.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// logExcerpt returns the error lines of the server's log and its last lines: Vault prints
// a fatal error near the top of its output, above the log lines that follow it.
func (s *Server) logExcerpt() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	var out []string
	for _, l := range lines {
		if strings.Contains(strings.ToLower(l), "error") && len(out) < 10 {
			out = append(out, l)
		}
	}
	if len(out) > 0 {
		out = append(out, "...")
	}
	out = append(out, lines[max(0, len(lines)-10):]...)
	return strings.Join(out, "\n")
}

func (s *Server) setup(ctx context.Context, keys []string) error {
	c, err := s.Client()
	if err != nil {
		return err
	}
	if err := c.Sys().MountWithContext(ctx, "transit", &api.MountInput{Type: "transit"}); err != nil {
		return fmt.Errorf("devvault: enable transit: %w", err)
	}
	for _, k := range keys {
		if err := s.CreateKey(ctx, k); err != nil {
			return err
		}
	}
	return nil
}

// Client returns a new Vault client for the server, authenticated with the root token.
// It ignores VAULT_* variables of the environment.
func (s *Server) Client() (*api.Client, error) {
	cfg := api.DefaultConfig()
	if cfg.Error != nil {
		return nil, fmt.Errorf("devvault: vault client config: %w", cfg.Error)
	}
	cfg.Address = s.Addr
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("devvault: vault client: %w", err)
	}
	c.SetToken(s.Token)
	c.ClearNamespace()
	return c, nil
}

// Env returns VAULT_ADDR and VAULT_TOKEN for the server, for a child process's environment.
func (s *Server) Env() []string {
	return []string{"VAULT_ADDR=" + s.Addr, "VAULT_TOKEN=" + s.Token}
}

// PID returns the process ID of the Vault server.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Stop kills the server, waits for it to exit and removes its log file. It may be called
// more than once.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		select {
		case <-s.exited:
		default:
			if err := kill(s.cmd.Process); err != nil && !errors.Is(err, os.ErrProcessDone) {
				s.stopErr = fmt.Errorf("devvault: kill vault (pid %d): %w", s.PID(), err)
			}
			<-s.exited
		}
		os.Remove(s.logPath)
		s.log.Info("vault dev server stopped", "addr", s.Addr, "pid", s.PID())
	})
	return s.stopErr
}

// CreateKey creates an aes256-gcm96 transit key.
func (s *Server) CreateKey(ctx context.Context, name string) error {
	return s.write(ctx, "create transit key "+name, "transit/keys/"+name, map[string]any{"type": "aes256-gcm96"})
}

// RotateKey adds a new version to a transit key; new data keys are wrapped under it.
func (s *Server) RotateKey(ctx context.Context, name string) error {
	return s.write(ctx, "rotate transit key "+name, "transit/keys/"+name+"/rotate", nil)
}

// SetMinDecryptionVersion makes Vault refuse to decrypt under versions of the key below v.
func (s *Server) SetMinDecryptionVersion(ctx context.Context, name string, v int) error {
	return s.write(ctx, "set min_decryption_version of "+name, "transit/keys/"+name+"/config", map[string]any{"min_decryption_version": v})
}

// CreateToken writes the policy policyName with the rules policyHCL and returns a new
// non-root token that holds only that policy (not even "default").
func (s *Server) CreateToken(ctx context.Context, policyName, policyHCL string) (string, error) {
	c, err := s.Client()
	if err != nil {
		return "", err
	}
	if err := c.Sys().PutPolicyWithContext(ctx, policyName, policyHCL); err != nil {
		return "", fmt.Errorf("devvault: write policy %s: %w", policyName, err)
	}
	sec, err := c.Auth().Token().CreateWithContext(ctx, &api.TokenCreateRequest{
		Policies:        []string{policyName},
		NoDefaultPolicy: true,
		TTL:             "1h",
	})
	if err != nil {
		return "", fmt.Errorf("devvault: create token with policy %s: %w", policyName, err)
	}
	if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		return "", fmt.Errorf("devvault: create token with policy %s: empty answer", policyName)
	}
	return sec.Auth.ClientToken, nil
}

func (s *Server) write(ctx context.Context, what, path string, data map[string]any) error {
	c, err := s.Client()
	if err != nil {
		return err
	}
	if _, err := c.Logical().WriteWithContext(ctx, path, data); err != nil {
		return fmt.Errorf("devvault: %s: %w", what, err)
	}
	return nil
}

// --- Keys with options (field-level encryption) ---

// CreateKeyWith creates a transit key with the given parameters of transit/keys/NAME,
// e.g. {"type": "aes256-gcm96", "derived": true, "convergent_encryption": true} for the
// deterministic field mode.
func (s *Server) CreateKeyWith(ctx context.Context, name string, opts map[string]any) error {
	return s.write(ctx, "create transit key "+name, "transit/keys/"+name, opts)
}

// CreateFieldKeys creates the transit keys of field-level encryption: det as a derived,
// convergent key (deterministic mode) and fpe as the key FF1 keys are derived from.
func (s *Server) CreateFieldKeys(ctx context.Context, det, fpe string) error {
	if err := s.CreateKeyWith(ctx, det, map[string]any{"derived": true, "convergent_encryption": true}); err != nil {
		return err
	}
	return s.CreateKey(ctx, fpe)
}
