package filestream

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/pubcrypt/pubcrypt/fault"
)

// These tests mount a tiny tmpfs (root ignores permission bits, so a full or read-only
// file system is the way to make a directory unwritable for it). They fail, never skip,
// when they cannot mount.

func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "destination")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Fatalf("mount a tmpfs (this test needs root): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

func remount(t *testing.T, dir, opts string, flags uintptr) {
	t.Helper()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_REMOUNT|flags, opts); err != nil {
		t.Fatalf("remount %s %s: %v", dir, opts, err)
	}
}

// TestDiskFull: a chunk that cannot be stored, or a file that cannot be assembled, is an
// environment fault (ErrStorage, wrapping ENOSPC) that leaves the transfer as it was: the
// same chunk handed in again once there is room goes on, in the same Receiver.
func TestDiskFull(t *testing.T) {
	kr := newTestKeyring()
	ctx := context.Background()
	for _, c := range []struct {
		name string
		size int // on a 256 KiB file system
	}{{"while storing", 400 << 10}, {"while assembling", 160 << 10}} {
		t.Run(c.name, func(t *testing.T) {
			dir := mountTmpfs(t, "256k")
			data := testData(c.size)
			msgs, st := sendBytes(t, kr, "f", data, 16<<10)
			r := newReceiver(t, kr, dir, ReceiveOptions{})
			var full int
			var err error
			for full = 0; full < len(msgs); full++ {
				if _, err = r.Handle(ctx, msgs[full].body, msgs[full].md); err != nil {
					break
				}
			}
			if !errors.Is(err, ErrStorage) || !errors.Is(err, syscall.ENOSPC) || fault.ClassOf(err) != fault.Environment {
				t.Fatalf("message %d: %v; want ErrStorage with ENOSPC", full, err)
			}
			t.Logf("message %d of %d: %v", full, len(msgs), err)
			if _, err := os.Stat(filepath.Join(dir, "f")); err == nil {
				t.Fatal("the file is in place")
			}
			// Again, still full: the same answer, nothing lost.
			if _, err := r.Handle(ctx, msgs[full].body, msgs[full].md); !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("again: %v", err)
			}
			remount(t, dir, "size=2m", 0)
			done, errs := deliver(t, r, msgs[full:])
			if len(errs) != 0 {
				t.Fatal(errs)
			}
			expectReceived(t, dir, "f", data, done, st.TransferID)
		})
	}
}

// TestReadOnly: a read-only destination is refused at start with ErrStorage; one that
// becomes read-only mid-transfer fails the chunk (not the transfer), which goes on once
// the directory is writable again.
func TestReadOnly(t *testing.T) {
	kr := newTestKeyring()
	ctx := context.Background()
	dir := mountTmpfs(t, "4m")
	remount(t, dir, "", syscall.MS_RDONLY)
	_, err := NewReceiver(kr, dir, ReceiveOptions{})
	if !errors.Is(err, ErrStorage) || !errors.Is(err, syscall.EROFS) || fault.ClassOf(err) != fault.Environment {
		t.Fatalf("NewReceiver on a read-only directory: %v", err)
	}
	t.Logf("NewReceiver: %v", err)
	remount(t, dir, "", 0)
	data := testData(5000)
	msgs, st := sendBytes(t, kr, "f", data, 1000)
	r := newReceiver(t, kr, dir, ReceiveOptions{})
	if _, errs := deliver(t, r, msgs[:3]); len(errs) != 0 {
		t.Fatal(errs)
	}
	remount(t, dir, "", syscall.MS_RDONLY)
	_, err = r.Handle(ctx, msgs[3].body, msgs[3].md)
	if !errors.Is(err, ErrStorage) || !errors.Is(err, syscall.EROFS) || fault.ClassOf(err) != fault.Environment {
		t.Fatalf("chunk 3 on a read-only directory: %v", err)
	}
	remount(t, dir, "", 0)
	done, errs := deliver(t, r, msgs[3:])
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	expectReceived(t, dir, "f", data, done, st.TransferID)
}
