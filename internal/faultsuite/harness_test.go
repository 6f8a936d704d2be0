package faultsuite

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"gocloud.dev/pubsub"
	"gocloud.dev/pubsub/mempubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/internal/devkafka"
	"github.com/pubcrypt/pubcrypt/internal/devvault"
	"github.com/pubcrypt/pubcrypt/internal/netfault"
	"github.com/pubcrypt/pubcrypt/internal/purchase"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// The names the CLI uses by default, and the topics of a rig.
const (
	keyData     = "pubcrypt"
	keyDet      = "pubcrypt-det"
	keyFPE      = "pubcrypt-fpe"
	demoPolicy  = "name=transit,address=transit,card_number=fpe(bin,luhn),items[].sku=deterministic"
	topicPlain  = "purchases"           // plaintext source of encrypt
	topicEnc    = "purchases_encrypted" // encrypt's destination
	topicEnc2   = "purchases_encrypted_b"
	topicPre    = "purchases_pre" // encrypted by the harness, read by consume
	topicFiles  = "purchases_large_encrypted"
	groupEnc    = "pubcrypt-encryptor"
	groupEnc2   = "pubcrypt-encryptor-b"
	groupCons   = "pubcrypt-consumer"
	groupFiles  = "pubcrypt-files"
	encBatch    = 50  // --batch given to encrypt
	consBatch   = 100 // consume's batch (cmd/pubcrypt consumeBatch)
	readAhead   = 256 // sarama's ChannelBufferSize: messages a consumer may hold per partition
	waitLong    = 3 * time.Minute
	signalLimit = 4 * time.Second // the target is 2 s; this only catches a hang on a loaded machine
)

// maxOutageLimit is how soon after a fault a command with --max-outage max must have
// exited: one attempt at a batch that hangs until it times out (attempt: the broker's
// and Vault's timeouts added), the outage itself, the shutdown's 10 s, and a margin for
// a loaded machine. Only a command that overruns its bound fails it.
func maxOutageLimit(attempt, max time.Duration) time.Duration {
	return attempt + max + 10*time.Second + 15*time.Second
}

// checkExitLine checks the last line of a command that stopped for a fault: it names
// the class and says what happened (want).
func checkExitLine(t *testing.T, p *proc, class, want string) {
	t.Helper()
	msg := lastLine(p.stderr.String())
	if !strings.Contains(msg, class) || !strings.Contains(msg, want) {
		t.Errorf("%s: the last line does not name the class (%q) and what happened (%q): %s", p.name, class, want, msg)
	}
}

// mode is how messages are protected: chosen JSON fields (the demo's policy) or whole bodies.
type mode string

const (
	fieldMode mode = "field"
	bodyMode  mode = "body"
)

// fieldsFlag is encrypt's --fields for m.
func (m mode) fieldsFlag() string {
	if m == bodyMode {
		return ""
	}
	return demoPolicy
}

// ---- the CLI binary ----

var cliBuild = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "faultsuite-cli-")
	if err != nil {
		return "", err
	}
	buildDir = dir
	bin := filepath.Join(dir, "pubcrypt")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/pubcrypt/pubcrypt/cmd/pubcrypt")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/pubcrypt: %v\n%s", err, out)
	}
	return bin, nil
})

var buildDir string // removed by TestMain

func cliBinary(t *testing.T) string {
	t.Helper()
	bin, err := cliBuild()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// ---- a rig: the servers of one scenario ----

type rigOptions struct {
	persistentVault bool // file storage: Kill and Restart keep keys and tokens
	vaultProxy      bool // the CLI reaches Vault through a netfault proxy
	kafkaData       bool // the broker keeps its data across Restart
	kafkaProxy      bool // every connection to the broker goes through a netfault proxy
}

// rig is one scenario's own servers, canaries and processes: scenarios that run in
// parallel share nothing but the CLI binary.
type rig struct {
	t      *testing.T
	vault  *devvault.Server
	vproxy *netfault.Proxy
	kafka  *devkafka.Broker
	kr     *keyring.Vault // the harness's own keyring: root token, Vault's direct address

	home      string // HOME, TMPDIR and working directory of the commands
	kafkaDir  string // "" without rigOptions.kafkaData
	vaultDir  string // "" without rigOptions.persistentVault
	canaries  *canaries
	gen       *purchase.Generator
	mu        sync.Mutex
	plain     map[string][]byte // source purchases for encrypt, by order ID
	pre       map[string][]byte // purchases the harness encrypted for consume, by order ID
	procs     []*proc
	extraScan []string // more directories to scan for leaks
}

func newRig(t *testing.T, o rigOptions) *rig {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cliBinary(t) // built before any clock of a scenario starts
	r := &rig{t: t, home: t.TempDir(), canaries: newCanaries(), plain: map[string][]byte{}, pre: map[string][]byte{},
		gen: purchase.NewGenerator(rand.Uint64())}
	for _, d := range []string{"tmp", "cwd"} {
		if err := os.Mkdir(filepath.Join(r.home, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	vo := devvault.Options{Keys: []string{keyData}}
	if o.persistentVault {
		r.vaultDir = t.TempDir()
		vo.StorageDir = r.vaultDir
	}
	v, err := devvault.Start(ctx, vo)
	if err != nil {
		t.Fatalf("Vault server: %v", err)
	}
	r.vault = v
	t.Cleanup(func() { _ = v.Stop() })
	if err := v.CreateFieldKeys(ctx, keyDet, keyFPE); err != nil {
		t.Fatal(err)
	}
	r.canaries.secret(v.Token, "Vault root token")
	if o.vaultProxy {
		if r.vproxy, err = netfault.Listen(strings.TrimPrefix(v.Addr, "http://")); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.vproxy.Close() })
	}
	c, err := v.Client()
	if err != nil {
		t.Fatal(err)
	}
	if r.kr, err = keyring.NewVault(keyring.VaultOptions{Client: c, Key: keyData}); err != nil {
		t.Fatal(err)
	}
	ko := devkafka.Options{Topics: []string{topicPlain, topicEnc, topicEnc2, topicPre, topicFiles}, FaultProxy: o.kafkaProxy}
	if o.kafkaData {
		r.kafkaDir = t.TempDir()
		ko.DataDir = r.kafkaDir
	}
	if r.kafka, err = devkafka.Start(ko); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.kafka.Close)
	return r
}

// vaultAddr is the address the commands are given: the proxy's, if there is one.
func (r *rig) vaultAddr() string {
	if r.vproxy != nil {
		return "http://" + r.vproxy.Addr()
	}
	return r.vault.Addr
}

// env is a command's environment with token as VAULT_TOKEN: the test's environment
// without Vault, Kafka or home settings of its own, and the rig's directories.
func (r *rig) env(token string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "VAULT_") || strings.HasPrefix(k, "KAFKA_") || strings.HasPrefix(k, "PUBCRYPT_") ||
			k == "HOME" || k == "TMPDIR" || k == "XDG_CACHE_HOME" || k == "XDG_CONFIG_HOME" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+r.home, "TMPDIR="+filepath.Join(r.home, "tmp"),
		"VAULT_ADDR="+r.vaultAddr(), "VAULT_TOKEN="+token, "KAFKA_BROKERS="+r.kafka.Addrs[0])
}

// token returns a new token with full use of the transit engine, valid for ttl (0: an
// hour). Its value is a canary: it must never be seen in a log, on the wire or on disk.
func (r *rig) token(ttl time.Duration) string {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tok, err := r.vault.CreateTokenWith(ctx, devvault.TokenOptions{Policy: "faultsuite-transit", TTL: ttl,
		PolicyHCL: `path "transit/*" { capabilities = ["create", "read", "update"] }
path "auth/token/lookup-self" { capabilities = ["read"] }`})
	if err != nil {
		r.t.Fatal(err)
	}
	r.canaries.secret(tok, "Vault token")
	return tok
}

// ---- messages ----

// purchase returns the next purchase with canaries in its protected fields, and its body.
// The name and the address start with a random token, so that they are unique per
// message and so that the base64 a transit call carries begins with the token's encoding.
func (r *rig) purchase() (purchase.Purchase, []byte) {
	r.mu.Lock()
	p := r.gen.Next()
	r.mu.Unlock()
	p.Name = r.canaries.add(p.ID+" name") + " " + p.Name
	p.Address = r.canaries.add(p.ID+" address") + ", " + p.Address
	r.canaries.card(p.CardNumber, p.ID+" card number")
	body, err := json.Marshal(p)
	if err != nil {
		r.t.Fatal(err)
	}
	return p, body
}

// producePlain sends n plaintext purchases to the source topic, as the application before
// pubcrypt does.
func (r *rig) producePlain(n int) {
	r.t.Helper()
	recs := make([]*kgo.Record, 0, n)
	for range n {
		p, body := r.purchase()
		r.mu.Lock()
		r.plain[p.ID] = body
		r.mu.Unlock()
		recs = append(recs, &kgo.Record{Topic: topicPlain, Value: body, Headers: []kgo.RecordHeader{{Key: "order", Value: []byte(p.ID)}}})
	}
	r.produce(recs)
}

func (r *rig) produce(recs []*kgo.Record) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for len(recs) > 0 {
		k := min(len(recs), 500)
		if err := r.kafka.ProduceRaw(ctx, recs[:k]...); err != nil {
			r.t.Fatalf("produce to the broker: %v", err)
		}
		recs = recs[k:]
	}
}

// encryptForConsume encrypts n purchases in m as crypttopic would on topicPre and returns
// their records, to be produced now or later: records produced while Vault is down were
// made while it was up. In body mode a data key serves 25 messages, so that the consumer
// needs Vault every 25 messages rather than once.
func (r *rig) encryptForConsume(m mode, n int) []*kgo.Record {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mt := mempubsub.NewTopic()
	ms := mempubsub.NewSubscription(mt, time.Minute)
	defer ms.Shutdown(ctx)
	opts := crypttopic.Options{Keyring: r.kr, Reuse: keyring.ReusePolicy{MaxMessages: 25}}
	if m == fieldMode {
		p, err := crypttopic.ParseFieldPolicy(demoPolicy)
		if err != nil {
			r.t.Fatal(err)
		}
		opts.Fields, opts.FieldKeys = p, crypttopic.FieldKeys{Deterministic: keyDet, FPE: keyFPE}
	}
	ct, err := crypttopic.New(mt, opts)
	if err != nil {
		r.t.Fatal(err)
	}
	defer ct.Shutdown(ctx)
	var batch []*pubsub.Message
	for range n {
		p, body := r.purchase()
		r.mu.Lock()
		r.pre[p.ID] = body
		r.mu.Unlock()
		batch = append(batch, &pubsub.Message{Body: body, Metadata: map[string]string{"order": p.ID}})
	}
	for i := 0; i < n; i += 100 {
		if err := ct.SendBatch(ctx, batch[i:min(n, i+100)]); err != nil {
			r.t.Fatal(err)
		}
	}
	recs := make([]*kgo.Record, 0, n)
	for range n {
		msg, err := ms.Receive(ctx)
		if err != nil {
			r.t.Fatal(err)
		}
		msg.Ack()
		rec := &kgo.Record{Topic: topicPre, Value: msg.Body}
		for k, v := range msg.Metadata {
			rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
		}
		recs = append(recs, rec)
	}
	return recs
}

// ---- the broker, read raw ----

// readAll reads every record of topic (partition 0) as an outside admin would.
func (r *rig) readAll(topic string) []*kgo.Record {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	end, err := r.endOffset(ctx, topic)
	if err != nil {
		r.t.Fatal(err)
	}
	if end == 0 {
		return nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(r.kafka.Addrs...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		r.t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	for int64(len(out)) < end {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			r.t.Fatalf("read %s: %d of %d records: %v", topic, len(out), end, ctx.Err())
		}
		fs.EachRecord(func(rec *kgo.Record) { out = append(out, rec) })
	}
	return out
}

func (r *rig) endOffset(ctx context.Context, topic string) (int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(r.kafka.Addrs...))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	req := kmsg.NewPtrListOffsetsRequest()
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewListOffsetsRequestTopicPartition()
	rp.Partition, rp.Timestamp = 0, -1 // the end
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return 0, err
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return 0, fmt.Errorf("end offset of %s: %w", topic, err)
			}
			return p.Offset, nil
		}
	}
	return 0, fmt.Errorf("end offset of %s: no answer", topic)
}

// committed is the offset group has committed on topic (-1: none), or -2 if the broker
// cannot be asked now.
func (r *rig) committed(group, topic string) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	off, err := r.kafka.CommittedOffset(ctx, group, topic, 0)
	if err != nil {
		return -2
	}
	return off
}

func header(hs []kgo.RecordHeader, key string) string {
	for _, h := range hs {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// ---- processes ----

// proc is a pubcrypt command run as a child process.
type proc struct {
	t      *testing.T
	name   string // "encrypt", "consume #2", ...
	cmd    *exec.Cmd
	stdout *buffer
	stderr *buffer
	exited chan struct{}
	end    time.Time
	// stdoutIsOutput: the command's stdout is its decrypted output by design (consume),
	// so it is not a log and canaries there are expected.
	stdoutIsOutput bool
}

type buffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	done   int               // length of the complete lines given to onLine
	onLine func(line string) // called for each complete line, under mu
}

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.b.Write(p)
	if b.onLine != nil {
		for {
			rest := b.b.Bytes()[b.done:]
			i := bytes.IndexByte(rest, '\n')
			if i < 0 {
				break
			}
			b.onLine(string(rest[:i]))
			b.done += i + 1
		}
	}
	return n, err
}

// killAt makes the process be killed with SIGKILL as soon as it has printed n lines
// starting with prefix: a kill at a known point of the stream, not after a poll interval.
func (p *proc) killAt(prefix string, n int) {
	seen := 0
	p.stdout.mu.Lock()
	defer p.stdout.mu.Unlock()
	p.stdout.done = p.stdout.b.Len()
	p.stdout.onLine = func(line string) {
		if strings.HasPrefix(line, prefix) {
			if seen++; seen == n {
				_ = p.cmd.Process.Signal(syscall.SIGKILL)
			}
		}
	}
}

func (b *buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func (b *buffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Len()
}

// start runs `pubcrypt args...` with env.
func (r *rig) start(name string, env []string, args ...string) *proc {
	r.t.Helper()
	cmd := exec.Command(cliBinary(r.t), args...)
	cmd.Env = env
	cmd.Dir = filepath.Join(r.home, "cwd")
	p := &proc{t: r.t, name: name, cmd: cmd, stdout: &buffer{}, stderr: &buffer{}, exited: make(chan struct{}),
		stdoutIsOutput: len(args) > 0 && args[0] == "consume"}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	go func() {
		_ = cmd.Wait()
		p.end = time.Now()
		close(p.exited)
	}()
	r.mu.Lock()
	r.procs = append(r.procs, p)
	r.mu.Unlock()
	r.t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Kill() // this test's own child, by its PID
			<-p.exited
		}
	})
	return p
}

// encrypt starts the bridge from the plaintext topic to topicEnc in m.
func (r *rig) encrypt(name string, env []string, m mode, extra ...string) *proc {
	return r.encryptTo(name, env, m, groupEnc, topicEnc, extra...)
}

// encryptTo starts a bridge in group from the plaintext topic to dst.
func (r *rig) encryptTo(name string, env []string, m mode, group, dst string, extra ...string) *proc {
	args := append([]string{"encrypt", "--sub", "kafka://" + group + "?topic=" + topicPlain + "&offset=oldest",
		"--topic", "kafka://" + dst, "--batch", fmt.Sprint(encBatch), "--fields", m.fieldsFlag()}, extra...)
	return r.start(name, env, args...)
}

// consume starts a consumer of topic.
func (r *rig) consume(name string, env []string, topic string, extra ...string) *proc {
	args := append([]string{"consume", "--sub", "kafka://" + groupCons + "?topic=" + topic + "&offset=oldest"}, extra...)
	return r.start(name, env, args...)
}

func (p *proc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

func (p *proc) code() int { return p.cmd.ProcessState.ExitCode() }

// signal sends sig and waits for the process to exit; it returns how long that took
// and the exit status (-1 if killed by a signal).
func (p *proc) signal(sig syscall.Signal, timeout time.Duration) (time.Duration, int) {
	p.t.Helper()
	sent := time.Now()
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.t.Fatalf("%s: %v: %v", p.name, sig, err)
	}
	p.wait(timeout)
	return p.end.Sub(sent), p.code()
}

// wait waits for the process to exit, failing after timeout.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.exited
		p.t.Fatalf("%s still running after %v; killed\n%s", p.name, timeout, p.logs())
	}
	return p.code()
}

// stop interrupts a command with SIGINT and fails unless it exits 0 promptly.
func (p *proc) stop(sig syscall.Signal) {
	p.t.Helper()
	took, code := p.signal(sig, 30*time.Second)
	if code != 0 || took > signalLimit {
		p.t.Errorf("%s: exit %d %v after %v, want 0 within 2s\n%s", p.name, code, took.Round(time.Millisecond), sig, p.logs())
	}
}

// dumpGoroutines makes a command that seems stuck print its goroutines (SIGQUIT) and exit,
// so that the failure shows where it waited.
func (p *proc) dumpGoroutines() {
	if !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
	}
}

func (p *proc) logs() string {
	if dir := os.Getenv("FAULTSUITE_LOGS"); dir != "" { // full logs for debugging
		base := filepath.Join(dir, strings.NewReplacer("/", "_", " ", "_").Replace(p.t.Name()+"-"+p.name))
		_ = os.MkdirAll(dir, 0o755)
		_ = os.WriteFile(base+".stdout", []byte(p.stdout.String()), 0o644)
		_ = os.WriteFile(base+".stderr", []byte(p.stderr.String()), 0o644)
	}
	return fmt.Sprintf("--- %s stdout (tail) ---\n%s\n--- %s stderr (tail) ---\n%s", p.name, tail(p.stdout.String()), p.name, tail(p.stderr.String()))
}

func tail(s string) string {
	const max = 12000
	if len(s) > max {
		return "…" + s[len(s)-max:]
	}
	return s
}

// waitFor polls cond until it holds, failing after timeout or when one of procs exits
// first (their logs are shown).
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool, procs ...*proc) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		for _, p := range procs {
			if !p.running() && !cond() {
				t.Fatalf("%s exited (status %d) before %s\n%s", p.name, p.code(), what, p.logs())
			}
		}
		if time.Now().After(deadline) {
			var logs []string
			for _, p := range procs {
				p.dumpGoroutines()
				logs = append(logs, p.logs())
			}
			t.Fatalf("not %s after %v\n%s", what, timeout, strings.Join(logs, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ---- what the commands printed ----

// forwarded returns the source positions encrypt reported forwarded ("encrypted ID").
func forwarded(out string) []string {
	var ids []string
	for _, l := range strings.Split(out, "\n") {
		if id, ok := strings.CutPrefix(l, "encrypted "); ok {
			ids = append(ids, id)
		}
	}
	return ids
}

var consumedLine = regexp.MustCompile(`(?m)^\[[^\]]+ v\d+\] (\{.*"id":"(ord-\d+)".*\})$`)

// consumed returns the order IDs consume printed, and their bodies.
func consumed(out string) (ids []string, bodies []string) {
	for _, m := range consumedLine.FindAllStringSubmatch(out, -1) {
		ids, bodies = append(ids, m[2]), append(bodies, m[1])
	}
	return ids, bodies
}

func distinct(ids []string) int {
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		seen[id] = true
	}
	return len(seen)
}

func (p *proc) forwardedN() int { return len(forwarded(p.stdout.String())) }

func (p *proc) forwardedDistinct() int { return distinct(forwarded(p.stdout.String())) }

func (p *proc) consumedN() int {
	ids, _ := consumed(p.stdout.String())
	return len(ids)
}

// outageLines returns the lines of stderr from offset on that say an outage began.
func (p *proc) outageLines(from int) []string {
	s := p.stderr.String()
	if from > len(s) {
		from = len(s)
	}
	var out []string
	for _, l := range strings.Split(s[from:], "\n") {
		if strings.Contains(l, "outage: holding") {
			out = append(out, l)
		}
	}
	return out
}

// outageNamed reports whether an outage of class environment was logged after offset from.
func (p *proc) outageNamed(from int) bool {
	for _, l := range p.outageLines(from) {
		if strings.Contains(l, "class=environment") {
			return true
		}
	}
	return false
}

// ---- counting ----

// count is what one side of a scenario delivered.
type count struct {
	sent, received, lost, dup int
	bad                       []string // orders that arrived different from what was sent
}

// countEncrypted reads topic raw and checks that every plaintext source purchase is there
// and decrypts to what was produced.
func (r *rig) countEncrypted(topic string) count {
	r.t.Helper()
	recs := r.readAll(topic)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The records go through a memory topic into cryptsub, which decrypts in batches as
	// consume does: one Vault call per key per batch.
	mt := mempubsub.NewTopic()
	ms := mempubsub.NewSubscription(mt, time.Minute)
	sub, err := cryptsub.New(ms, cryptsub.Options{Keyring: r.kr})
	if err != nil {
		r.t.Fatal(err)
	}
	defer sub.Shutdown(ctx)
	for _, rec := range recs {
		md := map[string]string{}
		for _, h := range rec.Headers {
			md[h.Key] = string(h.Value)
		}
		if err := mt.Send(ctx, &pubsub.Message{Body: rec.Value, Metadata: md}); err != nil {
			r.t.Fatal(err)
		}
	}
	got := map[string]int{}
	var c count
	for n := 0; n < len(recs); {
		msgs, _, errs := sub.ReceiveBatch(ctx, 100)
		for i, m := range msgs {
			if m == nil {
				r.t.Fatalf("read back %s: %v", topic, errs[i])
			}
			n++
			m.Ack()
			id := m.Metadata["order"]
			r.mu.Lock()
			want, ok := r.plain[id]
			r.mu.Unlock()
			if errs[i] != nil || !ok || !bytes.Equal(m.Body, want) {
				c.bad = append(c.bad, fmt.Sprintf("%s (%v)", id, errs[i]))
				continue
			}
			got[id]++
		}
	}
	r.mu.Lock()
	c.sent = len(r.plain)
	r.mu.Unlock()
	c.received = len(got)
	c.lost = c.sent - c.received
	c.dup = len(recs) - c.received - len(c.bad)
	return c
}

// countConsumed checks what consume processes printed against the purchases the harness
// encrypted for them (topicPre).
func (r *rig) countConsumed(procs ...*proc) count {
	r.t.Helper()
	return r.countConsumedFrom(topicPre, nil, procs...)
}

// countConsumedFrom checks what consume processes printed of topic against want (nil:
// the purchases the harness encrypted). Duplicates are consume's own: deliveries beyond
// the records on the topic, so that a duplicate encrypt put there counts in its row only.
func (r *rig) countConsumedFrom(topic string, want map[string][]byte, procs ...*proc) count {
	r.t.Helper()
	records := len(r.readAll(topic))
	r.mu.Lock()
	defer r.mu.Unlock()
	if want == nil {
		want = r.pre
	}
	got := map[string]int{}
	var c count
	total := 0
	for _, p := range procs {
		ids, bodies := consumed(p.stdout.String())
		for i, id := range ids {
			total++
			if w, ok := want[id]; !ok || bodies[i] != string(w) {
				c.bad = append(c.bad, id)
				continue
			}
			got[id]++
		}
	}
	c.sent, c.received = len(want), len(got)
	c.lost = c.sent - c.received
	c.dup = total - max(records, c.received) - len(c.bad)
	return c
}

// ---- leaks ----

// canaries are values that must never be seen outside their place: protected plaintext
// of the messages, and Vault tokens. Each value is kept under the length of its
// detector's window, so that a scan is one map lookup per byte and window length.
type canaries struct {
	mu      sync.Mutex
	byLen   map[int]map[string]string // value → what it is
	secrets map[string]string         // tokens: few, any length
}

func newCanaries() *canaries {
	return &canaries{byLen: map[int]map[string]string{}, secrets: map[string]string{}}
}

var canaryEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// add makes a new canary token for what, records it with the base64 a Vault transit call
// would carry it in, and returns it.
func (c *canaries) add(what string) string {
	b := make([]byte, 10)
	for i := range b {
		b[i] = byte(rand.N(256))
	}
	tok := "Zq" + canaryEncoding.EncodeToString(b)[:10] // 12 bytes: 16 characters of base64
	c.put(tok, what)
	c.put(base64.StdEncoding.EncodeToString([]byte(tok)), what+" (base64)")
	return tok
}

// card records a card number, with and without its separators.
func (c *canaries) card(number, what string) {
	c.put(number, what)
	c.put(strings.ReplaceAll(number, "-", ""), what)
}

func (c *canaries) put(v, what string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.byLen[len(v)]
	if m == nil {
		m = map[string]string{}
		c.byLen[len(v)] = m
	}
	m[v] = what
}

func (c *canaries) secret(v, what string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.secrets[v] = what
}

// scan returns what canaries s holds, each as "where: what".
func (c *canaries) scan(where, s string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var hits []string
	for n, m := range c.byLen {
		for i := 0; i+n <= len(s); i++ {
			if what, ok := m[s[i:i+n]]; ok {
				hits = append(hits, where+": "+what)
			}
		}
	}
	for v, what := range c.secrets {
		if strings.Contains(s, v) {
			hits = append(hits, where+": "+what)
		}
	}
	return hits
}

// leaks scans every place a canary must not be: the topics but the plaintext source
// (read raw: key, value, headers), the output of every command but consume's decrypted
// stdout, and the files on disk the commands or the servers wrote (the commands' home,
// temporary and working directories, the broker's data for topics but the plaintext
// source, Vault's storage). It also proves each detector on a place that must hold
// canaries; a detector that finds none there fails the test.
func (r *rig) leaks() []string {
	r.t.Helper()
	var hits []string
	// The wire.
	plainHits := 0
	for _, topic := range []string{topicPlain, topicEnc, topicEnc2, topicPre, topicFiles} {
		for _, rec := range r.readAll(topic) {
			var b strings.Builder
			b.Write(rec.Key)
			b.WriteByte(0)
			b.Write(rec.Value)
			for _, h := range rec.Headers {
				b.WriteByte(0)
				b.WriteString(h.Key)
				b.WriteByte(0)
				b.Write(h.Value)
			}
			found := r.canaries.scan(fmt.Sprintf("topic %s offset %d", topic, rec.Offset), b.String())
			if topic == topicPlain {
				plainHits += len(found)
				continue // plaintext by definition: the application's own topic
			}
			hits = append(hits, found...)
		}
	}
	r.mu.Lock()
	plainSent, procs := len(r.plain), append([]*proc(nil), r.procs...)
	r.mu.Unlock()
	if plainSent > 0 && plainHits == 0 {
		r.t.Errorf("leak detector: no canary found on the plaintext topic, which holds %d purchases: the detector is blind", plainSent)
	}
	// The commands' output.
	outputHits := 0
	for _, p := range procs {
		if p.stdoutIsOutput {
			outputHits += len(r.canaries.scan("", p.stdout.String()))
			// Its output by design, but a token has no business there either.
			for _, h := range r.canaries.scan(p.name+" stdout", p.stdout.String()) {
				if strings.HasSuffix(h, "token") {
					hits = append(hits, h)
				}
			}
		} else {
			hits = append(hits, r.canaries.scan(p.name+" stdout", p.stdout.String())...)
		}
		hits = append(hits, r.canaries.scan(p.name+" stderr", p.stderr.String())...)
	}
	for _, p := range procs {
		if p.stdoutIsOutput && p.consumedN() > 0 && outputHits == 0 {
			r.t.Errorf("leak detector: no canary in consume's decrypted output: the detector is blind")
			break
		}
	}
	// The disk.
	dirs := append([]string{r.home}, r.extraScan...)
	if r.vaultDir != "" {
		dirs = append(dirs, r.vaultDir)
	}
	for _, d := range dirs {
		hits = append(hits, r.scanDir(d, nil)...)
	}
	if r.kafkaDir != "" {
		plainPart := regexp.MustCompile(`^` + regexp.QuoteMeta(topicPlain) + `-\d+$`)
		diskPlain := 0
		hits = append(hits, r.scanDir(r.kafkaDir, func(path string, found []string) bool {
			if plainPart.MatchString(filepath.Base(filepath.Dir(path))) {
				diskPlain += len(found)
				return false
			}
			return true
		})...)
		if plainSent > 0 && diskPlain == 0 {
			r.t.Errorf("leak detector: no canary in the broker's stored plaintext topic: the disk detector is blind")
		}
	}
	return hits
}

// scanDir scans the regular files under dir; keep, if not nil, decides whether the hits
// of a file count.
func (r *rig) scanDir(dir string, keep func(path string, found []string) bool) []string {
	var hits []string
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return nil
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(bufio.NewReader(f), 256<<20))
		if err != nil {
			return nil
		}
		found := r.canaries.scan("file "+path, string(b))
		if keep == nil || keep(path, found) {
			hits = append(hits, found...)
		}
		return nil
	})
	return hits
}
