//go:build linux

package devproc

import (
	"os"
	"syscall"
)

// SysProcAttr puts a server in its own process group and asks the kernel to SIGKILL it
// when the thread that started it dies, so that a test binary killed by a timeout or a
// signal leaves no server behind. (Pdeathsig follows the starting OS thread; Go's runtime
// keeps its threads for the life of the process unless a goroutine holding
// runtime.LockOSThread exits, which the harnesses never do.)
func SysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// Kill kills the whole process group, so that anything the server spawned (Vault's
// plugins, the Java behind the Pub/Sub emulator's launcher) goes too.
func Kill(p *os.Process) error {
	if err := syscall.Kill(-p.Pid, syscall.SIGKILL); err != nil && err != syscall.ESRCH {
		return p.Kill()
	}
	return nil
}

// Terminate asks the whole process group to shut down (SIGTERM).
func Terminate(p *os.Process) error {
	if err := syscall.Kill(-p.Pid, syscall.SIGTERM); err != nil && err != syscall.ESRCH {
		return p.Signal(syscall.SIGTERM)
	}
	return nil
}
