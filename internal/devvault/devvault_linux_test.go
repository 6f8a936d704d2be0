package devvault

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// alive reports whether pid runs; a zombie (dead, not yet reaped by init) counts as dead.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(fields) > 0 && fields[0] != "Z" && fields[0] != "X"
}

// TestVaultDiesWithParent kills a process that started Vault, without Stop, and checks
// that Vault goes too (Pdeathsig): a dev server, and a persistent one after a Restart.
func TestVaultDiesWithParent(t *testing.T) {
	if mode := os.Getenv("DEVVAULT_HELPER"); mode != "" {
		var opts Options
		if mode == "persistent" {
			opts.StorageDir = os.Getenv("DEVVAULT_HELPER_DIR")
		}
		s, err := Start(context.Background(), opts)
		if err == nil && mode == "persistent" {
			err = s.Restart(context.Background())
		}
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("pid", s.PID(), s.logPath())
		select {}
	}
	for _, mode := range []string{"dev", "persistent"} {
		t.Run(mode, func(t *testing.T) { testVaultDiesWithParent(t, mode) })
	}
}

func testVaultDiesWithParent(t *testing.T, mode string) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestVaultDiesWithParent$")
	cmd.Env = append(os.Environ(), "DEVVAULT_HELPER="+mode, "DEVVAULT_HELPER_DIR="+t.TempDir())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "pid ") {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper said %q, %v", line, err)
	}
	var pid int
	var logPath string
	fmt.Sscan(strings.TrimPrefix(line, "pid "), &pid, &logPath)
	defer os.Remove(logPath) // the helper dies without Stop
	if !alive(pid) {
		t.Fatalf("vault pid %d not running", pid)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("vault pid %d outlived its parent", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
