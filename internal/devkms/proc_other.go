//go:build !linux

package devkms

import (
	"os"
	"syscall"
)

// sysProcAttr: outside Linux there is no parent-death signal; Stop must be called.
func sysProcAttr() *syscall.SysProcAttr { return nil }

func kill(p *os.Process) error { return p.Kill() }
