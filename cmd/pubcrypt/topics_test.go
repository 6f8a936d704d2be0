package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pubcrypt/pubcrypt/internal/broker"
)

// partitions returns the number of partitions of each topic on the cluster at addr (-1:
// no such topic).
func partitions(t *testing.T, addr string, topics ...string) []int {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	td, err := kadm.NewClient(cl).ListTopics(ctx, topics...)
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, n := range topics {
		d, ok := td[n]
		if !ok || d.Err != nil {
			out = append(out, -1)
			continue
		}
		out = append(out, len(d.Partitions))
	}
	return out
}

func TestTopicsCreate(t *testing.T) {
	kafka := startKafka(t)
	ctx := context.Background()
	var out bytes.Buffer
	if err := runTopics(ctx, []string{"create", "--brokers", kafka.Addrs[0], "orders:3", "orders_encrypted"}, &out); err != nil {
		t.Fatalf("topics create: %v\n%s", err, out.String())
	}
	if got := partitions(t, kafka.Addrs[0], "orders", "orders_encrypted"); got[0] != 3 || got[1] != 1 {
		t.Fatalf("partitions after create: %v, want [3 1]\n%s", got, out.String())
	}
	out.Reset()
	if err := runTopics(ctx, []string{"create", "--brokers", kafka.Addrs[0], "orders:3"}, &out); err != nil || !strings.Contains(out.String(), "already there") {
		t.Fatalf("create again with the same partitions: %v\n%s", err, out.String())
	}
	err := runTopics(ctx, []string{"create", "--brokers", kafka.Addrs[0], "orders:5"}, &out)
	if err == nil || !strings.Contains(err.Error(), "exists with 3 partition(s), not 5") {
		t.Fatalf("create with other partitions: %v", err)
	}
	if got := partitions(t, kafka.Addrs[0], "orders"); got[0] != 3 {
		t.Fatalf("orders has %d partitions after a refused create", got[0])
	}
}

// TestDevTopics: `pubcrypt dev --topic NAME:N` serves its topics beside the demo's.
func TestDevTopics(t *testing.T) {
	envFile := filepath.Join(t.TempDir(), "env")
	p := startCLI(t, nil, "dev", "--env-file", envFile, "--topic", "orders:4", "--topic", "audit")
	p.waitLines("# Vault keys", 1, time.Minute)
	b, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(b), broker.EnvKafkaBrokers+"=")
	addr := strings.Trim(strings.SplitN(rest, "\n", 2)[0], `"`)
	if got := partitions(t, addr, "orders", "audit", topicPlain); got[0] != 4 || got[1] != 1 || got[2] != 1 {
		t.Fatalf("dev topics: partitions %v, want [4 1 1]", got)
	}
	if _, code := p.interrupt(10 * time.Second); code != exitOK {
		t.Fatalf("dev after SIGINT: exit %d\n%s", code, p.stderr.String())
	}
}

// TestProduceFromStopsAtBadLine: a line that is not JSON stops produce with the message
// status and its line number; the lines before it were sent, none after.
func TestProduceFromStopsAtBadLine(t *testing.T) {
	kafka := startKafka(t, topicPlain)
	in := filepath.Join(t.TempDir(), "in.jsonl")
	data := `{"body":"one"}` + "\n\n" + `{"a":2}` + "\n" + `{"body": oops}` + "\n" + `{"body":"four"}` + "\n"
	if err := os.WriteFile(in, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startCLI(t, []string{"KAFKA_BROKERS=" + kafka.Addrs[0]}, "produce", "--topic", "kafka://"+topicPlain, "--from", in)
	code, _ := p.wait(time.Minute)
	if code != exitMessage || !strings.Contains(p.stderr.String(), "line 4: not JSON") || strings.Contains(p.stderr.String(), "oops") {
		t.Fatalf("exit %d, want %d with line 4 named and the content not shown:\n%s", code, exitMessage, p.stderr.String())
	}
	recs, err := kafka.ReadRaw(context.Background(), topicPlain, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || string(recs[0].Value) != "one" || string(recs[1].Value) != `{"a":2}` {
		t.Fatalf("records on the topic: %d", len(recs))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if more, _ := kafka.ReadRaw(ctx, topicPlain, 3); len(more) > 2 {
		t.Fatalf("a line after the bad one was sent: %d records", len(more))
	}
}

// TestDevWithFPEPlugin: `pubcrypt dev --fpe-plugin` loads pubcrypt's Vault FPE plugin into
// its real Vault dev server, so the CLI runs fpe(vault) fields end to end: purchases go
// through encrypt with card numbers encoded inside Vault, keep their shape on the topic,
// and consume decodes them byte for byte.
func TestDevWithFPEPlugin(t *testing.T) {
	plugin := os.Getenv("PUBCRYPT_FPE_PLUGIN_BIN")
	if plugin == "" {
		t.Fatal("PUBCRYPT_FPE_PLUGIN_BIN is not set: build the plugin with scripts/install-fpe-plugin.sh (scripts/test does)")
	}
	envFile := filepath.Join(t.TempDir(), "env")
	p := startCLI(t, nil, "dev", "--env-file", envFile, "--fpe-plugin", plugin)
	p.waitLines("# Vault keys", 1, time.Minute)
	if !strings.Contains(p.stdout.String(), "FPE plugin at pubcrypt-fpe") {
		t.Fatalf("dev does not say it loaded the plugin:\n%s", p.stdout.String())
	}
	b, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		k, v, _ := strings.Cut(strings.TrimPrefix(l, "export "), "=")
		uq, err := strconv.Unquote(v)
		if err != nil {
			t.Fatalf("env file line %q: %v", l, err)
		}
		env = append(env, k+"="+uq)
	}
	run := func(args ...string) string {
		t.Helper()
		c := startCLI(t, env, args...)
		if code, _ := c.wait(time.Minute); code != exitOK {
			t.Fatalf("%v: exit %d\n%s", args, code, c.stderr.String())
		}
		return c.stdout.String()
	}
	plain := run("produce", "--count", "5", "--seed", "3")
	run("encrypt", "--sub", "kafka://enc?topic="+topicPlain+"&offset=oldest", "--topic", "kafka://"+topicEncrypted,
		"--fields", "card_number=fpe(bin,luhn,vault)", "--max", "5")
	raw := run("peek", "--sub", "kafka://peek?topic="+topicEncrypted+"&offset=oldest", "--max", "5", "--output", "json")
	got := run("consume", "--sub", "kafka://c?topic="+topicEncrypted+"&offset=oldest", "--max", "5", "--output", "json")
	cards := regexp.MustCompile(`"card_number":"([0-9 -]+)"`)
	sent := regexp.MustCompile(`card ([0-9-]+)`).FindAllStringSubmatch(plain, -1)
	if len(sent) != 5 {
		t.Fatalf("produce printed %d card numbers:\n%s", len(sent), plain)
	}
	for _, c := range sent {
		if strings.Contains(raw, c[1]) {
			t.Errorf("card %s is in clear on the encrypted topic", c[1])
		}
		if !strings.Contains(got, `"card_number":"`+c[1]+`"`) {
			t.Errorf("card %s did not come back from consume", c[1])
		}
	}
	if n := len(cards.FindAllString(raw, -1)); n != 5 {
		t.Errorf("%d card numbers of card shape on the encrypted topic, want 5 (fpe keeps the shape)", n)
	}
	if _, code := p.interrupt(10 * time.Second); code != exitOK {
		t.Fatalf("dev after SIGINT: exit %d\n%s", code, p.stderr.String())
	}
}
