//go:build linux

package filestream

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// lockDir takes an exclusive advisory lock on the destination directory, held until
// the descriptor is closed: two receivers in one directory would remove each other's
// partial state as stale and race on the same transfer's spool.
func lockDir(d *os.File) error {
	err := unix.Flock(int(d.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return errors.New("another receiver uses this directory")
	}
	return err
}

// openUnnamed opens a new file in directory d that has no name (O_TMPFILE): what is
// written to it is never visible under a name, and it vanishes if the process dies.
// errNoUnnamed means the file system cannot do it.
func openUnnamed(d *os.File) (*os.File, error) {
	fd, err := unix.Openat(int(d.Fd()), ".", unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	switch {
	case errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EINVAL):
		return nil, errNoUnnamed
	case err != nil:
		return nil, &os.PathError{Op: "open", Path: "(unnamed file)", Err: err}
	}
	return os.NewFile(uintptr(fd), "(unnamed file)"), nil
}

// linkUnnamed gives the unnamed file f the name name in directory d. It fails with an
// error matching fs.ErrExist if name exists: it never replaces anything.
func linkUnnamed(f *os.File, d *os.File, name string) error {
	// linkat(AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH; the /proc link does not.
	err := unix.Linkat(unix.AT_FDCWD, procPath(f), int(d.Fd()), name, unix.AT_SYMLINK_FOLLOW)
	if err != nil {
		return &os.LinkError{Op: "link", Old: "(unnamed file)", New: name, Err: err}
	}
	return nil
}

// setTimes sets the access and modification times of the open file f.
func setTimes(f *os.File, t time.Time) error {
	ts := []unix.Timespec{unix.NsecToTimespec(t.UnixNano()), unix.NsecToTimespec(t.UnixNano())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, procPath(f), ts, 0); err != nil {
		return &os.PathError{Op: "utimensat", Path: f.Name(), Err: err}
	}
	return nil
}

func procPath(f *os.File) string { return fmt.Sprintf("/proc/self/fd/%d", f.Fd()) }

// syncData makes f's data (and its size) durable; cheaper than Sync, which also writes
// the times.
func syncData(f *os.File) error {
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
	}
	return nil
}
