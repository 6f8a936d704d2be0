package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests change mounts (a read-only bind mount, a tiny tmpfs), as root. Root
// ignores permission bits, so a chmod would not make a directory unwritable for it.
// They fail, never skip, when they cannot mount.

// bindMount mounts dir on itself, so that it can be made read-only and writable again
// with remount; it is unmounted when the test ends.
func bindMount(t *testing.T, dir string) {
	t.Helper()
	if err := syscall.Mount(dir, dir, "", syscall.MS_BIND, ""); err != nil {
		t.Fatalf("bind mount %s (these tests need root): %v", dir, err)
	}
	t.Cleanup(func() { unmount(t, dir) })
}

func setReadOnly(t *testing.T, dir string, ro bool) {
	t.Helper()
	flags := uintptr(syscall.MS_REMOUNT | syscall.MS_BIND)
	if ro {
		flags |= syscall.MS_RDONLY
	}
	// A remount to read-only fails with EBUSY while a file is open for writing there:
	// the receiver holds one only while it stores a chunk.
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := syscall.Mount("", dir, "", flags, "")
		if err == nil {
			return
		}
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			t.Fatalf("remount %s read-only=%t: %v", dir, ro, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// tmpfs mounts a tmpfs of size (as mount(8) takes it: "2m") on dir.
func tmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		t.Fatalf("mount a tmpfs on %s (these tests need root): %v", dir, err)
	}
	t.Cleanup(func() { unmount(t, dir) })
}

func resizeTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_REMOUNT, "size="+size); err != nil {
		t.Fatalf("resize the tmpfs on %s: %v", dir, err)
	}
}

func unmount(t *testing.T, dir string) {
	for range 100 {
		err := syscall.Unmount(dir, 0)
		if err == nil || errors.Is(err, syscall.EINVAL) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
		t.Errorf("unmount %s: %v", dir, err)
	}
}

// waitForPartial waits until dir holds partial state of at least size bytes.
func waitForPartial(t *testing.T, ctx context.Context, dir string, size int64, exited <-chan error) {
	t.Helper()
	for largestPartial(dir) < size {
		select {
		case err := <-exited:
			t.Fatalf("receive-files ended before its partial state reached %d bytes: %v", size, err)
		case <-ctx.Done():
			t.Fatalf("partial state did not reach %d bytes: %v", size, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// expectEnvironmentFault checks that receive-files stopped with an error naming the
// environment class and, in its text, why (want).
func expectEnvironmentFault(t *testing.T, err error, stdout, stderr, want string) {
	t.Helper()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitEnvironment || !strings.Contains(stderr, "environment fault") || !strings.Contains(stderr, want) {
		t.Fatalf("receive-files: %v, want an environment fault naming %q\nstdout:\n%s\nstderr:\n%s", err, want, stdout, stderr)
	}
	if strings.Contains(stdout, "refused:") {
		t.Fatalf("receive-files refused a transfer for an environment fault:\n%s", stdout)
	}
	t.Logf("receive-files stopped: %s", lastLine(stderr))
}

// TestReceiveFilesUnwritableDir: a destination that cannot be written is an environment
// fault. At start: one clear error, nothing read, nothing acknowledged. Mid-transfer
// (the directory goes read-only between two chunks): the chunk is not acknowledged and
// the command stops with the error. Once the directory is writable again, a rerun in the
// same consumer group receives both files whole.
func TestReceiveFilesUnwritableDir(t *testing.T) {
	const topic, group = "files", "pubcrypt-files"
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	rig := newFileRig(t, ctx, topic)
	src := t.TempDir()
	dst := filepath.Join(t.TempDir(), "destination")
	if err := os.Mkdir(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	bindMount(t, dst)
	const chunk = 64 << 10
	a, b := filepath.Join(src, "a.bin"), filepath.Join(src, "b.bin")
	randomFile(t, a, 3*chunk+100, 2) // 5 messages
	randomFile(t, b, 10*chunk, 3)    // 11 messages
	if _, err := rig.send(ctx, topic, a, chunk, 0, nil); err != nil {
		t.Fatal(err)
	}

	// Read-only at start.
	setReadOnly(t, dst, true)
	err, stdout, stderr := rig.runReceive(t, ctx, dst, group, topic, "--idle", "10s")
	expectEnvironmentFault(t, err, stdout, stderr, "read-only file system")
	if !strings.Contains(stderr, "not writable") {
		t.Errorf("the error does not say the destination is not writable: %s", stderr)
	}
	if off, err := rig.committed(ctx, group, topic); err != nil || off != -1 {
		t.Fatalf("committed offset after the failed start: %d, %v; want none", off, err)
	}

	// Writable again; a.bin arrives, then b.bin is half sent when the directory goes
	// read-only.
	setReadOnly(t, dst, false)
	recv := rig.receiveCmd(ctx, dst, group, topic, "--idle", "60s")
	var out strings.Builder
	var errOut strings.Builder
	recv.Stdout, recv.Stderr = &out, &errOut
	if err := recv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- recv.Wait() }()
	release := make(chan struct{})
	sent := make(chan error, 1)
	go func() {
		_, err := rig.send(ctx, topic, b, chunk, 6, release) // header + 5 data chunks, then wait
		sent <- err
	}()
	waitForPartial(t, ctx, dst, 5*chunk, exited)
	if _, err := os.Stat(filepath.Join(dst, "a.bin")); err != nil {
		t.Fatalf("a.bin not received before b.bin: %v", err)
	}
	setReadOnly(t, dst, true)
	close(release)
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	select {
	case err = <-exited:
	case <-ctx.Done():
		t.Fatal("receive-files did not stop on the read-only directory")
	}
	expectEnvironmentFault(t, err, out.String(), errOut.String(), "read-only file system")
	// a.bin is 5 messages at offsets 0-4, b.bin's chunk 6 is at offset 11: not committed.
	if off, err := rig.committed(ctx, group, topic); err != nil || off > 11 {
		t.Fatalf("committed offset %d, %v: the chunk refused by the read-only directory (offset 11) was acknowledged", off, err)
	}
	if _, err := os.Stat(filepath.Join(dst, "b.bin")); err == nil {
		t.Fatal("b.bin in place before it completed")
	}

	// Writable again: a rerun in the same group finishes b.bin from its partial state.
	setReadOnly(t, dst, false)
	err, stdout, stderr = rig.runReceive(t, ctx, dst, group, topic, "--max-files", "1", "--idle", "30s")
	if err != nil || !strings.Contains(stdout, "b.bin") || strings.Contains(stdout, "refused:") {
		t.Fatalf("rerun: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	sameFile(t, a, filepath.Join(dst, "a.bin"))
	sameFile(t, b, filepath.Join(dst, "b.bin"))
	onlyFiles(t, dst, "a.bin", "b.bin")
	t.Logf("rerun: %s", lastLine(stdout))
}

// TestReceiveFilesDiskFull: a destination that fills up is an environment fault, while
// chunks are stored and while the complete file is assembled: the chunk is not
// acknowledged, the command stops with the error, nothing partial is left under the
// file's name, and once there is room a rerun in the same group finishes the file.
func TestReceiveFilesDiskFull(t *testing.T) {
	const chunk = 512 << 10
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	rig := newFileRig(t, ctx, "while-storing", "while-assembling")
	src := t.TempDir()
	for _, c := range []struct {
		topic string
		size  int64 // on a 2 MiB file system
	}{
		{"while-storing", 3 << 20},       // its chunks do not fit
		{"while-assembling", 1200 << 10}, // its chunks fit, but not the file beside them
	} {
		t.Run(c.topic, func(t *testing.T) {
			group := "pubcrypt-" + c.topic
			dst := filepath.Join(t.TempDir(), "destination")
			if err := os.Mkdir(dst, 0o700); err != nil {
				t.Fatal(err)
			}
			tmpfs(t, dst, "2m")
			path := filepath.Join(src, c.topic+".bin")
			randomFile(t, path, c.size, 4)
			if _, err := rig.send(ctx, c.topic, path, chunk, 0, nil); err != nil {
				t.Fatal(err)
			}
			err, stdout, stderr := rig.runReceive(t, ctx, dst, group, c.topic, "--idle", "10s")
			expectEnvironmentFault(t, err, stdout, stderr, "no space left on device")
			name := filepath.Base(path)
			if _, err := os.Stat(filepath.Join(dst, name)); err == nil {
				t.Fatal("the file is in place after the disk filled up")
			}
			messages := int64(1 + (c.size+chunk-1)/chunk)
			off, err := rig.committed(ctx, group, c.topic)
			if err != nil || off >= messages {
				t.Fatalf("committed offset %d, %v: every one of the %d messages acknowledged", off, err, messages)
			}
			t.Logf("after the fault: committed offset %d of %d messages, partial state %d KiB", off, messages, largestPartial(dst)>>10)

			resizeTmpfs(t, dst, "8m")
			err, stdout, stderr = rig.runReceive(t, ctx, dst, group, c.topic, "--max-files", "1", "--idle", "30s")
			if err != nil || !strings.Contains(stdout, "1 file(s) received") || strings.Contains(stdout, "refused:") {
				t.Fatalf("rerun: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
			}
			sameFile(t, path, filepath.Join(dst, name))
			onlyFiles(t, dst, name)
			t.Logf("rerun: %s", strings.TrimSpace(stdout))
		})
	}
}
