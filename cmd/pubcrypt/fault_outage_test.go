package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/devkafka"
	"github.com/pubcrypt/pubcrypt/internal/netfault"
)

// waitFor polls the process's stdout until ok says so, failing after timeout or if the
// process exits first.
func (p *proc) waitFor(what string, timeout time.Duration, ok func(stdout string) bool) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if ok(p.stdout.String()) {
			return
		}
		select {
		case <-p.exited:
			if ok(p.stdout.String()) {
				return
			}
			p.t.Fatalf("%v exited (%v) before %s\nstdout:\n%s\nstderr:\n%s", p.cmd.Args[1:], p.waitErr, what, tail(p.stdout.String()), tail(p.stderr.String()))
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%v: not %s after %v\nstdout:\n%s\nstderr:\n%s", p.cmd.Args[1:], what, timeout, tail(p.stdout.String()), tail(p.stderr.String()))
		}
	}
}

func distinct(ids []string) int {
	m := map[string]bool{}
	for _, id := range ids {
		m[id] = true
	}
	return len(m)
}

// pipeline runs the bridge and a consumer behind it, both as processes: plaintext
// purchases → encrypt (field mode) → encrypted topic → consume.
type pipeline struct {
	t         *testing.T
	kafka     *devkafka.Broker
	sent      map[string][]byte
	enc, cons *proc
}

const pipelineBatch = 50

func startPipeline(t *testing.T, kafka *devkafka.Broker, env []string, n int) *pipeline {
	t.Helper()
	pl := &pipeline{t: t, kafka: kafka, sent: producePlain(t, kafka.Addrs[0], topicPlain, 7, n)}
	pl.enc = startCLI(t, env, "encrypt", "--sub", "kafka://pubcrypt-encryptor?topic="+topicPlain+"&offset=oldest",
		"--topic", "kafka://"+topicEncrypted, "--batch", itoa(pipelineBatch))
	pl.cons = startCLI(t, env, "consume", "--sub", "kafka://pubcrypt-consumer?topic="+topicEncrypted+"&offset=oldest")
	return pl
}

// finish waits until the consumer has printed every purchase, interrupts both (exit 0
// expected), and checks that nothing was lost and that the decrypted bodies are the
// produced ones; it returns the duplicates each side saw.
func (pl *pipeline) finish(timeout time.Duration) (encDups, consDups int) {
	t := pl.t
	t.Helper()
	n := len(pl.sent)
	pl.cons.waitFor("all purchases printed", timeout, func(out string) bool { return distinct(consumedIDs(out)) >= n })
	for name, p := range map[string]*proc{"encrypt": pl.enc, "consume": pl.cons} {
		took, code := p.interrupt(30 * time.Second)
		if code != exitOK {
			t.Fatalf("%s: exit %d after the interrupt (took %v)\nstderr:\n%s", name, code, took, tail(p.stderr.String()))
		}
	}
	for _, l := range strings.Split(pl.cons.stdout.String(), "\n") {
		ids := consumedIDs(l)
		if len(ids) != 1 {
			continue
		}
		body := l[strings.Index(l, "] ")+2:]
		if want, ok := pl.sent[ids[0]]; !ok || len(body) == 0 {
			t.Fatalf("consumed an order that was not produced: %q", ids[0])
		} else if body != string(want) {
			t.Fatalf("order %s did not decrypt to what was produced", ids[0])
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	recs, err := pl.kafka.ReadRaw(ctx, topicEncrypted, n)
	if err != nil {
		t.Fatal(err)
	}
	onTopic := map[string]bool{}
	for _, r := range recs {
		onTopic[header(r.Headers, "order")] = true
	}
	for id := range pl.sent {
		if !onTopic[id] {
			t.Fatalf("order %s lost: not on the encrypted topic", id)
		}
	}
	encIDs := encryptedIDs(pl.enc.stdout.String())
	return len(encIDs) - distinct(encIDs), len(consumedIDs(pl.cons.stdout.String())) - n
}

// TestPipelineRidesOutKafkaRestart: the broker is stopped for 12 s in the middle of a
// stream and started again with its data. encrypt used to exit after 11 s and consume
// after 7 s with "connection refused"; both now wait, log the outage once, reconnect
// and go on, and every message arrives.
func TestPipelineRidesOutKafkaRestart(t *testing.T) {
	const n = 10000
	fe := startVault(t)
	kafka, err := devkafka.Start(devkafka.Options{Topics: []string{topicPlain, topicEncrypted}, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kafka.Close)
	env := append([]string{broker.EnvKafkaBrokers + "=" + kafka.Addrs[0]}, fe.env...)
	pl := startPipeline(t, kafka, env, n)

	pl.cons.waitFor("1,000 purchases printed", 2*time.Minute, func(out string) bool { return len(consumedIDs(out)) >= 1000 })
	kafka.Stop()
	t.Logf("broker stopped after %d forwarded, %d consumed", len(encryptedIDs(pl.enc.stdout.String())), len(consumedIDs(pl.cons.stdout.String())))
	time.Sleep(12 * time.Second)
	for name, p := range map[string]*proc{"encrypt": pl.enc, "consume": pl.cons} {
		select {
		case <-p.exited:
			t.Fatalf("%s exited during the outage: %v\n%s", name, p.waitErr, tail(p.stderr.String()))
		default:
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := kafka.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("broker restarted")
	encDups, consDups := pl.finish(3 * time.Minute)
	t.Logf("all %d purchases forwarded and consumed across a 12 s broker outage; duplicates: %d forwarded, %d consumed", n, encDups, consDups)
	checkOutageLogs(t, map[string]*proc{"encrypt": pl.enc, "consume": pl.cons})
}

// checkOutageLogs: a process that logged an outage logged its class and its end too.
// (Whether a process sees an outage at all depends on timing: sarama's client rides out a
// short one by itself when no request falls in it.)
func checkOutageLogs(t *testing.T, procs map[string]*proc) {
	t.Helper()
	for name, p := range procs {
		logs := p.stderr.String()
		began, over := strings.Count(logs, "outage: holding"), strings.Count(logs, "outage over")
		if began > 0 && (!strings.Contains(logs, "class=environment") || over != began) {
			t.Errorf("%s logged %d outage(s) and %d end(s):\n%s", name, began, over, tail(logs))
		}
		t.Logf("%s logged:\n%s", name, outageLines(logs))
	}
}

// TestPipelineRidesOutVaultCut: Vault is cut off (connections reset) for 6 s while a
// field-mode bridge and a consumer run; Vault killed mid-run used to stop the bridge 2-3 s
// later. Neither acknowledges anything it could not encrypt or decrypt; both go on when
// Vault is back, and every message arrives.
func TestPipelineRidesOutVaultCut(t *testing.T) {
	const n = 10000
	fe := startVault(t)
	vaultProxy, err := netfault.Listen(strings.TrimPrefix(fe.vault.Addr, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer vaultProxy.Close()
	kafka := startKafka(t, topicPlain, topicEncrypted)
	env := []string{broker.EnvKafkaBrokers + "=" + kafka.Addrs[0], "VAULT_ADDR=http://" + vaultProxy.Addr(), "VAULT_TOKEN=" + fe.vault.Token}
	pl := startPipeline(t, kafka, env, n)

	pl.cons.waitFor("1,000 purchases printed", 2*time.Minute, func(out string) bool { return len(consumedIDs(out)) >= 1000 })
	vaultProxy.Cut()
	t.Logf("Vault cut off after %d forwarded, %d consumed", len(encryptedIDs(pl.enc.stdout.String())), len(consumedIDs(pl.cons.stdout.String())))
	time.Sleep(6 * time.Second)
	vaultProxy.Pass()
	t.Logf("Vault reachable again after %d forwarded, %d consumed", len(encryptedIDs(pl.enc.stdout.String())), len(consumedIDs(pl.cons.stdout.String())))
	encDups, consDups := pl.finish(3 * time.Minute)
	t.Logf("all %d purchases forwarded and consumed across a 6 s Vault outage; duplicates: %d forwarded, %d consumed", n, encDups, consDups)
	checkOutageLogs(t, map[string]*proc{"encrypt": pl.enc, "consume": pl.cons})
}

// TestMaxOutage: with --max-outage the bridge gives up on an outage that lasts, with
// exit status 3 and an error that says so, instead of waiting for ever.
func TestMaxOutage(t *testing.T) {
	fe := startVault(t)
	vaultProxy, err := netfault.Listen(strings.TrimPrefix(fe.vault.Addr, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer vaultProxy.Close()
	kafka := startKafka(t, topicPlain, topicEncrypted)
	env := []string{broker.EnvKafkaBrokers + "=" + kafka.Addrs[0], "VAULT_ADDR=http://" + vaultProxy.Addr(), "VAULT_TOKEN=" + fe.vault.Token}
	producePlain(t, kafka.Addrs[0], topicPlain, 3, 100)
	p := startCLI(t, env, "encrypt", "--sub", "kafka://pubcrypt-encryptor?topic="+topicPlain+"&offset=oldest",
		"--topic", "kafka://"+topicEncrypted, "--batch", "10", "--max-outage", "3s")
	p.waitLines("encrypted ", 10, time.Minute)
	vaultProxy.Cut()
	cut := time.Now()
	code, end := p.wait(time.Minute)
	msg := lastLine(p.stderr.String())
	t.Logf("exit %d %v after the cut: %s", code, end.Sub(cut).Round(time.Millisecond), msg)
	if code != exitEnvironment || !strings.Contains(msg, "longer than --max-outage 3s") {
		t.Fatalf("exit %d, want %d with the outage named\n%s", code, exitEnvironment, tail(p.stderr.String()))
	}
}

// outageLines returns the outage log lines.
func outageLines(logs string) string {
	var out []string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "outage") {
			out = append(out, "    "+l)
		}
	}
	return strings.Join(out, "\n")
}
