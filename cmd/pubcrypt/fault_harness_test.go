package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/devkafka"
	"github.com/pubcrypt/pubcrypt/internal/devvault"
	"github.com/pubcrypt/pubcrypt/internal/purchase"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// The fault tests run the CLI as real processes (signals, exit statuses, SIGKILL) against
// a real Vault dev server and an in-process kfake broker, with netfault proxies where the
// network must misbehave.

// cliBuildFlags are go build's flags for the CLI the tests run ("-race" under -race).
var cliBuildFlags []string

// cliDir holds the binary buildCLI builds; TestMain removes it.
var cliDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if cliDir != "" {
		_ = os.RemoveAll(cliDir)
	}
	os.Exit(code)
}

// buildCLI builds the pubcrypt binary once per test binary.
var buildCLI = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "pubcrypt-cli-")
	if err != nil {
		return "", err
	}
	cliDir = dir
	bin := filepath.Join(dir, "pubcrypt")
	args := append(append([]string{"build"}, cliBuildFlags...), "-o", bin, ".")
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		return "", errors.New(string(out))
	}
	return bin, nil
})

func cliBinary(t *testing.T) string {
	t.Helper()
	bin, err := buildCLI()
	if err != nil {
		t.Fatalf("build pubcrypt: %v", err)
	}
	return bin
}

// faultEnv is a Vault dev server with the demo's keys and the environment for the CLI.
type faultEnv struct {
	vault *devvault.Server
	env   []string // VAULT_ADDR, VAULT_TOKEN
}

func startVault(t *testing.T) *faultEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	v, err := devvault.Start(ctx, devvault.Options{Keys: []string{demoKey}})
	if err != nil {
		t.Fatalf("Vault dev server: %v", err)
	}
	t.Cleanup(func() { _ = v.Stop() })
	if err := v.CreateFieldKeys(ctx, demoDetKey, demoFPEKey); err != nil {
		t.Fatal(err)
	}
	return &faultEnv{vault: v, env: v.Env()}
}

// keyring returns a keyring on the test's Vault (for the test's own checks).
func (e *faultEnv) keyring(t *testing.T) *keyring.Vault {
	t.Helper()
	for _, kv := range e.env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	kr, err := keyring.NewVault(keyring.VaultOptions{Key: demoKey})
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func startKafka(t *testing.T, topics ...string) *devkafka.Broker {
	t.Helper()
	b, err := devkafka.Start(devkafka.Options{Topics: topics})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// proc is a CLI process whose stdout is read line by line.
type proc struct {
	t       *testing.T
	cmd     *exec.Cmd
	lines   chan string // stdout
	stderr  *lockedBuffer
	stdout  *lockedBuffer
	exited  chan struct{}
	waitErr error
	end     time.Time
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startCLI starts `pubcrypt args...` with env added to the test's environment.
func startCLI(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(cliBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	p := &proc{t: t, cmd: cmd, lines: make(chan string, 1<<16), stderr: &lockedBuffer{}, stdout: &lockedBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = p.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			_, _ = p.stdout.Write(append(sc.Bytes(), '\n'))
			select {
			case p.lines <- sc.Text():
			default: // nobody reads: stdout keeps it
			}
		}
		_, _ = io.Copy(io.Discard, out)
		p.waitErr = cmd.Wait()
		p.end = time.Now()
		close(p.lines)
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

// waitLines reads stdout until n lines matching prefix were seen, or fails after timeout.
func (p *proc) waitLines(prefix string, n int, timeout time.Duration) []string {
	p.t.Helper()
	var got []string
	deadline := time.After(timeout)
	for len(got) < n {
		select {
		case l, ok := <-p.lines:
			if !ok {
				p.t.Fatalf("%v exited after %d of %d %q lines: %v\nstdout:\n%s\nstderr:\n%s", p.cmd.Args[1:], len(got), n, prefix, p.waitErr, tail(p.stdout.String()), tail(p.stderr.String()))
			}
			if strings.HasPrefix(l, prefix) {
				got = append(got, l)
			}
		case <-deadline:
			p.t.Fatalf("%v: %d of %d %q lines after %v\nstderr:\n%s", p.cmd.Args[1:], len(got), n, prefix, timeout, tail(p.stderr.String()))
		}
	}
	return got
}

// wait waits for the process to exit (failing after timeout) and returns its exit status
// and when it exited.
func (p *proc) wait(timeout time.Duration) (int, time.Time) {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.exited
		p.t.Fatalf("%v still running after %v; killed\nstderr:\n%s", p.cmd.Args[1:], timeout, tail(p.stderr.String()))
	}
	return p.cmd.ProcessState.ExitCode(), p.end
}

// interrupt sends SIGINT and returns how long the process took to exit, and its status.
func (p *proc) interrupt(timeout time.Duration) (time.Duration, int) {
	p.t.Helper()
	return p.signal(syscall.SIGINT, timeout)
}

// signal sends sig and returns how long the process took to exit, and its status.
func (p *proc) signal(sig syscall.Signal, timeout time.Duration) (time.Duration, int) {
	p.t.Helper()
	sent := time.Now()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("%v: %v", sig, err)
	}
	code, end := p.wait(timeout)
	return end.Sub(sent), code
}

func tail(s string) string {
	const max = 3000
	if len(s) > max {
		return "…" + s[len(s)-max:]
	}
	return s
}

// producePlain sends n generated purchases to topic and returns their bodies by ID.
func producePlain(t *testing.T, kafkaAddr, topic string, seed uint64, n int) map[string][]byte {
	t.Helper()
	t.Setenv(broker.EnvKafkaBrokers, kafkaAddr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	top, err := broker.OpenTopic(ctx, "kafka://"+topic)
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(top)
	sent := map[string][]byte{}
	gen := purchase.NewGenerator(seed)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		p := gen.Next()
		body, _ := json.Marshal(p)
		sent[p.ID] = body
		wg.Go(func() {
			if err := top.Send(ctx, &pubsub.Message{Body: body, Metadata: map[string]string{"order": p.ID}}); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	return sent
}

// produceEncrypted sends n generated purchases to topic, encrypted (whole body), and
// returns their bodies by ID.
func produceEncrypted(t *testing.T, kr keyring.Keyring, kafkaAddr, topic string, seed uint64, n int) map[string][]byte {
	t.Helper()
	t.Setenv(broker.EnvKafkaBrokers, kafkaAddr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	top, err := crypttopic.Open(ctx, "kafka://"+topic, crypttopic.Options{Keyring: kr})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(top)
	sent := map[string][]byte{}
	gen := purchase.NewGenerator(seed)
	var batch []*pubsub.Message
	flush := func() {
		if err := top.SendBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
		batch = batch[:0]
	}
	for range n {
		p := gen.Next()
		body, _ := json.Marshal(p)
		sent[p.ID] = body
		batch = append(batch, &pubsub.Message{Body: body, Metadata: map[string]string{"order": p.ID}})
		if len(batch) == 200 {
			flush()
		}
	}
	if len(batch) > 0 {
		flush()
	}
	return sent
}

var purchaseID = regexp.MustCompile(`"id":"([^"]+)"`)

// consumedIDs returns the purchase IDs in consume's output lines.
func consumedIDs(lines string) []string {
	var ids []string
	for _, m := range purchaseID.FindAllStringSubmatch(lines, -1) {
		ids = append(ids, m[1])
	}
	return ids
}

// encryptedIDs returns the message IDs of encrypt's "encrypted ID" lines.
func encryptedIDs(out string) []string {
	var ids []string
	for _, l := range strings.Split(out, "\n") {
		if id, ok := strings.CutPrefix(l, "encrypted "); ok {
			ids = append(ids, id)
		}
	}
	return ids
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// header returns the value of a Kafka record header.
func header(hs []kgo.RecordHeader, key string) string {
	for _, h := range hs {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
