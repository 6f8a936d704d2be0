// Package devkms starts local-kms (github.com/nsmithuk/local-kms), an AWS KMS emulator,
// as a child process for tests, as internal/devvault starts Vault: pubcrypt's keyring
// for gocloud secrets keepers is tested against a server that speaks the AWS KMS
// protocol (AWS JSON 1.1, the SDK's own client) rather than a fake of the keeper.
// scripts/install-local-kms.sh builds the binary once from the Go module proxy.
//
// local-kms listens on all interfaces and has no option to bind one address: while it
// runs, anyone who can reach this machine can reach it. It is given a port the kernel
// chooses (PORT=0), its own data directory in a temporary directory (KMS_DATA_PATH), and
// no seed file; clients talk to it only on 127.0.0.1. It checks no signature and no
// permission, so it holds only keys created for a test, never real ones, and it cannot
// test access denied.
package devkms

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/pubcrypt/pubcrypt/internal/devproc"
)

// Version is the local-kms version scripts/install-local-kms.sh builds and caches (the
// module proxy lists no tagged version).
const Version = "v0.0.0-20260228092603-2a5e92d09ab6"

// The emulator's settings, and the dummy static credentials clients sign with (local-kms
// checks no signature, but the AWS SDK refuses to send a request without credentials).
const (
	Region          = "eu-west-2"
	AccountID       = "111122223333"
	AccessKeyID     = "devkms-access-key"
	SecretAccessKey = "devkms-not-a-secret"
)

// ErrNoBinary is returned by Start when no local-kms binary can be found.
var ErrNoBinary = errors.New("local-kms binary not found; run scripts/install-local-kms.sh (builds local-kms " + Version + " from the Go module proxy once, ~11 s)")

const (
	startTimeout = 20 * time.Second
	stopTimeout  = 10 * time.Second
)

// Options configures Start. The zero value is useful.
type Options struct {
	// Binary is the local-kms binary. Empty: $PUBCRYPT_LOCAL_KMS_BIN, then the cache
	// scripts/install-local-kms.sh fills.
	Binary string
	// Logger receives start and stop events; nil discards them.
	Logger *slog.Logger
}

// Server is a running local-kms.
type Server struct {
	// Endpoint is the server's address, http://127.0.0.1:PORT.
	Endpoint string
	// Region is the region its keys live in (their ARNs name it).
	Region string

	log *slog.Logger
	dir string // data directory and log, removed by Stop

	mu   sync.Mutex
	proc *process // nil once stopped
}

type process struct {
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the child has been reaped
	waitErr error         // set before exited is closed
}

// Key is a key created by CreateKey.
type Key struct {
	ID  string // the key ID, a UUID
	ARN string // arn:aws:kms:REGION:ACCOUNT:key/ID
}

// Start starts local-kms on a port of its own, waits until it answers a KMS request on
// 127.0.0.1 and returns it. The caller must Stop it.
func Start(ctx context.Context, opts Options) (*Server, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	bin, err := FindBinary(opts.Binary)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "devkms-")
	if err != nil {
		return nil, fmt.Errorf("devkms: create data directory: %w", err)
	}
	s := &Server{Region: Region, log: log, dir: dir}
	logPath := filepath.Join(dir, "local-kms.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("devkms: create log file: %w", err)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(childEnv(),
		"PORT=0", // the kernel picks a free port, which local-kms logs: no race for it
		"KMS_DATA_PATH="+filepath.Join(dir, "data"),
		"KMS_SEED_PATH="+filepath.Join(dir, "no-seed.yaml"), // else it reads /init/seed.yaml
		"KMS_REGION="+Region,
		"KMS_ACCOUNT_ID="+AccountID,
	)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = devproc.SysProcAttr()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("devkms: start %s: %w", bin, err)
	}
	p := &process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		pw.Close()
		close(p.exited)
	}()
	ports := make(chan string, 1)
	go scanLog(pr, logFile, ports)

	fail := func(err error) (*Server, error) {
		p.stop()
		tail, _ := os.ReadFile(logPath)
		os.RemoveAll(dir)
		return nil, fmt.Errorf("devkms: %s did not start: %w\n--- local-kms log ---\n%s", bin, err, tail)
	}
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	select {
	case port := <-ports:
		s.Endpoint = "http://127.0.0.1:" + port
	case <-p.exited:
		return fail(fmt.Errorf("local-kms exited: %v", p.waitErr))
	case <-ctx.Done():
		return fail(fmt.Errorf("no \"started on\" line in its log: %w", ctx.Err()))
	}
	if err := s.waitReady(ctx, p); err != nil {
		return fail(err)
	}
	s.proc = p
	log.Info("local-kms started", "endpoint", s.Endpoint, "pid", cmd.Process.Pid, "binary", bin)
	return s, nil
}

// startedOn matches local-kms's "Local KMS started on 0.0.0.0:PORT" log line.
var startedOn = regexp.MustCompile(`started on \S*?:(\d+)`)

// scanLog copies the child's output to the log file and sends the port of its first
// "started on" line; it runs until the child's output ends.
func scanLog(r io.Reader, log *os.File, ports chan<- string) {
	defer log.Close()
	sc := bufio.NewScanner(r)
	sent := false
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(log, line)
		if m := startedOn.FindStringSubmatch(line); m != nil && !sent {
			ports <- m[1]
			sent = true
		}
	}
	io.Copy(io.Discard, r) // a line too long for the scanner must not block the child
}

// waitReady calls ListKeys until it succeeds: the port is bound before local-kms logs
// it, so this is normally the first try.
func (s *Server) waitReady(ctx context.Context, p *process) error {
	c := s.client(func(o *kms.Options) { o.Retryer = aws.NopRetryer{} })
	var last error
	for {
		tctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := c.ListKeys(tctx, &kms.ListKeysInput{})
		cancel()
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-p.exited:
			return fmt.Errorf("local-kms exited: %v", p.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// FindBinary returns the local-kms binary Start would run: explicit if not empty, else
// $PUBCRYPT_LOCAL_KMS_BIN, else
// ${PUBCRYPT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pubcrypt}/local-kms/VERSION/local-kms.
func FindBinary(explicit string) (string, error) {
	for _, c := range []struct{ path, from string }{
		{explicit, "Options.Binary"},
		{os.Getenv("PUBCRYPT_LOCAL_KMS_BIN"), "$PUBCRYPT_LOCAL_KMS_BIN"},
	} {
		if c.path == "" {
			continue
		}
		if !devproc.IsExecutable(c.path) {
			return "", fmt.Errorf("devkms: %s=%q is not an executable file: %w", c.from, c.path, ErrNoBinary)
		}
		return c.path, nil
	}
	if p := cachedBinary(); p != "" && devproc.IsExecutable(p) {
		return p, nil
	}
	return "", fmt.Errorf("devkms: %w", ErrNoBinary)
}

func cachedBinary() string { return devproc.Cached("local-kms", Version, "local-kms") }

// childEnv is the parent's environment without the variables local-kms reads (KMS_*
// and their deprecated unprefixed names), which would otherwise configure it.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "PORT", "ACCOUNT_ID", "REGION", "DATA_PATH", "SEED_PATH":
			continue
		}
		if !strings.HasPrefix(name, "KMS_") {
			env = append(env, kv)
		}
	}
	return env
}

// Client returns a KMS client for the server: its endpoint, region and the dummy static
// credentials, and the SDK's standard retries. It reads no AWS_* variable.
func (s *Server) Client() *kms.Client { return s.client() }

func (s *Server) client(optFns ...func(*kms.Options)) *kms.Client {
	return kms.New(kms.Options{
		Region:       s.Region,
		BaseEndpoint: aws.String(s.Endpoint),
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: AccessKeyID, SecretAccessKey: SecretAccessKey, Source: "devkms"}, nil
		}),
	}, optFns...)
}

// Env returns the variables with which an AWS SDK client configured from the
// environment (gocloud's awskms:// opener) reaches the server: the dummy credentials, an
// empty session token, the region, the KMS endpoint (AWS_ENDPOINT_URL_KMS) and no EC2
// metadata lookups. For a test's t.Setenv or a child process's environment.
func (s *Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + AccessKeyID,
		"AWS_SECRET_ACCESS_KEY=" + SecretAccessKey,
		"AWS_SESSION_TOKEN=",
		"AWS_REGION=" + s.Region,
		"AWS_ENDPOINT_URL_KMS=" + s.Endpoint,
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// KeeperURL returns the gocloud URL of a key on this server, with its region and
// endpoint as URL parameters: awskms:///KEY?region=...&endpoint=.... The credentials
// still come from the environment (see Env).
func (s *Server) KeeperURL(key string) string {
	q := url.Values{"region": {s.Region}, "endpoint": {s.Endpoint}}
	return "awskms:///" + key + "?" + q.Encode()
}

// CreateKey creates a symmetric encryption key (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT).
func (s *Server) CreateKey(ctx context.Context, description string) (*Key, error) {
	out, err := s.Client().CreateKey(ctx, &kms.CreateKeyInput{
		Description: aws.String(description),
		KeySpec:     types.KeySpecSymmetricDefault,
		KeyUsage:    types.KeyUsageTypeEncryptDecrypt,
	})
	if err != nil {
		return nil, fmt.Errorf("devkms: create key: %w", err)
	}
	if out.KeyMetadata == nil || out.KeyMetadata.KeyId == nil || out.KeyMetadata.Arn == nil {
		return nil, errors.New("devkms: create key: answer without key ID or ARN")
	}
	return &Key{ID: *out.KeyMetadata.KeyId, ARN: *out.KeyMetadata.Arn}, nil
}

// DisableKey disables a key: KMS then refuses to encrypt or decrypt under it.
func (s *Server) DisableKey(ctx context.Context, keyID string) error {
	if _, err := s.Client().DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(keyID)}); err != nil {
		return fmt.Errorf("devkms: disable key: %w", err)
	}
	return nil
}

// PID returns the process ID of local-kms, 0 once it is stopped.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return 0
	}
	return s.proc.cmd.Process.Pid
}

// Stop kills local-kms (SIGKILL to its process group: it keeps nothing a test needs
// after it), waits until it has been reaped and removes its data directory and log.
// Stop of a stopped server does nothing.
func (s *Server) Stop() error {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return nil
	}
	pid := p.cmd.Process.Pid
	err := p.stop()
	os.RemoveAll(s.dir)
	s.log.Info("local-kms stopped", "endpoint", s.Endpoint, "pid", pid)
	return err
}

func (p *process) stop() error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	err := devproc.Kill(p.cmd.Process)
	if errors.Is(err, os.ErrProcessDone) {
		err = nil
	}
	select {
	case <-p.exited:
	case <-time.After(stopTimeout):
		return fmt.Errorf("devkms: local-kms (pid %d) still running %v after SIGKILL", p.cmd.Process.Pid, stopTimeout)
	}
	if err != nil {
		return fmt.Errorf("devkms: stop local-kms (pid %d): %w", p.cmd.Process.Pid, err)
	}
	return nil
}
