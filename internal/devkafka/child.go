package devkafka

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
)

// envChild, when set in a process's environment, makes ServeChildIfAsked run a broker
// with the Options it holds (JSON) instead of returning.
const envChild = "PUBCRYPT_DEVKAFKA_CHILD"

// Child is a broker in a child process (StartChild): a benchmark then measures its
// clients without the broker's work and heap in the same process, as with a real
// broker. Records the broker keeps (hundreds of MiB in a benchmark) would otherwise make
// every garbage collection of the process under test slower.
type Child struct {
	// Addrs are the bootstrap addresses, host:port.
	Addrs []string
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

// StartChild starts a broker with opts in a child process: the running executable, which
// must call ServeChildIfAsked first thing (a test binary's TestMain). Close it when done.
func StartChild(opts Options) (*Child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("devkafka: start child: %w", err)
	}
	raw, err := json.Marshal(opts)
	if err != nil {
		return nil, fmt.Errorf("devkafka: start child: %w", err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envChild+"="+string(raw))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("devkafka: start child: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("devkafka: start child: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("devkafka: start child: %w", err)
	}
	c := &Child{cmd: cmd, stdin: stdin}
	got := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "devkafka-addrs "); ok {
				got <- a
			}
		}
		close(got)
	}()
	select {
	case a, ok := <-got:
		if !ok {
			c.Close()
			return nil, fmt.Errorf("devkafka: child exited before it listened (does its TestMain call ServeChildIfAsked?)")
		}
		c.Addrs = strings.Split(a, ",")
	case <-time.After(30 * time.Second):
		c.Close()
		return nil, fmt.Errorf("devkafka: child did not listen within 30s")
	}
	return c, nil
}

// Close stops the child's broker and waits for the child to exit.
func (c *Child) Close() {
	_ = c.stdin.Close() // the child exits when its stdin closes
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
}

// ServeChildIfAsked returns at once in a process that StartChild did not start. In one it
// did, it runs the broker, prints its addresses, and exits when its stdin closes.
func ServeChildIfAsked() {
	raw := os.Getenv(envChild)
	if raw == "" {
		return
	}
	var opts Options
	if err := json.Unmarshal([]byte(raw), &opts); err != nil {
		fmt.Fprintln(os.Stderr, "devkafka child:", err)
		os.Exit(2)
	}
	b, err := Start(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "devkafka child:", err)
		os.Exit(2)
	}
	fmt.Printf("devkafka-addrs %s\n", strings.Join(b.Addrs, ","))
	_, _ = io.Copy(io.Discard, os.Stdin)
	b.Close()
	os.Exit(0)
}
