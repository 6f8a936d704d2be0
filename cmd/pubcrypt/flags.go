package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
)

// Numeric flags: a count or a duration that bounds a command is 0 or more, and 0 means
// "no limit" wherever it bounds (--max, --count, --max-files, --idle, --wait, ...). A
// negative value is refused while the command line is parsed, with the usage, rather
// than read as some limit nobody asked for.

// nonNegativeInt is an int flag that refuses negative values.
type nonNegativeInt struct{ p *int }

func (f nonNegativeInt) String() string {
	if f.p == nil {
		return "0"
	}
	return strconv.Itoa(*f.p)
}

func (f nonNegativeInt) Set(s string) error {
	n, err := strconv.ParseInt(s, 0, strconv.IntSize)
	if err != nil {
		return errors.New("not a whole number")
	}
	if n < 0 {
		return errors.New("must be 0 or more")
	}
	*f.p = int(n)
	return nil
}

// countFlag defines an int flag that must be 0 or more.
func countFlag(fs *flag.FlagSet, p *int, name string, def int, usage string) *int {
	*p = def
	fs.Var(nonNegativeInt{p}, name, usage)
	return p
}

// nonNegativeDuration is a duration flag that refuses negative values.
type nonNegativeDuration struct{ p *time.Duration }

func (f nonNegativeDuration) String() string {
	if f.p == nil {
		return "0s"
	}
	return f.p.String()
}

func (f nonNegativeDuration) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("not a duration (e.g. 30s, 5m)")
	}
	if d < 0 {
		return errors.New("must be 0 or more")
	}
	*f.p = d
	return nil
}

// durationFlag defines a duration flag that must be 0 or more.
func durationFlag(fs *flag.FlagSet, p *time.Duration, name string, def time.Duration, usage string) *time.Duration {
	*p = def
	fs.Var(nonNegativeDuration{p}, name, usage)
	return p
}

// parseArgs parses a command line of flags followed by positional arguments (rotate's
// key names, topics create's topics). Go's flag package stops at the first argument, so a
// flag after it would be taken for an argument, or dropped: it is an error instead.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, &usageError{err: err, shown: true}
	}
	rest := fs.Args()
	for i, a := range rest {
		if a == "--" && i == 0 {
			return rest[1:], nil // everything after "--" is an argument, even "-x"
		}
		if strings.HasPrefix(a, "-") && a != "-" {
			return nil, usagef("flag %s after the argument %q: flags come first (see pubcrypt %s -h)", a, rest[0], strings.TrimPrefix(fs.Name(), "pubcrypt "))
		}
	}
	return rest, nil
}

// version is the main module's version as the build recorded it ("(devel)" for a build
// from a work tree), and the Go version.
func version() string {
	v := "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		v = bi.Main.Version
	}
	return fmt.Sprintf("pubcrypt %s %s %s/%s", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func runVersion(_ context.Context, args []string, out io.Writer) error {
	fs := newFlags("version", "Prints the version of pubcrypt and of the Go it was built with.")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprintln(out, version())
	return nil
}
