//go:build !linux

package devvault

import (
	"os"
	"syscall"
)

// sysProcAttr: outside Linux there is no parent-death signal; Stop must be called.
func sysProcAttr() *syscall.SysProcAttr { return nil }

func kill(p *os.Process) error { return p.Kill() }

func terminate(p *os.Process) error { return p.Signal(os.Interrupt) }
