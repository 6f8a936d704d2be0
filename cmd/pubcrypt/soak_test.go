package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/purchase"
)

// The soak (issue 8): many purchases through `pubcrypt encrypt` against the real servers,
// watching whether the bridge's memory and goroutines stay flat.
//
// The bridge runs as the real CLI process, so the RSS measured is its own and not that of
// the test process, which also holds the broker (kfake keeps every record in memory) and
// the producer. Its goroutines and Go heap are read from a debug endpoint that only this
// test's build has: the binary is built with `go build -overlay`, adding one file to
// package main (soakDebugSource) and changing none of the CLI. The endpoint costs a few
// hundred KiB of RSS and 2 goroutines while it answers.
//
// Plain `go test` and CI run soakDefault messages, which proves the harness works and
// that the bridge leaves no goroutines behind; the soak proper is
//
//	PUBCRYPT_SOAK=1000000 go test -run '^TestSoakEncrypt$' -v -timeout 4h ./cmd/pubcrypt/
//
// or scripts/soak. Nothing here asserts a time or a memory size (the machine is shared):
// the figures are printed as a table for a person to read, and written to
// $PUBCRYPT_SOAK_REPORT when set. With $PUBCRYPT_SOAK_PROFILES set to a directory, heap
// and goroutine profiles of the bridge are written there at 10 % and at the end, to
// compare with `go tool pprof -base`.
const (
	soakEnv        = "PUBCRYPT_SOAK"
	soakDefault    = 2000
	soakVerify     = 200 // messages decrypted and compared byte for byte
	soakTopicInner = "soak_inprocess"
)

// soakDebugSource is the file the overlay adds to package main: with PUBCRYPT_SOAK_DEBUG
// naming a file, the process serves expvar (with its goroutine count) and pprof on a free
// loopback port and writes the address to that file.
const soakDebugSource = `package main

import (
	"expvar"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"runtime"
)

func init() {
	file := os.Getenv("PUBCRYPT_SOAK_DEBUG")
	if file == "" {
		return
	}
	expvar.Publish("goroutines", expvar.Func(func() any { return runtime.NumGoroutine() }))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	if err := os.WriteFile(file+".tmp", []byte(ln.Addr().String()), 0o600); err != nil {
		panic(err)
	}
	if err := os.Rename(file+".tmp", file); err != nil {
		panic(err)
	}
	go http.Serve(ln, nil)
}
`

func soakCount(t *testing.T) int {
	t.Helper()
	s := os.Getenv(soakEnv)
	if s == "" {
		return soakDefault
	}
	n, err := strconv.Atoi(strings.ReplaceAll(s, "_", ""))
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive message count", soakEnv, s)
	}
	return n
}

// TestSoakEncrypt produces n plaintext purchases, bridges them with `pubcrypt encrypt` and
// the demo's field policy, samples the bridge's RSS and goroutines as it goes, checks that
// all n arrived on the encrypted topic (and that the first soakVerify decrypt to what was
// produced), then runs the bridge once more in this process to see that it leaves no
// goroutine behind when it stops.
func TestSoakEncrypt(t *testing.T) {
	n := soakCount(t)
	const batch = 100 // the CLI's default
	ctx, cancel := context.WithTimeout(context.Background(), soakBudget(t, n))
	defer cancel()
	load0 := loadAverage()

	fe := startVault(t)
	kafka := startKafka(t, topicPlain, topicEncrypted, soakTopicInner)
	kr := fe.keyring(t) // also sets VAULT_ADDR and VAULT_TOKEN for this process
	t.Setenv(broker.EnvKafkaBrokers, kafka.Addrs[0])
	counter := startVaultCounter(t, fe.vault.Addr)
	bin := soakBinary(t)
	vaultRSS0, _, _, _ := procStatus(fe.vault.PID())

	// The producer runs beside the bridge, as fast as the broker takes it: the bridge
	// always has a backlog, so the soak measures the bridge, not the producer.
	kept := make(map[string][]byte, soakVerify)
	var keptMu sync.Mutex
	prodDone := make(chan error, 1)
	go func() {
		prodDone <- produceSoak(ctx, kafka.Addrs, n, func(i int, id string, body []byte) {
			if i < soakVerify {
				keptMu.Lock()
				kept[id] = body
				keptMu.Unlock()
			}
		})
	}()
	arrived := startTopicCounter(ctx, t, kafka.Addrs, topicEncrypted)

	debugFile := filepath.Join(t.TempDir(), "debug-addr")
	env := append(os.Environ(), "VAULT_ADDR="+counter.url, "PUBCRYPT_SOAK_DEBUG="+debugFile)
	cmd := exec.Command(bin, "encrypt",
		"--sub", "kafka://pubcrypt-encryptor?topic="+topicPlain+"&offset=oldest",
		"--topic", "kafka://"+topicEncrypted, "--batch", strconv.Itoa(batch))
	cmd.Env = env
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	begun := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var lastLines []string // what the bridge printed besides "encrypted ID"
	var forwarded atomic.Int64
	var firstAt, lastAt atomic.Int64 // UnixNano
	marks := make(chan string, 16)
	points := soakPoints(n)
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stdout)
		next := 0
		for sc.Scan() {
			if !bytes.HasPrefix(sc.Bytes(), []byte("encrypted ")) {
				lastLines = append(lastLines, sc.Text())
				continue
			}
			c := forwarded.Add(1)
			now := time.Now().UnixNano()
			lastAt.Store(now)
			if c == 1 {
				firstAt.Store(now)
				marks <- "first message"
			}
			for next < len(points) && c >= int64(points[next].count) {
				marks <- points[next].label
				next++
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
	}()
	defer func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
	}()

	dbg, err := waitDebug(ctx, debugFile, exited)
	if err != nil {
		t.Fatalf("bridge debug endpoint: %v\nstderr:\n%s", err, tail(stderr.String()))
	}
	profiles := os.Getenv("PUBCRYPT_SOAK_PROFILES")
	rec := &soakRecorder{pid: cmd.Process.Pid, dbg: dbg, begun: begun, forwarded: &forwarded, profiles: profiles}
	rec.take("launched")

	// Sample every few seconds and at each milestone, until all n were forwarded.
	every := 2 * time.Second
	if n >= 100_000 {
		every = 5 * time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	lastProgress, progressAt := int64(0), time.Now()
	const stall = 2 * time.Minute // a hang, not a slow machine
	for forwarded.Load() < int64(n) {
		select {
		case label := <-marks:
			rec.take(label)
			s := rec.samples[len(rec.samples)-1]
			t.Logf("soak: %s (%d messages) at %v: RSS %s MiB, goroutines %d", label, s.done, s.at.Round(time.Second), mib(s.rss), s.goroutines)
			if label == "10 %" && profiles != "" {
				rec.writeProfiles(t, profiles, "10pct")
			}
		case <-tick.C:
			rec.take("")
			s := rec.samples[len(rec.samples)-1]
			t.Logf("sample: %d messages at %v: RSS %s MiB, heap %.1f MiB, goroutines %d", s.done, s.at.Round(time.Second), mib(s.rss), float64(s.heapInuse)/(1<<20), s.goroutines)
			if c := forwarded.Load(); c != lastProgress {
				lastProgress, progressAt = c, time.Now()
			} else if time.Since(progressAt) > stall {
				t.Fatalf("the bridge forwarded nothing for %v, at %d of %d\nstderr:\n%s", stall, c, n, tail(stderr.String()))
			}
		case <-exited:
			t.Fatalf("the bridge exited after %d of %d messages: %v\nstdout:\n%s\nstderr:\n%s", forwarded.Load(), n, cmd.ProcessState, strings.Join(lastLines, "\n"), tail(stderr.String()))
		case <-ctx.Done():
			t.Fatalf("soak budget spent at %d of %d messages", forwarded.Load(), n)
		}
	}
	for len(marks) > 0 { // milestones reached together with the last message
		rec.take(<-marks)
	}
	if err := <-prodDone; err != nil {
		t.Fatalf("producer: %v", err)
	}

	// Idle: what the bridge holds once the stream stops.
	const settle = 5 * time.Second
	time.Sleep(settle)
	rec.take("end (idle 5 s)")
	if profiles != "" {
		rec.writeProfiles(t, profiles, "end")
		rec.writePeak(t)
	}
	vaultRSS1, _, _, _ := procStatus(fe.vault.PID())
	load1 := loadAverage()

	sent := time.Now()
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("the bridge did not exit within 30 s of SIGINT\nstderr:\n%s", tail(stderr.String()))
	}
	exitIn := time.Since(sent)
	if code := cmd.ProcessState.ExitCode(); code != exitOK {
		t.Fatalf("bridge exited %d after SIGINT\nstderr:\n%s", code, tail(stderr.String()))
	}
	summary := fmt.Sprintf("%d message(s) encrypted", n)
	if len(lastLines) == 0 || !strings.HasPrefix(lastLines[len(lastLines)-1], summary) {
		t.Fatalf("bridge's summary is %q, want it to start with %q", lastLines, summary)
	}
	if got := forwarded.Load(); got != int64(n) {
		t.Fatalf("the bridge reported %d forwarded, want %d (no message was faulty)", got, n)
	}

	// All n on the encrypted topic, and the first ones decrypt to what was produced.
	records, distinct, err := arrived.wait(ctx, n, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := cryptsub.Open(ctx, "kafka://soak-check?topic="+topicEncrypted+"&offset=oldest", cryptsub.Options{Keyring: kr})
	if err != nil {
		t.Fatal(err)
	}
	verified := 0
	for verified < min(n, soakVerify) {
		rctx, rcancel := context.WithTimeout(ctx, time.Minute)
		m, err := sub.Receive(rctx)
		rcancel()
		if err != nil {
			t.Fatalf("decrypt check after %d: %v", verified, err)
		}
		m.Ack()
		id := m.Metadata["order"]
		keptMu.Lock()
		want, ok := kept[id]
		keptMu.Unlock()
		if !ok {
			continue // a later purchase (the topic is in source order, but be lenient)
		}
		if !bytes.Equal(m.Body, want) {
			t.Fatalf("order %s did not decrypt to what was produced", id)
		}
		verified++
	}
	_ = shutdown(sub)
	arrived.close()

	inner := soakInProcess(t, min(n, 20_000), batch)

	report := rec.table(soakHeader{
		n: n, batch: batch, race: slices.Contains(cliBuildFlags, "-race"),
		first: time.Unix(0, firstAt.Load()), last: time.Unix(0, lastAt.Load()),
		records: records, distinct: distinct, verified: verified, exitIn: exitIn,
		calls: counter.snapshot(), vaultRSS: [2]int64{vaultRSS0, vaultRSS1},
		load: [2]string{load0, load1}, inner: inner,
	})
	t.Log("\n" + report)
	if f := os.Getenv("PUBCRYPT_SOAK_REPORT"); f != "" {
		if err := os.WriteFile(f, []byte(report), 0o644); err != nil {
			t.Error(err)
		}
	}
	if inner.leaked > 0 {
		t.Errorf("the in-process bridge left %d goroutine(s) behind %v after it returned:\n%s", inner.leaked, inner.waited, inner.stacks)
	}
}

// soakBudget is the test's own deadline: well inside go test's -timeout, so that a hang
// fails with the figures so far rather than a panic.
func soakBudget(t *testing.T, n int) time.Duration {
	budget := 10*time.Minute + 5*time.Duration(n)*time.Millisecond // ≥ 200 msg/s, on a busy machine
	if d, ok := t.Deadline(); ok {
		budget = min(budget, time.Until(d)-30*time.Second)
	}
	return budget
}

type soakPoint struct {
	label string
	count int
}

func soakPoints(n int) []soakPoint {
	var ps []soakPoint
	for _, p := range []int{10, 25, 50, 75, 100} {
		ps = append(ps, soakPoint{fmt.Sprintf("%d %%", p), max(1, int(math.Ceil(float64(n)*float64(p)/100)))})
	}
	return ps
}

// soakBinary builds the CLI with the debug endpoint added by an overlay.
func soakBinary(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	pkg, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "soak_debug.go")
	if err := os.WriteFile(src, []byte(soakDebugSource), 0o600); err != nil {
		t.Fatal(err)
	}
	overlay, _ := json.Marshal(map[string]map[string]string{"Replace": {filepath.Join(pkg, "zz_soak_debug.go"): src}})
	ov := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(ov, overlay, 0o600); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "pubcrypt")
	args := append(append([]string{"build"}, cliBuildFlags...), "-overlay", ov, "-o", bin, ".")
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		t.Fatalf("build pubcrypt with the soak's debug endpoint: %v\n%s", err, out)
	}
	return bin
}

// produceSoak sends n generated purchases to the plaintext topic, as the demo's producer
// would (JSON body, the order ID in metadata), with a plain Kafka client: gocloud's
// one-message Send would make the producer, not the bridge, the slow part.
func produceSoak(ctx context.Context, addrs []string, n int, each func(i int, id string, body []byte)) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DefaultProduceTopic(topicPlain))
	if err != nil {
		return err
	}
	defer cl.Close()
	var mu sync.Mutex
	var first error
	gen := purchase.NewGenerator(8)
	for i := range n {
		p := gen.Next()
		body, err := json.Marshal(p)
		if err != nil {
			return err
		}
		each(i, p.ID, body)
		cl.Produce(ctx, &kgo.Record{Value: body, Headers: []kgo.RecordHeader{{Key: "order", Value: []byte(p.ID)}}},
			func(_ *kgo.Record, err error) {
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			})
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	return first
}

// topicCounter counts the records of a topic and their distinct "order" entries, as an
// outside consumer that decrypts nothing.
type topicCounter struct {
	cl       *kgo.Client
	mu       sync.Mutex
	records  int
	distinct map[string]struct{}
	done     chan struct{}
	once     sync.Once
}

func startTopicCounter(ctx context.Context, t *testing.T, addrs []string, topic string) *topicCounter {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	c := &topicCounter{cl: cl, distinct: map[string]struct{}{}, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			fs := cl.PollFetches(ctx)
			if fs.IsClientClosed() || ctx.Err() != nil {
				return
			}
			c.mu.Lock()
			fs.EachRecord(func(r *kgo.Record) {
				c.records++
				c.distinct[header(r.Headers, "order")] = struct{}{}
			})
			c.mu.Unlock()
		}
	}()
	t.Cleanup(c.close)
	return c
}

// wait returns once n distinct orders were seen, or fails after timeout.
func (c *topicCounter) wait(ctx context.Context, n int, timeout time.Duration) (records, distinct int, err error) {
	deadline := time.Now().Add(timeout)
	for {
		c.mu.Lock()
		records, distinct = c.records, len(c.distinct)
		c.mu.Unlock()
		if distinct >= n {
			return records, distinct, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return records, distinct, fmt.Errorf("the encrypted topic has %d distinct orders of %d (%d records)", distinct, n, records)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (c *topicCounter) close() {
	c.once.Do(c.cl.Close)
	<-c.done
}

// vaultCounter is a reverse proxy in front of Vault that counts the bridge's requests by
// method and path (Vault's own metrics keep only the last minute).
type vaultCounter struct {
	url   string
	mu    sync.Mutex
	calls map[string]int
}

func startVaultCounter(t *testing.T, vaultAddr string) *vaultCounter {
	t.Helper()
	target, err := url.Parse(vaultAddr)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}
	c := &vaultCounter{calls: map[string]int{}}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.calls[r.Method+" "+strings.TrimPrefix(r.URL.Path, "/v1/")]++
		c.mu.Unlock()
		proxy.ServeHTTP(w, r)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close(); proxy.Transport.(*http.Transport).CloseIdleConnections() })
	c.url = "http://" + ln.Addr().String()
	return c
}

func (c *vaultCounter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.calls)
}

// debugClient reads the bridge's debug endpoint.
type debugClient struct {
	base string
	hc   *http.Client
}

func waitDebug(ctx context.Context, file string, exited <-chan struct{}) (*debugClient, error) {
	for {
		if b, err := os.ReadFile(file); err == nil {
			// No keep-alive: an idle connection would hold a goroutine in the bridge.
			return &debugClient{base: "http://" + string(b), hc: &http.Client{Timeout: 30 * time.Second,
				Transport: &http.Transport{DisableKeepAlives: true}}}, nil
		}
		select {
		case <-exited:
			return nil, errors.New("the bridge exited before it started")
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (d *debugClient) get(path string) ([]byte, error) {
	resp, err := d.hc.Get(d.base + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

type debugVars struct {
	Goroutines int `json:"goroutines"`
	Memstats   struct {
		HeapInuse uint64 `json:"HeapInuse"`
		HeapAlloc uint64 `json:"HeapAlloc"`
		Sys       uint64 `json:"Sys"`
		NumGC     uint32 `json:"NumGC"`
	} `json:"memstats"`
}

func (d *debugClient) vars() (debugVars, error) {
	var v debugVars
	b, err := d.get("/debug/vars")
	if err == nil {
		err = json.Unmarshal(b, &v)
	}
	return v, err
}

// procStatus reads VmRSS and VmHWM (KiB) and the thread count of a process.
func procStatus(pid int) (rss, hwm int64, threads int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		x, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			rss = x
		case "VmHWM":
			hwm = x
		case "Threads":
			threads = int(x)
		}
	}
	return rss, hwm, threads, nil
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

type soakSample struct {
	label      string
	at         time.Duration
	done       int64
	rss, hwm   int64 // KiB
	threads    int
	goroutines int
	heapInuse  uint64
	numGC      uint32
	err        string
}

type soakRecorder struct {
	pid       int
	dbg       *debugClient
	begun     time.Time
	forwarded *atomic.Int64
	samples   []soakSample
	profiles  string // directory, or ""

	peak     int    // most goroutines seen in a goroutine profile
	peakDone int64  // messages forwarded then
	peakText string // that profile (debug=1)
}

func (r *soakRecorder) take(label string) {
	s := soakSample{label: label, at: time.Since(r.begun), done: r.forwarded.Load()}
	var err error
	if s.rss, s.hwm, s.threads, err = procStatus(r.pid); err != nil {
		s.err = err.Error()
	}
	if v, err := r.dbg.vars(); err != nil {
		s.err = err.Error()
	} else {
		s.goroutines, s.heapInuse, s.numGC = v.Goroutines, v.Memstats.HeapInuse, v.Memstats.NumGC
	}
	r.samples = append(r.samples, s)
	if r.profiles != "" {
		// The counts above are one instant; when a count is the highest yet, keep what the
		// goroutines were doing, to tell a leak from work in flight.
		if b, err := r.dbg.get("/debug/pprof/goroutine?debug=1"); err == nil {
			var total int
			if _, err := fmt.Sscanf(string(b), "goroutine profile: total %d", &total); err == nil && total > r.peak {
				r.peak, r.peakDone, r.peakText = total, s.done, string(b)
			}
		}
	}
}

// writePeak writes the goroutine profile of the peak, if any, to the profiles directory.
func (r *soakRecorder) writePeak(t *testing.T) {
	if r.profiles == "" || r.peakText == "" {
		return
	}
	if err := os.WriteFile(filepath.Join(r.profiles, "peak-goroutine.txt"), []byte(r.peakText), 0o644); err != nil {
		t.Logf("peak goroutine profile: %v", err)
	}
}

// profiles writes the bridge's heap and goroutine profiles to dir.
func (r *soakRecorder) writeProfiles(t *testing.T, dir, tag string) {
	for name, path := range map[string]string{"heap": "/debug/pprof/heap", "goroutine": "/debug/pprof/goroutine", "goroutine.txt": "/debug/pprof/goroutine?debug=1"} {
		b, err := r.dbg.get(path)
		if err != nil {
			t.Logf("profile %s: %v", name, err)
			continue
		}
		file := filepath.Join(dir, fmt.Sprintf("%s-%s", tag, name))
		if !strings.HasSuffix(name, ".txt") {
			file += ".pb.gz"
		}
		if err := os.WriteFile(file, b, 0o644); err != nil {
			t.Logf("profile %s: %v", name, err)
		}
	}
}

type soakHeader struct {
	n, batch                    int
	race                        bool
	first, last                 time.Time
	records, distinct, verified int
	exitIn                      time.Duration
	calls                       map[string]int
	vaultRSS                    [2]int64
	load                        [2]string
	inner                       soakInner
}

func mib(kib int64) string { return fmt.Sprintf("%.1f", float64(kib)/1024) }

// table formats what the soak measured.
func (r *soakRecorder) table(h soakHeader) string {
	var b strings.Builder
	build := "the CLI as built by go build"
	if h.race {
		build += " -race (figures not representative)"
	}
	fmt.Fprintf(&b, "soak: %d purchases through `pubcrypt encrypt` (%s), fields %q, batch %d;\n", h.n, build, defaultFieldPolicy, h.batch)
	fmt.Fprintf(&b, "real Vault %s dev server, kfake in the test process; load average at start %s, at end %s\n\n", "v1.21.0", h.load[0], h.load[1])
	fmt.Fprintf(&b, "%-16s %9s %9s %8s %8s %9s %10s %7s %6s\n", "point", "messages", "elapsed", "RSS MiB", "HWM MiB", "heap MiB", "goroutines", "threads", "GCs")
	var maxRSS, minRSS int64 = 0, math.MaxInt64
	var maxG, minG = 0, math.MaxInt
	tenth := int64(math.Ceil(float64(h.n) / 10))
	for _, s := range r.samples {
		if s.done >= tenth && s.err == "" {
			maxRSS, minRSS = max(maxRSS, s.rss), min(minRSS, s.rss)
			maxG, minG = max(maxG, s.goroutines), min(minG, s.goroutines)
		}
		if s.label == "" {
			continue
		}
		fmt.Fprintf(&b, "%-16s %9d %9s %8s %8s %9.1f %10d %7d %6d", s.label, s.done, s.at.Round(100*time.Millisecond), mib(s.rss), mib(s.hwm),
			float64(s.heapInuse)/(1<<20), s.goroutines, s.threads, s.numGC)
		if s.err != "" {
			fmt.Fprintf(&b, "  (%s)", s.err)
		}
		b.WriteByte('\n')
	}
	periodic := 0
	for _, s := range r.samples {
		if s.label == "" {
			periodic++
		}
	}
	if maxRSS > 0 {
		fmt.Fprintf(&b, "\nfrom 10 %% on, over %d samples: RSS %s–%s MiB, goroutines %d–%d (2 of them the debug endpoint's)\n",
			len(r.samples), mib(minRSS), mib(maxRSS), minG, maxG)
	}
	if r.peakText != "" {
		fmt.Fprintf(&b, "most goroutines in a profile: %d, at %d messages (peak-goroutine.txt in %s)\n", r.peak, r.peakDone, r.profiles)
	}
	span := h.last.Sub(h.first)
	rate := 0.0
	if span > 0 {
		rate = float64(h.n-1) / span.Seconds()
	}
	fmt.Fprintf(&b, "throughput: %.0f msg/s (first to last message, %v)\n", rate, span.Round(time.Second))
	fmt.Fprintf(&b, "encrypted topic: %d records, %d distinct orders, %d missing; %d decrypted and compared byte for byte\n",
		h.records, h.distinct, h.n-h.distinct, h.verified)
	fmt.Fprintf(&b, "SIGINT after the idle sample: exit 0 in %v\n", h.exitIn.Round(time.Millisecond))
	total := 0
	var keys []string
	for k, v := range h.calls {
		total += v
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return h.calls[b] - h.calls[a] })
	fmt.Fprintf(&b, "Vault calls by the bridge: %d (%.2f per 100 messages)\n", total, float64(total)*100/float64(h.n))
	for _, k := range keys {
		fmt.Fprintf(&b, "  %8d  %s\n", h.calls[k], k)
	}
	fmt.Fprintf(&b, "Vault server RSS: %s MiB before, %s MiB at the end\n", mib(h.vaultRSS[0]), mib(h.vaultRSS[1]))
	fmt.Fprintf(&b, "in-process bridge (%d messages, runEncrypt; the test process had %d goroutines before): the bridge's goroutines\n",
		h.inner.n, h.inner.before)
	fmt.Fprintf(&b, "  at most %d while running, %d when it returned, %d left after waiting %v\n", h.inner.during, h.inner.after, h.inner.leaked, h.inner.waited)
	return b.String()
}

// soakInner is what the in-process run found about goroutines.
type soakInner struct {
	n             int
	before        int // goroutines of the whole test process before the run
	during, after int // goroutines the bridge started: most at once, and when it returned
	leaked        int // the bridge's goroutines still there after waiting
	waited        time.Duration
	stacks        string
}

// soakLabel marks the goroutines the in-process bridge starts: pprof labels are inherited
// by every goroutine a labelled one starts, so the bridge's can be told from the broker's
// and the test's, which share this process.
const soakLabel = "pubcrypt-soak"

// soakInProcess runs the encrypt command in this process over the first n source
// messages (its own consumer group, its own destination) and counts the goroutines it
// started, while it runs and after it returns: a bridge that has returned must have
// stopped all of them. A goroutine that ends a moment after (a connection closing) is
// waited for, up to patience.
func soakInProcess(t *testing.T, n, batch int) soakInner {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res := soakInner{n: n, before: runtime.NumGoroutine()}
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tk := time.NewTicker(200 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				g, _ := labelledGoroutines()
				res.during = max(res.during, g)
			}
		}
	}()
	var out bytes.Buffer
	var err error
	pprof.Do(ctx, pprof.Labels(soakLabel, "bridge"), func(ctx context.Context) {
		err = runEncrypt(ctx, []string{"--sub", "kafka://soak-inprocess?topic=" + topicPlain + "&offset=oldest",
			"--topic", "kafka://" + soakTopicInner, "--batch", strconv.Itoa(batch), "--max", strconv.Itoa(n)}, &out)
	})
	close(stop)
	<-sampled
	if err != nil {
		t.Fatalf("in-process encrypt: %v\n%s", err, lastLine(out.String()))
	}
	if want := fmt.Sprintf("%d message(s) encrypted", n); !strings.HasPrefix(lastLine(out.String()), want) {
		t.Fatalf("in-process encrypt: %q, want %q", lastLine(out.String()), want)
	}
	res.after, _ = labelledGoroutines()
	begin := time.Now()
	const patience = 30 * time.Second
	for {
		res.leaked, res.stacks = labelledGoroutines()
		if res.leaked == 0 || time.Since(begin) >= patience {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	res.waited = time.Since(begin).Round(100 * time.Millisecond)
	return res
}

// labelledGoroutines counts the goroutines that carry soakLabel and returns their stacks.
func labelledGoroutines() (int, string) {
	var buf bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
	n := 0
	var stacks []string
	for _, block := range strings.Split(buf.String(), "\n\n") {
		if !strings.Contains(block, `"`+soakLabel+`":`) {
			continue
		}
		var k int
		if _, err := fmt.Sscanf(block, "%d @", &k); err == nil {
			n += k
			stacks = append(stacks, block)
		}
	}
	return n, strings.Join(stacks, "\n\n")
}
