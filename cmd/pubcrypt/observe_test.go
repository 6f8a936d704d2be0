package main

import (
	"bytes"
	"context"
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
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/purchase"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// httpGet returns the status and body of url (status 0 and the error text if it fails).
func httpGet(url string) (int, string) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestHealthAndMetricsEndpoints: /healthz answers while the process lives; /readyz is 503
// with a short reason until the command has started and while an outage lasts, 200
// otherwise; /metrics carries the library's counters after a real round trip through
// Vault, and no token, plaintext or message metadata.
func TestHealthAndMetricsEndpoints(t *testing.T) {
	defer slog.SetDefault(slog.Default())
	fe := startVault(t)
	kr := fe.keyring(t)
	token := os.Getenv("VAULT_TOKEN")
	if token == "" {
		t.Fatal("no VAULT_TOKEN from the test's Vault")
	}

	of := obsFlags{listen: "127.0.0.1:0", logFormat: "json", quiet: true}
	obs, err := of.start("test")
	if err != nil {
		t.Fatal(err)
	}
	defer obs.close()
	base := "http://" + obs.addr
	expect := func(path string, status int, want string) string {
		t.Helper()
		code, body := httpGet(base + path)
		if code != status || !strings.Contains(body, want) {
			t.Fatalf("GET %s = %d %q, want %d containing %q", path, code, body, status, want)
		}
		return body
	}
	expect("/healthz", 200, "ok")
	expect("/readyz", 503, "starting")
	obs.started()
	expect("/readyz", 200, "ready")
	// An outage whose error text carries what must never be shown: the reason is fixed text.
	secretErr := &keyring.Error{Op: "unwrap data key", KeyID: "pubcrypt", Kind: keyring.ErrPermissionDenied,
		Err: errors.New("token " + token + " refused for message order-SECRET")}
	o := outage{health: obs.health}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // wait returns at once
	_ = o.wait(ctx, "decrypt message order-SECRET", secretErr)
	body := expect("/readyz", 503, "permission denied by key service")
	if strings.Contains(body, token) || strings.Contains(body, "SECRET") {
		t.Fatalf("/readyz shows the token or a message: %q", body)
	}
	o.over()
	expect("/readyz", 200, "ready")

	// A real round trip: whole body and fields, through Vault, on mem://.
	const plaintext = "Zanele Okafor, 4 Harbour Road, card 4111111111111111"
	const metaValue = "order-7f3a-SECRET"
	ctx = context.Background()
	raw, err := broker.OpenTopic(ctx, "mem://observe-test") // mem: the topic before the subscription
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Shutdown(ctx)
	sub, err := broker.OpenSubscription(ctx, "mem://observe-test")
	if err != nil {
		t.Fatal(err)
	}
	csub, err := cryptsub.New(sub, cryptsub.Options{Keyring: kr})
	if err != nil {
		t.Fatal(err)
	}
	defer csub.Shutdown(ctx)
	policy, err := crypttopic.ParseFieldPolicy("name=transit")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []crypttopic.FieldPolicy{nil, policy} {
		top, err := crypttopic.New(raw, crypttopic.Options{Keyring: kr, Fields: p})
		if err != nil {
			t.Fatal(err)
		}
		body := []byte(plaintext)
		if p != nil {
			body, _ = json.Marshal(map[string]string{"name": plaintext})
		}
		if err := top.Send(ctx, &pubsub.Message{Body: body, Metadata: map[string]string{"order": metaValue}}); err != nil {
			t.Fatal(err)
		}
		rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
		m, err := csub.Receive(rctx)
		rcancel()
		if err != nil {
			t.Fatal(err)
		}
		m.Ack()
	}
	metrics := expect("/metrics", 200, "pubcrypt_messages_sealed_total")
	for _, want := range []string{
		`pubcrypt_messages_sealed_total{mode="body"`, `pubcrypt_messages_sealed_total{mode="fields"`,
		`pubcrypt_messages_opened_total{mode="body"`, `pubcrypt_messages_opened_total{mode="fields"`,
		`pubcrypt_sealed_bytes_total{mode="body"`, `pubcrypt_opened_bytes_total{mode="fields"`,
		`pubcrypt_vault_requests_total{op="datakey"`, `pubcrypt_vault_requests_total{op="decrypt"`,
		`pubcrypt_vault_request_duration_seconds_bucket{`, `pubcrypt_datakeys_generated_total{`,
		`pubcrypt_datakeys_cache_requests_total{`, "go_goroutines", "process_resident_memory_bytes",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, secret := range []string{token, plaintext, "Zanele", "4111111111111111", metaValue, "SECRET"} {
		if strings.Contains(metrics, secret) {
			t.Errorf("/metrics contains %q", secret)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", metrics)
	}
}

// prometheusTools returns the paths of Debian's prometheus and promtool
// (scripts/install-prometheus.sh; PUBCRYPT_PROMETHEUS_BIN names the server). Missing is a
// failure, never a skip.
func prometheusTools(t *testing.T) (server, promtool string) {
	t.Helper()
	server = os.Getenv("PUBCRYPT_PROMETHEUS_BIN")
	if server == "" {
		var err error
		if server, err = exec.LookPath("prometheus"); err != nil {
			t.Fatal("prometheus not found: run scripts/install-prometheus.sh (scripts/test does) or set PUBCRYPT_PROMETHEUS_BIN")
		}
	}
	if _, err := os.Stat(server); err != nil {
		t.Fatalf("prometheus: %v (run scripts/install-prometheus.sh)", err)
	}
	promtool = filepath.Join(filepath.Dir(server), "promtool")
	if _, err := os.Stat(promtool); err != nil {
		if promtool, err = exec.LookPath("promtool"); err != nil {
			t.Fatalf("promtool not found beside %s nor on PATH (Debian package prometheus)", server)
		}
	}
	return server, promtool
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

var listenAddr = regexp.MustCompile(`msg="serving /metrics, /healthz and /readyz".* addr=(\S+)`)

// waitListen returns the address a CLI process serves its endpoints on, from its log.
func waitListen(t *testing.T, p *proc) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if m := listenAddr.FindStringSubmatch(p.stderr.String()); m != nil {
			return m[1]
		}
		select {
		case <-p.exited:
			t.Fatalf("%v exited: %v\nstderr:\n%s", p.cmd.Args[1:], p.waitErr, tail(p.stderr.String()))
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("%v: no listen address in its log after 30s\nstderr:\n%s", p.cmd.Args[1:], tail(p.stderr.String()))
	return ""
}

// TestPrometheusScrape: a real Prometheus server (Debian's) scrapes a running bridge every
// second, and its HTTP API answers pubcrypt_bridge_forwarded_total equal to the number of
// messages sent; promtool accepts the bridge's /metrics.
func TestPrometheusScrape(t *testing.T) {
	promBin, promtool := prometheusTools(t)
	fe := startVault(t)
	kafka := startKafka(t, topicPlain, topicEncrypted)
	env := append([]string{broker.EnvKafkaBrokers + "=" + kafka.Addrs[0]}, fe.env...)
	p := startCLI(t, env, "encrypt", "--sub", "kafka://pubcrypt-encryptor?topic="+topicPlain+"&offset=oldest",
		"--topic", "kafka://"+topicEncrypted, "--listen", "127.0.0.1:0", "--batch", "50")
	bridge := waitListen(t, p)
	if code, body := httpGet("http://" + bridge + "/healthz"); code != 200 {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	deadline := time.Now().Add(30 * time.Second)
	for code, body := httpGet("http://" + bridge + "/readyz"); code != 200; code, body = httpGet("http://" + bridge + "/readyz") {
		if time.Now().After(deadline) {
			t.Fatalf("/readyz = %d %q after 30s", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}

	dir := t.TempDir()
	promAddr := freeAddr(t)
	cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"+
		"  - job_name: pubcrypt\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    static_configs:\n      - targets: ['%s']\n", bridge)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var promLog lockedBuffer
	prom := exec.Command(promBin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+promAddr)
	prom.Stdout, prom.Stderr = &promLog, &promLog
	if err := prom.Start(); err != nil {
		t.Fatalf("start %s: %v", promBin, err)
	}
	t.Cleanup(func() { _ = prom.Process.Kill(); _ = prom.Wait() })

	const n = 500
	sent := producePlain(t, kafka.Addrs[0], topicPlain, 9, n)
	p.waitLines("encrypted ", n, 2*time.Minute)

	query := "http://" + promAddr + "/api/v1/query?query=pubcrypt_bridge_forwarded_total"
	var last string
	var got float64
	start := time.Now()
	for deadline := start.Add(60 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		var code int
		code, last = httpGet(query)
		got = -1
		var r struct {
			Status string
			Data   struct {
				Result []struct {
					Value []any
				}
			}
		}
		if code == 200 && json.Unmarshal([]byte(last), &r) == nil && r.Status == "success" && len(r.Data.Result) == 1 && len(r.Data.Result[0].Value) == 2 {
			if s, ok := r.Data.Result[0].Value[1].(string); ok {
				got, _ = strconv.ParseFloat(s, 64)
			}
		}
		if got == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus did not see %d forwarded messages within 60s; last answer: %s\nprometheus log:\n%s", n, last, tail(promLog.String()))
		}
	}
	t.Logf("Prometheus answered pubcrypt_bridge_forwarded_total = %v (%d sent) %v after the last message was forwarded", got, n, time.Since(start).Round(time.Millisecond))

	code, metrics := httpGet("http://" + bridge + "/metrics")
	if code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	check := exec.Command(promtool, "check", "metrics")
	check.Stdin = strings.NewReader(metrics)
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s\n/metrics:\n%s", err, out, metrics)
	}
	if !strings.Contains(metrics, `pubcrypt_messages_sealed_total{mode="fields"`) {
		t.Errorf("/metrics lacks the sealed count:\n%s", metrics)
	}
	token := ""
	for _, kv := range fe.env {
		if v, ok := strings.CutPrefix(kv, "VAULT_TOKEN="); ok {
			token = v
		}
	}
	leaks := []string{token}
	for id, body := range sent {
		var pu purchase.Purchase
		_ = json.Unmarshal(body, &pu)
		leaks = append(leaks, id, pu.Name, pu.Address, pu.CardNumber)
		if len(leaks) > 40 {
			break
		}
	}
	for _, s := range leaks {
		if s != "" && bytes.Contains([]byte(metrics), []byte(s)) {
			t.Errorf("/metrics contains %q (a token, an ID or plaintext)", s)
		}
	}
	if _, code := p.interrupt(10 * time.Second); code != 0 {
		t.Errorf("encrypt exited %d after SIGINT\nstderr:\n%s", code, tail(p.stderr.String()))
	}
}
