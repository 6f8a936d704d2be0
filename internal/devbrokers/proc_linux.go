//go:build linux

package devbrokers

import (
	"os"
	"syscall"
)

// sysProcAttr puts the server in its own process group (the emulator's launcher is a shell
// script that execs Java) and has the kernel SIGKILL it when the thread that started it
// dies, so a test binary killed by a timeout leaves no server behind.
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
