// Package devbrokers starts real broker emulators as child processes, for the tests that
// prove pubcrypt against brokers which cannot run inside the Go process: Google's Pub/Sub
// emulator (Java, from the Google Cloud CLI) and fauxqs (Node.js, an SQS/SNS emulator that
// speaks the AWS JSON and query protocols gocloud's awssnssqs driver uses).
//
// Both listen on a free port of 127.0.0.1 only, live in their own process group (Stop
// kills the group; on Linux the kernel kills it too if the test binary dies) and fail with
// an error that says how to install them when they are missing: a test that needs a broker
// fails rather than skips.
package devbrokers

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/pubcrypt/pubcrypt/internal/devproc"
)

// defaultStartTimeout bounds a start when ctx has no deadline: the emulator's JVM takes
// 1–10 s on a loaded 2-core machine.
const defaultStartTimeout = 90 * time.Second

// child is a running server process and its log.
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{} // closed once the process has been reaped
	waitErr error         // set before exited is closed

	stopOnce sync.Once
}

// startChild starts cmd in its own process group with stdout and stderr in a temporary
// log file, unless the caller set them.
func startChild(name string, cmd *exec.Cmd) (*child, error) {
	c := &child{name: name, cmd: cmd, exited: make(chan struct{})}
	if cmd.Stderr == nil {
		f, err := os.CreateTemp("", "devbrokers-"+name+"-*.log")
		if err != nil {
			return nil, fmt.Errorf("devbrokers: %s: create log file: %w", name, err)
		}
		defer f.Close() // the child holds its own descriptor
		c.logPath = f.Name()
		cmd.Stderr = f
		if cmd.Stdout == nil {
			cmd.Stdout = f
		}
	}
	cmd.SysProcAttr = devproc.SysProcAttr()
	if err := cmd.Start(); err != nil {
		c.removeLog()
		return nil, fmt.Errorf("devbrokers: start %s: %w", name, err)
	}
	go func() {
		c.waitErr = c.cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// stop kills the process group and waits for the process; safe to call more than once.
func (c *child) stop() {
	c.stopOnce.Do(func() {
		_ = devproc.Kill(c.cmd.Process)
		select {
		case <-c.exited:
		case <-time.After(10 * time.Second):
		}
		c.removeLog()
	})
}

func (c *child) removeLog() {
	if c.logPath != "" {
		_ = os.Remove(c.logPath)
	}
}

// failure describes why the child did not become ready: ctx's error or its exit, and the
// last lines of its log.
func (c *child) failure(err error) error {
	select {
	case <-c.exited:
		err = fmt.Errorf("exited early (%v)", c.waitErr)
	default:
	}
	tail := ""
	if c.logPath != "" {
		if b, rerr := os.ReadFile(c.logPath); rerr == nil {
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			if len(lines) > 20 {
				lines = lines[len(lines)-20:]
			}
			tail = "\n--- " + c.name + " log (last lines) ---\n" + strings.Join(lines, "\n")
		}
	}
	return fmt.Errorf("devbrokers: %s did not become ready: %w%s", c.name, err, tail)
}

// waitReady polls ready every 50 ms until it succeeds, ctx ends or the process exits.
func (c *child) waitReady(ctx context.Context, ready func(context.Context) error) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return c.failure(fmt.Errorf("%w (last probe: %v)", ctx.Err(), err))
		case <-c.exited:
			return c.failure(nil)
		case <-tick.C:
		}
	}
}

// withStartTimeout gives ctx a deadline if it has none.
func withStartTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, defaultStartTimeout)
}

// freePort returns a port of 127.0.0.1 free a moment ago. Another process may take it
// before the server binds it; the callers retry then.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// CacheDir is where scripts/install-test-tools.sh installs what the tests run:
// $PUBCRYPT_CACHE, else ${XDG_CACHE_HOME:-$HOME/.cache}/pubcrypt (as for the Vault binary).
func CacheDir() (string, error) {
	d, err := devproc.CacheDir()
	if err != nil {
		return "", fmt.Errorf("devbrokers: %w", err)
	}
	return d, nil
}
