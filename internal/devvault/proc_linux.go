//go:build linux

package devvault

import (
	"os"
	"syscall"
)

// sysProcAttr puts Vault in its own process group and asks the kernel to SIGKILL it when
// the thread that started it dies, so that a test binary killed by a timeout or a signal
// does not leave a Vault server behind. (Pdeathsig follows the starting OS thread; Go's
// runtime keeps its threads for the life of the process unless a goroutine holding
// runtime.LockOSThread exits, which Start never does.)
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// kill kills the whole process group, so that anything Vault spawned (plugins) goes too.
func kill(p *os.Process) error {
	if err := syscall.Kill(-p.Pid, syscall.SIGKILL); err != nil && err != syscall.ESRCH {
		return p.Kill()
	}
	return nil
}

// terminate asks the whole process group to shut down (SIGTERM): Vault seals itself and
// closes its storage.
func terminate(p *os.Process) error {
	if err := syscall.Kill(-p.Pid, syscall.SIGTERM); err != nil && err != syscall.ESRCH {
		return p.Signal(syscall.SIGTERM)
	}
	return nil
}
