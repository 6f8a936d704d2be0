// Package devvault starts a real HashiCorp Vault dev server as a child process, for tests
// and the demo. pubcrypt's Vault keyring is tested against the real server rather than a
// fake because the behaviour that matters (error texts, key versions, policies,
// min_decryption_version) is Vault's own; an in-process Vault core would drag hundreds of
// modules into the main module, so the server runs from a binary built once by
// scripts/install-vault.sh.
//
// A dev server keeps everything in memory and unseals itself with a root token; it is a
// test fixture, never a place for real keys. With Options.StorageDir the harness runs a
// real server instead (file storage, initialised and unsealed over the HTTP API), which
// survives Stop, Kill and Restart with its keys: the fault suite kills Vault mid-stream
// and needs the same keys after. Its unseal key and root token live only in the memory
// of the Server value; a storage directory outlives them but can no longer be unsealed.
package devvault

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
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

	"github.com/pubcrypt/pubcrypt/internal/devproc"
)

// VaultVersion is the Vault release scripts/install-vault.sh builds and caches.
const VaultVersion = "v1.21.0"

// ErrNoBinary is returned by Start when no Vault server binary can be found.
var ErrNoBinary = errors.New("Vault server binary not found; run scripts/install-vault.sh (builds Vault " + VaultVersion + " once, ~9 minutes)")

// ErrNotPersistent is returned by Restart of a dev server, which would come back empty.
var ErrNotPersistent = errors.New("devvault: a dev server keeps nothing across a restart; start it with Options.StorageDir")

const (
	startTimeout = 20 * time.Second
	startTries   = 3 // a free port found by listening can be taken before Vault binds it
	stopTimeout  = 10 * time.Second
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
	// StorageDir, if not empty, runs a real server instead of a dev server: file storage
	// in StorageDir/data, its configuration in StorageDir/vault.json, one unseal key
	// share. Such a server survives Stop, Kill and Restart. The directory must not hold
	// an initialised Vault already (its unseal key would be unknown).
	StorageDir string
	// TLSDir, if not empty, makes a dev server listen with TLS (vault server -dev-tls):
	// Vault writes its CA (vault-ca.pem), certificate and key there, Addr is https://,
	// and Client, Env and Setenv trust that CA. Vault then also asks clients for a
	// certificate, which the cert auth method checks. Dev servers only.
	TLSDir string

	// FPEPluginMount, if not empty, loads pubcrypt's Vault FPE plugin (vaultplugin/fpe) into
	// a dev server (-dev-plugin-dir) and enables it at this path; FPEPluginBin names its
	// binary (empty: $PUBCRYPT_FPE_PLUGIN_BIN). Start fails without one. See fpeplugin.go.
	FPEPluginMount, FPEPluginBin string
}

// Server is a running Vault server: a dev server, or a persistent one (Options.StorageDir).
// Its address and root token stay the same across Restart.
type Server struct {
	// Addr is the server's address, http://127.0.0.1:PORT.
	Addr string
	// Token is the root token.
	Token string
	// CACert is the PEM file of the CA that signed a TLS server's certificate, "" without
	// Options.TLSDir.
	CACert string

	log        *slog.Logger
	bin        string
	listen     string // 127.0.0.1:PORT
	storageDir string // "" for a dev server
	tlsDir     string // Options.TLSDir
	unsealKey  string // persistent servers only; never written anywhere
	pluginDir  string // -dev-plugin-dir, with Options.FPEPluginMount

	life sync.Mutex // serialises Stop, Kill and Restart
	mu   sync.Mutex
	proc *process // nil while stopped
}

// process is one run of the Vault binary.
type process struct {
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{} // closed when the child has been reaped
	waitErr error         // set before exited is closed
}

// Start starts a Vault server on a free port of 127.0.0.1, waits until it is healthy,
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
	start := startDev
	if opts.TLSDir != "" && opts.StorageDir != "" {
		return nil, errors.New("devvault: TLSDir is for dev servers only, not with StorageDir")
	}
	if opts.StorageDir != "" {
		start = startPersistent
		// Checked once, before the first try: a try that failed to bind its port may have
		// left files of a never-initialised Vault, which the next try can initialise.
		data := filepath.Join(opts.StorageDir, "data")
		if entries, err := os.ReadDir(data); err == nil && len(entries) > 0 {
			return nil, fmt.Errorf("devvault: %s already holds a Vault, whose unseal key is not known here: give Start an empty StorageDir", data)
		}
	}
	pluginDir, err := fpePluginDir(opts)
	if err != nil {
		return nil, err
	}
	var s *Server
	for try := 1; ; try++ {
		s = &Server{log: log, bin: bin, storageDir: opts.StorageDir, tlsDir: opts.TLSDir, pluginDir: pluginDir}
		err = start(ctx, s)
		if err == nil {
			break
		}
		if try == startTries || !strings.Contains(err.Error(), "address already in use") {
			return nil, err
		}
	}
	if err := s.setup(ctx, opts.Keys); err != nil {
		s.Kill()
		return nil, err
	}
	if opts.FPEPluginMount != "" {
		if err := s.EnableFPEPlugin(ctx, opts.FPEPluginMount); err != nil {
			s.Kill()
			return nil, err
		}
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
		if !devproc.IsExecutable(c.path) {
			return "", fmt.Errorf("devvault: %s=%q is not an executable file: %w", c.from, c.path, ErrNoBinary)
		}
		return c.path, nil
	}
	if p := cachedBinary(); p != "" && devproc.IsExecutable(p) {
		return p, nil
	}
	if p, err := exec.LookPath("vault"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("devvault: %w", ErrNoBinary)
}

func cachedBinary() string { return devproc.Cached("vault", VaultVersion, "vault") }

// startDev starts a dev server on a new free port; the root token goes through the
// environment, not argv, so that ps does not show it, and -dev-no-store-token keeps the
// dev server from writing it to ~/.vault-token.
func startDev(ctx context.Context, s *Server) error {
	if err := s.pickPort(); err != nil {
		return err
	}
	token, err := randomToken()
	if err != nil {
		return err
	}
	s.Token = token
	args := []string{"server", "-dev", "-dev-no-store-token", "-dev-listen-address=" + s.listen}
	if s.tlsDir != "" {
		args = append(args, "-dev-tls", "-dev-tls-cert-dir="+s.tlsDir)
		s.Addr = "https://" + s.listen
		s.CACert = filepath.Join(s.tlsDir, "vault-ca.pem")
	}
	if s.pluginDir != "" {
		args = append(args, "-dev-plugin-dir="+s.pluginDir)
	}
	p, err := s.spawn(args, "VAULT_DEV_ROOT_TOKEN_ID="+token)
	if err != nil {
		return err
	}
	if err := s.waitHealth(ctx, p, active); err != nil {
		return s.failed(p, err)
	}
	s.setProc(p)
	s.log.Info("vault dev server started", "addr", s.Addr, "pid", p.cmd.Process.Pid, "binary", s.bin)
	return nil
}

// startPersistent starts a real server with file storage on a new free port, then
// initialises it with one key share and unseals it.
func startPersistent(ctx context.Context, s *Server) error {
	data := filepath.Join(s.storageDir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return fmt.Errorf("devvault: create storage directory: %w", err)
	}
	if err := s.pickPort(); err != nil {
		return err
	}
	// Vault also binds a cluster listener, by default on the API port + 1; name a free
	// port for it, so that both are chosen once and kept across restarts.
	clusterPort, err := freePort()
	if err != nil {
		return fmt.Errorf("devvault: find a free port: %w", err)
	}
	cluster := net.JoinHostPort("127.0.0.1", strconv.Itoa(clusterPort))
	// JSON rather than HCL: encoding/json quotes any path correctly.
	cfg, err := json.MarshalIndent(map[string]any{
		"storage": map[string]any{"file": map[string]any{"path": data}},
		"listener": map[string]any{"tcp": map[string]any{
			"address": s.listen, "cluster_address": cluster, "tls_disable": true,
		}},
		"cluster_addr":  "https://" + cluster,
		"api_addr":      s.Addr,
		"disable_mlock": true, // tests run unprivileged or in containers without IPC_LOCK
		"ui":            false,
	}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(s.configPath(), cfg, 0o600); err != nil {
		return fmt.Errorf("devvault: write server config: %w", err)
	}
	p, err := s.spawn([]string{"server", "-config=" + s.configPath()})
	if err != nil {
		return err
	}
	if err := s.waitHealth(ctx, p, answering); err != nil {
		return s.failed(p, err)
	}
	c, err := s.rootlessClient()
	if err != nil {
		return s.failed(p, err)
	}
	ans, err := c.Sys().InitWithContext(ctx, &api.InitRequest{SecretShares: 1, SecretThreshold: 1})
	if err != nil {
		return s.failed(p, fmt.Errorf("init: %w", err))
	}
	if len(ans.KeysB64) != 1 || ans.RootToken == "" {
		return s.failed(p, fmt.Errorf("init answered %d key shares and a root token of %d bytes", len(ans.KeysB64), len(ans.RootToken)))
	}
	s.unsealKey, s.Token = ans.KeysB64[0], ans.RootToken
	if err := s.unseal(ctx, p); err != nil {
		return s.failed(p, err)
	}
	s.setProc(p)
	s.log.Info("vault server started", "addr", s.Addr, "pid", p.cmd.Process.Pid, "storage", data, "binary", s.bin)
	return nil
}

func (s *Server) configPath() string { return filepath.Join(s.storageDir, "vault.json") }

func (s *Server) pickPort() error {
	port, err := freePort()
	if err != nil {
		return fmt.Errorf("devvault: find a free port: %w", err)
	}
	s.listen = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s.Addr = "http://" + s.listen
	return nil
}

// spawn starts the Vault binary with its output in a log file of its own.
func (s *Server) spawn(args []string, env ...string) (*process, error) {
	logFile, err := os.CreateTemp("", "devvault-*.log")
	if err != nil {
		return nil, fmt.Errorf("devvault: create log file: %w", err)
	}
	cmd := exec.Command(s.bin, args...)
	cmd.Env = append(childEnv(), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = devproc.SysProcAttr()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		os.Remove(logFile.Name())
		return nil, fmt.Errorf("devvault: start %s: %w", s.bin, err)
	}
	logFile.Close() // the child holds its own descriptor
	p := &process{cmd: cmd, logPath: logFile.Name(), exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// failed kills a process that did not come up and returns err with its log excerpt.
func (s *Server) failed(p *process, err error) error {
	tail := p.logExcerpt()
	p.kill()
	return fmt.Errorf("devvault: %s did not become healthy: %w\n--- vault log (errors and last lines) ---\n%s", s.bin, err, tail)
}

func (s *Server) setProc(p *process) {
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
}

// unseal gives the server its unseal key and waits until it is active.
func (s *Server) unseal(ctx context.Context, p *process) error {
	c, err := s.rootlessClient()
	if err != nil {
		return err
	}
	st, err := c.Sys().UnsealWithContext(ctx, s.unsealKey)
	if err != nil {
		return fmt.Errorf("unseal: %w", err)
	}
	if st.Sealed {
		return errors.New("unseal: still sealed after the one key share")
	}
	return s.waitHealth(ctx, p, active)
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

// Health states waitHealth can wait for.
const (
	answering = iota // the listener answers, whatever the state (a new server is uninitialised)
	active           // initialised, unsealed, active
)

func (s *Server) waitHealth(ctx context.Context, p *process, want int) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	hc := &http.Client{Timeout: time.Second}
	var last error
	for {
		if s.CACert != "" {
			// Written by Vault as it starts: read it again until the server answers.
			pool := x509.NewCertPool()
			if b, err := os.ReadFile(s.CACert); err == nil && pool.AppendCertsFromPEM(b) {
				hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.Addr+"/v1/sys/health", nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || want == answering {
				return nil
			}
			err = fmt.Errorf("health: HTTP %d", resp.StatusCode)
		}
		last = err
		select {
		case <-p.exited:
			return fmt.Errorf("vault exited: %v", p.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// logExcerpt returns the error lines of the server's log and its last lines: Vault prints
// a fatal error near the top of its output, above the log lines that follow it.
func (p *process) logExcerpt() string {
	b, err := os.ReadFile(p.logPath)
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

// stop ends the process, gracefully first if graceful (SIGTERM: Vault seals and closes
// its storage), with SIGKILL after stopTimeout or at once otherwise, waits until it has
// been reaped and removes its log file.
func (p *process) stop(graceful bool) error {
	var err error
	select {
	case <-p.exited:
	default:
		if graceful {
			if err = devproc.Terminate(p.cmd.Process); err == nil {
				select {
				case <-p.exited:
				case <-time.After(stopTimeout):
				}
			}
		}
		select {
		case <-p.exited:
			err = nil
		default:
			if err = devproc.Kill(p.cmd.Process); err != nil && errors.Is(err, os.ErrProcessDone) {
				err = nil
			}
			<-p.exited
		}
	}
	os.Remove(p.logPath)
	if err != nil {
		return fmt.Errorf("devvault: stop vault (pid %d): %w", p.cmd.Process.Pid, err)
	}
	return nil
}

func (p *process) kill() error { return p.stop(false) }

func (s *Server) setup(ctx context.Context, keys []string) error {
	c, err := s.Client()
	if err != nil {
		return err
	}
	if err := c.Sys().MountWithContext(ctx, "transit", &api.MountInput{Type: "transit"}); err != nil {
		return fmt.Errorf("devvault: enable transit: %w", err)
	}
	// The naming key of subject keys (keyring.DefaultSubjectNamingKey; package keyring's
	// tests use this package, so the name is written out): policies with a subject
	// option work on every dev server.
	if err := s.CreateKey(ctx, SubjectNamingKey); err != nil {
		return err
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
	c, err := s.rootlessClient()
	if err != nil {
		return nil, err
	}
	c.SetToken(s.Token)
	return c, nil
}

func (s *Server) rootlessClient() (*api.Client, error) {
	cfg := api.DefaultConfig()
	if cfg.Error != nil {
		return nil, fmt.Errorf("devvault: vault client config: %w", cfg.Error)
	}
	cfg.Address = s.Addr
	if s.CACert != "" {
		if err := cfg.ConfigureTLS(&api.TLSConfig{CACert: s.CACert}); err != nil {
			return nil, fmt.Errorf("devvault: vault client TLS: %w", err)
		}
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("devvault: vault client: %w", err)
	}
	c.ClearToken()
	c.ClearNamespace()
	return c, nil
}

// Env returns VAULT_ADDR and VAULT_TOKEN (and VAULT_CACERT with TLS) for the server, for a
// child process's environment.
func (s *Server) Env() []string {
	env := []string{"VAULT_ADDR=" + s.Addr, "VAULT_TOKEN=" + s.Token}
	if s.CACert != "" {
		env = append(env, "VAULT_CACERT="+s.CACert)
	}
	return env
}

// Setenv points Vault's own environment variables at the server, as a program's would be:
// VAULT_ADDR and VAULT_TOKEN are set and every other VAULT_* variable is removed (a
// VAULT_NAMESPACE or VAULT_CACERT of the caller's shell would misdirect the client). For
// a TestMain whose Example functions configure their keyring from the environment.
func (s *Server) Setenv() error {
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "VAULT_") {
			if err := os.Unsetenv(name); err != nil {
				return err
			}
		}
	}
	for _, kv := range s.Env() {
		name, value, _ := strings.Cut(kv, "=")
		if err := os.Setenv(name, value); err != nil {
			return err
		}
	}
	return nil
}

// PID returns the process ID of the Vault server, 0 while it is stopped.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return 0
	}
	return s.proc.cmd.Process.Pid
}

// Persistent reports whether the server keeps its state across Restart (Options.StorageDir).
func (s *Server) Persistent() bool { return s.storageDir != "" }

// Stop stops the server, waits for it to exit and removes its log file. A persistent
// server is stopped gracefully (SIGTERM, which seals it and closes its storage; SIGKILL
// after 10 s) and can be started again with Restart. A dev server, which keeps nothing,
// is killed at once: a graceful stop costs about half a second that test suites need not
// wait. Stop of a stopped server does nothing.
func (s *Server) Stop() error { return s.end(s.Persistent()) }

// Kill kills the server with SIGKILL, as a crash or the OOM killer would, and waits for
// it to exit. A persistent server can be started again with Restart.
func (s *Server) Kill() error { return s.end(false) }

func (s *Server) end(graceful bool) error {
	s.life.Lock()
	defer s.life.Unlock()
	return s.endLocked(graceful)
}

func (s *Server) endLocked(graceful bool) error {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return nil
	}
	pid := p.cmd.Process.Pid
	err := p.stop(graceful)
	s.log.Info("vault server stopped", "addr", s.Addr, "pid", pid, "graceful", graceful)
	return err
}

// Restart stops a persistent server gracefully if it runs, starts it again on the same
// port with the same storage, unseals it and waits until it is active: its keys, their
// versions and its tokens are there again. Of a dev server it returns ErrNotPersistent.
func (s *Server) Restart(ctx context.Context) error {
	if !s.Persistent() {
		return ErrNotPersistent
	}
	s.life.Lock()
	defer s.life.Unlock()
	if err := s.endLocked(true); err != nil {
		return err
	}
	start := time.Now()
	var err error
	for try := 1; try <= startTries; try++ {
		var p *process
		if p, err = s.spawn([]string{"server", "-config=" + s.configPath()}); err != nil {
			return err
		}
		if err = s.waitHealth(ctx, p, answering); err == nil {
			if err = s.unseal(ctx, p); err == nil {
				s.setProc(p)
				s.log.Info("vault server restarted", "addr", s.Addr, "pid", p.cmd.Process.Pid, "took", time.Since(start))
				return nil
			}
		}
		err = s.failed(p, err)
		// The port is the one clients know: if a closing socket still holds it, try again.
		if !strings.Contains(err.Error(), "address already in use") || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("devvault: restart on %s: %w", s.listen, err)
}

// SubjectNamingKey is the transit key every dev server has for naming subject keys:
// keyring.DefaultSubjectNamingKey.
const SubjectNamingKey = "pubcrypt-subjects"

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
// non-root token that holds only that policy (not even "default"), valid for an hour.
func (s *Server) CreateToken(ctx context.Context, policyName, policyHCL string) (string, error) {
	return s.CreateTokenWith(ctx, TokenOptions{Policy: policyName, PolicyHCL: policyHCL})
}

// TokenOptions configure CreateTokenWith.
type TokenOptions struct {
	// Policy is the one policy the token holds (not even "default").
	Policy string
	// PolicyHCL, if not empty, is written as Policy first.
	PolicyHCL string
	// TTL is how long the token lives; Vault counts whole seconds. 0 means an hour.
	TTL time.Duration
	// NumUses is how many requests the token may make; 0 means no limit.
	NumUses int
}

// CreateTokenWith returns a new non-root token. After its TTL Vault refuses it with "permission denied", as it does a
// revoked one (see RevokeToken).
func (s *Server) CreateTokenWith(ctx context.Context, opts TokenOptions) (string, error) {
	if opts.Policy == "" {
		return "", errors.New("devvault: create token: no policy")
	}
	c, err := s.Client()
	if err != nil {
		return "", err
	}
	if opts.PolicyHCL != "" {
		if err := c.Sys().PutPolicyWithContext(ctx, opts.Policy, opts.PolicyHCL); err != nil {
			return "", fmt.Errorf("devvault: write policy %s: %w", opts.Policy, err)
		}
	}
	ttl := opts.TTL
	if ttl == 0 {
		ttl = time.Hour
	}
	if ttl < time.Second {
		return "", fmt.Errorf("devvault: create token: TTL %v is under Vault's one-second granularity", ttl)
	}
	sec, err := c.Auth().Token().CreateWithContext(ctx, &api.TokenCreateRequest{
		Policies:        []string{opts.Policy},
		NoDefaultPolicy: true,
		TTL:             strconv.Itoa(int(ttl/time.Second)) + "s",
		NumUses:         opts.NumUses,
	})
	if err != nil {
		return "", fmt.Errorf("devvault: create token with policy %s: %w", opts.Policy, err)
	}
	if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		return "", fmt.Errorf("devvault: create token with policy %s: empty answer", opts.Policy)
	}
	return sec.Auth.ClientToken, nil
}

// RevokeToken revokes token (and any token created from it) at once; Vault then
// refuses it with "permission denied".
func (s *Server) RevokeToken(ctx context.Context, token string) error {
	c, err := s.Client()
	if err != nil {
		return err
	}
	// The token goes in the request body (auth/token/revoke), never in a URL or an error.
	if err := c.Auth().Token().RevokeTreeWithContext(ctx, token); err != nil {
		return fmt.Errorf("devvault: revoke token: %w", err)
	}
	return nil
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

// --- AppRole logins ---

// AppRole describes a role CreateAppRole makes: the policy its tokens hold (besides
// "default", which lets a token renew itself) and their lifetimes, as Vault durations
// ("5s", "1h").
type AppRole struct {
	Mount, Name           string
	Policy                string
	TokenTTL, TokenMaxTTL string
}

// CreateAppRole enables AppRole at r.Mount if it is not enabled yet, creates the role,
// issues a secret ID and writes the role ID and the secret ID into two files of dir
// (mode 0600), as an operator hands them to an application. It returns the files.
func (s *Server) CreateAppRole(ctx context.Context, dir string, r AppRole) (roleIDFile, secretIDFile string, err error) {
	c, err := s.Client()
	if err != nil {
		return "", "", err
	}
	mounts, err := c.Sys().ListAuthWithContext(ctx)
	if err != nil {
		return "", "", fmt.Errorf("devvault: list auth methods: %w", err)
	}
	if _, ok := mounts[strings.Trim(r.Mount, "/")+"/"]; !ok {
		if err := c.Sys().EnableAuthWithOptionsWithContext(ctx, r.Mount, &api.EnableAuthOptions{Type: "approle"}); err != nil {
			return "", "", fmt.Errorf("devvault: enable approle at %s: %w", r.Mount, err)
		}
	}
	role := "auth/" + r.Mount + "/role/" + r.Name
	if err := s.write(ctx, "create approle role "+r.Name, role, map[string]any{
		"token_policies": r.Policy, "token_ttl": r.TokenTTL, "token_max_ttl": r.TokenMaxTTL,
	}); err != nil {
		return "", "", err
	}
	id, err := c.Logical().ReadWithContext(ctx, role+"/role-id")
	if err != nil || id == nil {
		return "", "", fmt.Errorf("devvault: read the role ID of %s: %v", r.Name, err)
	}
	sec, err := c.Logical().WriteWithContext(ctx, role+"/secret-id", nil)
	if err != nil || sec == nil {
		return "", "", fmt.Errorf("devvault: issue a secret ID of %s: %v", r.Name, err)
	}
	roleIDFile, secretIDFile = filepath.Join(dir, r.Name+".role-id"), filepath.Join(dir, r.Name+".secret-id")
	for f, v := range map[string]any{roleIDFile: id.Data["role_id"], secretIDFile: sec.Data["secret_id"]} {
		text, _ := v.(string)
		if err := os.WriteFile(f, []byte(text+"\n"), 0o600); err != nil {
			return "", "", fmt.Errorf("devvault: %w", err)
		}
	}
	return roleIDFile, secretIDFile, nil
}
