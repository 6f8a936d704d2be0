//go:build !linux

package devproc

import (
	"os"
	"syscall"
)

// SysProcAttr: outside Linux there is no parent-death signal; Stop must be called.
func SysProcAttr() *syscall.SysProcAttr { return nil }

// Kill kills the process.
func Kill(p *os.Process) error { return p.Kill() }

// Terminate asks the process to shut down.
func Terminate(p *os.Process) error { return p.Signal(os.Interrupt) }
