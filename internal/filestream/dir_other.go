//go:build !linux

package filestream

import (
	"os"
	"time"
)

// Elsewhere than on Linux there is no O_TMPFILE: the Receiver assembles files in a
// named 0600 temporary file (docs/FILES.md, section 11), and the directory is not locked.

func lockDir(d *os.File) error { return nil }

func openUnnamed(d *os.File) (*os.File, error) { return nil, errNoUnnamed }

func linkUnnamed(f *os.File, d *os.File, name string) error { return errNoUnnamed }

func setTimes(f *os.File, t time.Time) error { return errNoUnnamed }

func syncData(f *os.File) error { return f.Sync() }
