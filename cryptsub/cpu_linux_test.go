package cryptsub_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTick is the unit of /proc/PID/stat's CPU times (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// cpuTimes returns the CPU time (user and system) this process has used, and the Vault
// server of pid with its child processes (the FPE plugin runs as one): the two halves of
// a mode's cost on a machine where both share the cores. ok is false if either cannot be
// read.
func cpuTimes(pid int) (client, vault time.Duration, ok bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0, false
	}
	client = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	vault, ok = procCPU(pid, true)
	if !ok {
		return 0, 0, false
	}
	// Live children: a plugin's time reaches Vault's own figures only once it has exited
	// and been waited for (cutime, cstime, counted above).
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		if ppid, ok := statField(path, 4); ok && ppid == strconv.Itoa(pid) {
			pidText := filepath.Base(filepath.Dir(path))
			child, _ := strconv.Atoi(pidText)
			t, _ := procCPU(child, false)
			vault += t
		}
	}
	return client, vault, true
}

// procCPU reads utime+stime of pid, with cutime+cstime (waited-for children) if waited.
func procCPU(pid int, waited bool) (time.Duration, bool) {
	path := "/proc/" + strconv.Itoa(pid) + "/stat"
	fields := []int{14, 15}
	if waited {
		fields = append(fields, 16, 17)
	}
	var ticks int64
	for _, f := range fields {
		v, ok := statField(path, f)
		if !ok {
			return 0, false
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, false
		}
		ticks += n
	}
	return time.Duration(ticks) * clockTick, true
}

// statField returns field n (1-based, as proc(5) numbers them) of a /proc/PID/stat file;
// the command name (field 2) is in parentheses and may hold spaces.
func statField(path string, n int) (string, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", false
	}
	s := string(b)
	end := strings.LastIndexByte(s, ')')
	if end < 0 {
		return "", false
	}
	rest := strings.Fields(s[end+1:]) // field 3 onwards
	if n < 3 || n-3 >= len(rest) {
		return "", false
	}
	return rest[n-3], true
}
