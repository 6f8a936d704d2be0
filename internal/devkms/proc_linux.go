//go:build linux

package devkms

import (
	"os"
	"syscall"
)

// sysProcAttr puts local-kms in its own process group and asks the kernel to SIGKILL it
// when the thread that started it dies, so that a test binary killed by a timeout or a
// signal does not leave an emulator behind (the same arrangement as internal/devvault;
// Pdeathsig follows the starting OS thread, which Go keeps for the life of the process).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// kill kills the whole process group.
func kill(p *os.Process) error {
	if err := syscall.Kill(-p.Pid, syscall.SIGKILL); err != nil && err != syscall.ESRCH {
		return p.Kill()
	}
	return nil
}
