package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

// TestFlagChecks: a command line the command would misread is refused with the usage
// status before anything is touched: a negative count or duration, a flag after an
// argument, an argument where none is taken.
func TestFlagChecks(t *testing.T) {
	for _, c := range []struct {
		run  func(context.Context, []string, io.Writer) error
		args []string
		says string
	}{
		{runConsume, []string{"--sub", "mem://x", "--max", "-1"}, "must be 0 or more"},
		{runConsume, []string{"--sub", "mem://x", "--idle", "-1s"}, "must be 0 or more"},
		{runEncrypt, []string{"--sub", "mem://x", "--topic", "mem://y", "--max", "-5"}, "must be 0 or more"},
		{runEncrypt, []string{"--sub", "mem://x", "--topic", "mem://y", "--max-outage", "-1m"}, "must be 0 or more"},
		{runReceiveFiles, []string{"--max-files", "-1"}, "must be 0 or more"},
		{runReceiveFiles, []string{"--max", "-1"}, "must be 0 or more"},
		{runReceiveFiles, []string{"--stale-after", "-1h"}, "must be 0 or more"},
		{runSendFiles, []string{"--chunk-size", "-1"}, "must be 0 or more"},
		{runPeek, []string{"--sub", "mem://x", "--max", "-1"}, "must be 0 or more"},
		{runPeek, []string{"--sub", "mem://x", "--wait", "-1s"}, "must be 0 or more"},
		{runProduce, []string{"--count", "-1"}, "must be 0 or more"},
		{runProduce, []string{"--interval", "-1s"}, "must be 0 or more"},
		{runProduce, []string{"--from", "-", "--count", "x"}, "not a whole number"},
		{runDev, []string{"--kafka-port", "-1"}, "must be 0 or more"},
		{runDev, []string{"--kafka-port", "70000"}, "0 to 65535"},
		{runDemo, []string{"--count", "0"}, "at least 1"},
		{runConsume, []string{"--sub", "mem://x", "stray", "--max", "5"}, `flag --max after the argument "stray"`},
		{runConsume, []string{"--sub", "mem://x", "stray"}, `unexpected argument "stray"`},
		{runSendFiles, []string{"--dir", "d", "stray"}, `unexpected argument "stray"`},
		{runRotate, []string{"pubcrypt", "--key", "other"}, `flag --key after the argument "pubcrypt"`},
		{runTopics, []string{"create", "t1", "--brokers", "127.0.0.1:1"}, `flag --brokers after the argument "t1"`},
		{runTopics, []string{"create", "t1:0"}, "partitions"},
		{runTopics, []string{"delete", "t1"}, "unknown"},
		{runVersion, []string{"extra"}, "unexpected argument"},
	} {
		var out bytes.Buffer
		err := c.run(context.Background(), c.args, &out)
		var ue *usageError
		if !errors.As(err, &ue) || exitCode(context.Background(), err) != exitUsage || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%v: %v (exit %d), want a usage error saying %q", c.args, err, exitCode(context.Background(), err), c.says)
		}
	}
}

func TestVersion(t *testing.T) {
	bin := cliBinary(t)
	for _, args := range [][]string{{"--version"}, {"version"}} {
		out, err := exec.Command(bin, args...).Output()
		if err != nil {
			t.Fatalf("pubcrypt %v: %v", args, err)
		}
		s := string(out)
		if !strings.HasPrefix(s, "pubcrypt ") || !strings.Contains(s, runtime.Version()) || strings.Count(s, "\n") != 1 {
			t.Errorf("pubcrypt %v printed %q, want one line: pubcrypt VERSION %s ...", args, s, runtime.Version())
		}
	}
}

// TestRotateNames: `pubcrypt rotate NAME` rotates NAME, not the default key, and a name
// that does not exist rotates nothing.
func TestRotateNames(t *testing.T) {
	env := startVault(t)
	kr := env.keyring(t) // also sets VAULT_ADDR and VAULT_TOKEN for the command
	ctx := context.Background()
	latest := func(name string) int {
		t.Helper()
		info, err := kr.KeyInfo(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return info.LatestVersion
	}
	var out bytes.Buffer
	if err := runRotate(ctx, []string{demoFPEKey}, &out); err != nil {
		t.Fatalf("rotate %s: %v", demoFPEKey, err)
	}
	if latest(demoFPEKey) != 2 || latest(demoKey) != 1 {
		t.Fatalf("after rotate %s: %s at v%d, %s at v%d; want 2 and 1\n%s", demoFPEKey, demoFPEKey, latest(demoFPEKey), demoKey, latest(demoKey), out.String())
	}
	err := runRotate(ctx, []string{demoKey, "no-such-key"}, &out)
	if exitCode(ctx, err) != exitUsage || !strings.Contains(fmtErr(err), `"no-such-key" does not exist`) {
		t.Fatalf("rotate with a missing key: %v", err)
	}
	if latest(demoKey) != 1 {
		t.Fatalf("a rotate refused for a missing key rotated %s anyway", demoKey)
	}
}

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
