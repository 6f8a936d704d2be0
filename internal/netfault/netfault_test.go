package netfault

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// hang bounds every wait of these tests: long enough for a loaded 2-core machine, short
// enough that a hang fails the test instead of the whole run.
const hang = 10 * time.Second

// echoServer answers each line with the same line.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, hang)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes a line and reads it back within timeout.
func roundTrip(c net.Conn, line string, timeout time.Duration) (string, error) {
	c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSuffix(got, "\n"), err
}

// refused dials addr and tries a round trip: a reset may come while the dial completes
// (connect then sees ECONNRESET) or at the first read.
func refused(addr string) error {
	c, err := net.DialTimeout("tcp", addr, hang)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = roundTrip(c, "x", hang)
	return err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

func TestEchoModes(t *testing.T) {
	p, err := Listen(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	c := dial(t, p.Addr())
	if got, err := roundTrip(c, "pass", hang); err != nil || got != "pass" {
		t.Fatalf("pass: %q, %v", got, err)
	}

	const d = 150 * time.Millisecond
	p.Delay(d)
	start := time.Now()
	if got, err := roundTrip(c, "delay", hang); err != nil || got != "delay" {
		t.Fatalf("delay: %q, %v", got, err)
	}
	if took := time.Since(start); took < 2*d {
		t.Errorf("a round trip with %v each way took %v, want ≥ %v", d, took, 2*d)
	}
	if m, got := p.Mode(); m != ModeDelay || got != d {
		t.Errorf("Mode = %v %v", m, got)
	}

	// Silent: the request waits, the client times out, and the held line comes back once
	// the proxy passes again (a stopped server resumed), on the same connection.
	p.Silent()
	if _, err := roundTrip(c, "held", 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("silent: %v, want a timeout", err)
	}
	c2 := dial(t, p.Addr()) // a new connection is accepted and hangs too
	if _, err := roundTrip(c2, "new", 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("silent, new connection: %v, want a timeout", err)
	}
	p.Pass()
	c.SetDeadline(time.Now().Add(hang))
	if got, err := bufio.NewReader(c).ReadString('\n'); err != nil || got != "held\n" {
		t.Fatalf("after silent: %q, %v", got, err)
	}
	c2.SetDeadline(time.Now().Add(hang))
	if got, err := bufio.NewReader(c2).ReadString('\n'); err != nil || got != "new\n" {
		t.Fatalf("after silent, new connection: %q, %v", got, err)
	}
	if n := p.Open(); n != 2 {
		t.Errorf("Open = %d, want 2", n)
	}

	// Cut: both open connections are reset, a new one is accepted and reset at once.
	p.Cut()
	for i, c := range []net.Conn{c, c2} {
		if _, err := roundTrip(c, "cut", hang); err == nil || isTimeout(err) {
			t.Errorf("conn %d after cut: %v, want a reset or EOF", i, err)
		}
	}
	start = time.Now()
	if err := refused(p.Addr()); err == nil || isTimeout(err) {
		t.Errorf("new conn while cut: %v, want a reset or EOF", err)
	}
	t.Logf("a new connection while cut failed after %v", time.Since(start))

	p.Pass()
	c4 := dial(t, p.Addr())
	if got, err := roundTrip(c4, "again", hang); err != nil || got != "again" {
		t.Fatalf("pass after cut: %q, %v", got, err)
	}
	if n := p.Accepted(); n != 4 {
		t.Errorf("Accepted = %d, want 4", n)
	}
}

// TestDelayKeepsThroughput checks that a delay is latency, not a bandwidth limit: 4 MiB
// through a 100 ms delay takes about one delay, not one per chunk.
func TestDelayKeepsThroughput(t *testing.T) {
	p, err := Listen(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.Delay(100 * time.Millisecond)
	c := dial(t, p.Addr())
	const size = 4 << 20
	go func() {
		b := make([]byte, 64<<10)
		for sent := 0; sent < size; sent += len(b) {
			if _, err := c.Write(b); err != nil {
				return
			}
		}
	}()
	c.SetDeadline(time.Now().Add(hang))
	start := time.Now()
	n, err := io.CopyN(io.Discard, c, size)
	if err != nil {
		t.Fatalf("read %d of %d bytes: %v", n, size, err)
	}
	t.Logf("4 MiB echoed through a 100 ms delay in %v", time.Since(start))
}

func TestSilentListener(t *testing.T) {
	s, err := Silent()
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, s.Addr())
	if _, err := roundTrip(c, "hello", 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("silent listener: %v, want a timeout", err)
	}
	if n := s.Accepted(); n != 1 {
		t.Errorf("Accepted = %d, want 1", n)
	}
	// A silent server that comes to life: the held line goes to the new target.
	s.SetTarget(echoServer(t))
	s.Pass()
	c.SetDeadline(time.Now().Add(hang))
	if got, err := bufio.NewReader(c).ReadString('\n'); err != nil || got != "hello\n" {
		t.Fatalf("after SetTarget+Pass: %q, %v", got, err)
	}
	s.Silent()
	c2 := dial(t, s.Addr())
	done := make(chan error, 1)
	go func() { _, err := roundTrip(c2, "x", hang); done <- err }()
	time.Sleep(50 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil || isTimeout(err) {
		t.Errorf("read from a silent conn when the listener closes: %v, want EOF or reset", err)
	}
	if _, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		t.Error("dial after Close succeeded")
	}
}

// TestTargetDown: a proxy in front of nothing resets the connection, as a refused dial would.
func TestTargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	p, err := Listen(dead)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := refused(p.Addr()); err == nil || isTimeout(err) {
		t.Errorf("through a proxy to a closed port: %v, want a reset or EOF", err)
	}
}
