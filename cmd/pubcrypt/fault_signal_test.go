package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/netfault"
)

// Margins over the targets (30 s to fail on a silent broker, 2 s to exit on SIGINT): the
// targets are what the code aims at; the assertions only catch a hang on a loaded machine.
const (
	silentStartLimit = 45 * time.Second
	interruptLimit   = 4 * time.Second
)

// kafkaCommands are the CLI's commands that talk to Kafka, with what each needs.
func kafkaCommands(t *testing.T) map[string][]string {
	src, dst := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "a.bin"), []byte("some bytes"), 0o600); err != nil {
		t.Fatal(err)
	}
	return map[string][]string{
		"produce":       {"produce", "--topic", "kafka://" + topicPlain, "--count", "1"},
		"peek":          {"peek", "--sub", "kafka://pubcrypt-admin?topic=" + topicPlain},
		"encrypt":       {"encrypt", "--sub", "kafka://pubcrypt-encryptor?topic=" + topicPlain, "--topic", "kafka://" + topicEncrypted},
		"consume":       {"consume", "--sub", "kafka://pubcrypt-consumer?topic=" + topicEncrypted},
		"send-files":    {"send-files", "--dir", src, "--topic", "kafka://" + topicLarge},
		"receive-files": {"receive-files", "--dir", dst, "--sub", "kafka://pubcrypt-files?topic=" + topicLarge},
	}
}

// TestSilentKafkaFailsAtStart: a Kafka address that accepts TCP and never answers made
// produce, consume and peek hang for 6 minutes. Every command that talks to Kafka now
// fails at defaults with a clear error and exit status 3 (environment) within the 30 s
// broker timeout. The commands run in parallel, so the test takes about 30 s.
func TestSilentKafkaFailsAtStart(t *testing.T) {
	fe := startVault(t)
	silent, err := netfault.Silent()
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	env := append([]string{broker.EnvKafkaBrokers + "=" + silent.Addr()}, fe.env...)

	cliBinary(t) // built before the clocks start
	var wg sync.WaitGroup
	for name, args := range kafkaCommands(t) {
		wg.Go(func() {
			start := time.Now()
			p := startCLI(t, env, args...)
			code, end := p.wait(3 * time.Minute)
			took := end.Sub(start)
			msg := lastLine(p.stderr.String())
			t.Logf("%-13s exit %d after %5.1fs: %s", name, code, took.Seconds(), msg)
			switch {
			case code != exitEnvironment:
				t.Errorf("%s: exit status %d, want %d (environment)\nstderr:\n%s", name, code, exitEnvironment, tail(p.stderr.String()))
			case took > silentStartLimit:
				t.Errorf("%s: failed after %v, want about 30s", name, took)
			case !strings.Contains(msg, "no answer from the broker within 30s"):
				t.Errorf("%s: error does not say what happened: %s", name, msg)
			}
		})
	}
	wg.Wait()
}

// TestInterruptWhileConnecting: SIGINT and SIGTERM were ignored while a connection to a
// silent broker was being opened. Now every command exits 0 at once (target 2 s), on
// SIGINT and on SIGTERM.
func TestInterruptWhileConnecting(t *testing.T) {
	fe := startVault(t)
	silent, err := netfault.Silent()
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	env := append([]string{broker.EnvKafkaBrokers + "=" + silent.Addr()}, fe.env...)

	var wg sync.WaitGroup
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		for name, args := range kafkaCommands(t) { // directories of their own for each run
			wg.Go(func() {
				p := startCLI(t, env, args...)
				time.Sleep(1500 * time.Millisecond) // connected to the silent broker, waiting
				took, code := p.signal(sig, 30*time.Second)
				t.Logf("%-13s %v while connecting: exit %d after %v", name, sig, code, took.Round(time.Millisecond))
				if code != exitOK || took > interruptLimit {
					t.Errorf("%s: exit %d after %v on %v, want 0 within 2s\nstderr:\n%s", name, code, took, sig, tail(p.stderr.String()))
				}
			})
		}
	}
	wg.Wait()
}

// TestInterruptEncrypt: SIGINT while idle and in the middle of a stream exits 0 within
// 2 s; every message the bridge reported (acknowledged) is on the encrypted topic, and a
// second run forwards the rest: nothing lost. Ctrl-C during work used to exit 1 with
// "context canceled".
func TestInterruptEncrypt(t *testing.T) {
	const n = 10000
	fe := startVault(t)
	kafka := startKafka(t, topicPlain, topicEncrypted)
	env := append([]string{broker.EnvKafkaBrokers + "=" + kafka.Addrs[0]}, fe.env...)
	args := []string{"encrypt", "--sub", "kafka://pubcrypt-encryptor?topic=" + topicPlain + "&offset=oldest",
		"--topic", "kafka://" + topicEncrypted}

	// Idle: a few messages forwarded, then nothing to do.
	sent := producePlain(t, kafka.Addrs[0], topicPlain, 1, 10)
	p := startCLI(t, env, args...)
	p.waitLines("encrypted ", 10, time.Minute)
	time.Sleep(time.Second)
	took, code := p.interrupt(30 * time.Second)
	t.Logf("encrypt SIGINT while idle: exit %d after %v", code, took.Round(time.Millisecond))
	if code != exitOK || took > interruptLimit {
		t.Fatalf("idle: exit %d after %v, want 0 within 2s\nstderr:\n%s", code, took, tail(p.stderr.String()))
	}

	// Mid-stream: n more messages; interrupted while it forwards them.
	for id, b := range producePlain(t, kafka.Addrs[0], topicPlain, 2, n) {
		sent[id] = b
	}
	p = startCLI(t, env, args...)
	p.waitLines("encrypted ", 2000, 2*time.Minute)
	took, code = p.interrupt(30 * time.Second)
	reported := len(encryptedIDs(p.stdout.String()))
	t.Logf("encrypt SIGINT mid-stream after %d reported: exit %d after %v", reported, code, took.Round(time.Millisecond))
	if code != exitOK || took > interruptLimit {
		t.Fatalf("mid-stream: exit %d after %v, want 0 within 2s\nstderr:\n%s", code, took, tail(p.stderr.String()))
	}
	if !strings.Contains(p.stdout.String(), " message(s) encrypted from ") {
		t.Fatalf("no summary after the interrupt:\n%s", tail(p.stdout.String()))
	}

	// Every acknowledged message is on the destination: the source offsets the bridge
	// reported map to orders that the encrypted topic holds.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srcRecs, err := kafka.ReadRaw(ctx, topicPlain, len(sent))
	if err != nil {
		t.Fatal(err)
	}
	orderAt := map[string]string{}
	for _, r := range srcRecs {
		orderAt["topic "+r.Topic+" partition 0 offset "+itoa(r.Offset)] = header(r.Headers, "order")
	}
	dstRecs, err := kafka.ReadRaw(ctx, topicEncrypted, 10+reported)
	if err != nil {
		t.Fatalf("the encrypted topic holds fewer messages than the bridge acknowledged: %v", err)
	}
	onDst := map[string]bool{}
	for _, r := range dstRecs {
		onDst[header(r.Headers, "order")] = true
	}
	for _, id := range encryptedIDs(p.stdout.String()) {
		if !onDst[orderAt[id]] {
			t.Fatalf("message %s (order %s) was acknowledged but is not on the encrypted topic", id, orderAt[id])
		}
	}

	// A second run forwards the rest: nothing lost.
	p = startCLI(t, env, append(args, "--idle", "20s")...)
	if code, _ := p.wait(3 * time.Minute); code != exitOK {
		t.Fatalf("second run: exit %d\n%s", code, tail(p.stderr.String()))
	}
	all, err := kafka.ReadRaw(ctx, topicEncrypted, len(sent))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, r := range all {
		got[header(r.Headers, "order")] = true
	}
	for id := range sent {
		if !got[id] {
			t.Fatalf("order %s lost", id)
		}
	}
	t.Logf("all %d messages on the encrypted topic after the interrupt and a second run (%d records)", len(sent), len(all))
}

// TestInterruptConsume: SIGINT while idle and in the middle of a stream exits 0 within
// 2 s, and a second run in the same group prints the rest: nothing lost.
func TestInterruptConsume(t *testing.T) {
	const n = 5000
	fe := startVault(t)
	kr := fe.keyring(t)
	kafka := startKafka(t, topicEncrypted)
	env := append([]string{broker.EnvKafkaBrokers + "=" + kafka.Addrs[0]}, fe.env...)
	args := []string{"consume", "--sub", "kafka://pubcrypt-consumer?topic=" + topicEncrypted + "&offset=oldest"}

	sent := produceEncrypted(t, kr, kafka.Addrs[0], topicEncrypted, 1, 10)
	p := startCLI(t, env, args...)
	p.waitLines("[pubcrypt v1]", 10, time.Minute)
	time.Sleep(time.Second)
	took, code := p.interrupt(30 * time.Second)
	t.Logf("consume SIGINT while idle: exit %d after %v", code, took.Round(time.Millisecond))
	if code != exitOK || took > interruptLimit {
		t.Fatalf("idle: exit %d after %v, want 0 within 2s\nstderr:\n%s", code, took, tail(p.stderr.String()))
	}
	seen := map[string]bool{}
	for _, id := range consumedIDs(p.stdout.String()) {
		seen[id] = true
	}

	for id, b := range produceEncrypted(t, kr, kafka.Addrs[0], topicEncrypted, 2, n) {
		sent[id] = b
	}
	p = startCLI(t, env, args...)
	p.waitLines("[pubcrypt v1]", 1000, 2*time.Minute)
	took, code = p.interrupt(30 * time.Second)
	first := consumedIDs(p.stdout.String())
	t.Logf("consume SIGINT mid-stream after %d printed: exit %d after %v", len(first), code, took.Round(time.Millisecond))
	if code != exitOK || took > interruptLimit {
		t.Fatalf("mid-stream: exit %d after %v, want 0 within 2s\nstderr:\n%s", code, took, tail(p.stderr.String()))
	}
	for _, id := range first {
		seen[id] = true
	}

	// The second run in the same group prints the rest (duplicates allowed).
	p = startCLI(t, env, append(args, "--idle", "20s")...)
	if code, _ := p.wait(3 * time.Minute); code != exitOK {
		t.Fatalf("second run: exit %d\n%s", code, tail(p.stderr.String()))
	}
	second := consumedIDs(p.stdout.String())
	for _, id := range second {
		seen[id] = true
	}
	for id := range sent {
		if !seen[id] {
			t.Fatalf("order %s lost: printed by neither run", id)
		}
	}
	t.Logf("all %d messages printed across the interrupt (%d + %d + 10 lines)", len(sent), len(first), len(second))
}
