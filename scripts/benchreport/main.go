// Command benchreport turns `go test -bench` output into docs/BENCHMARKS.md and SVG
// charts (gonum.org/v1/plot). scripts/bench runs the benchmarks and then this.
//
// Usage (from scripts/benchreport):
//
//	go run . [-root ../..] [-in FILE]... [-targets FILE] [-out FILE] [-charts DIR]
//	         [-go VERSION] [-cpus N] [-date TEXT] [-module PATH] [FILE...]
//
// Benchmarks named <Family>/<mode>/<size> (size 256B, 1KiB, ..., 1MiB) are size
// sweeps: each family gets <Family>-msgs.svg (msgs/s by size, log-log, one line per
// mode) and <Family>-ratio.svg (every ratio-* unit by size, one line per mode and
// unit, with a dashed reference at 1.0). Targets are read from the targets file; see
// Target for its syntax.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("benchreport", flag.ContinueOnError)
	var ins listFlag
	root := fs.String("root", "../..", "repository root; the defaults of the other paths are relative to it")
	fs.Var(&ins, "in", "go test -bench output (repeatable; further files may follow the flags)\n(default <root>/docs/benchmarks/bench.txt)")
	targets := fs.String("targets", "", "targets file, \"none\" for none (default <root>/scripts/bench-targets.txt)")
	out := fs.String("out", "", "report to write (default <root>/docs/BENCHMARKS.md)")
	charts := fs.String("charts", "", "directory for the SVG charts (default <root>/docs/benchmarks)")
	goVersion := fs.String("go", runtime.Version(), "Go version for the header")
	cpus := fs.Int("cpus", runtime.NumCPU(), "number of CPUs for the header and the chart titles")
	date := fs.String("date", time.Now().UTC().Format("2006-01-02 15:04 UTC"), "date for the header")
	module := fs.String("module", "github.com/pubcrypt/pubcrypt", "module path trimmed from package names in titles")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ins = append(ins, fs.Args()...)
	if len(ins) == 0 {
		ins = listFlag{filepath.Join(*root, "docs", "benchmarks", "bench.txt")}
	}
	orDefault := func(p *string, elem ...string) {
		if *p == "" {
			*p = filepath.Join(append([]string{*root}, elem...)...)
		}
	}
	orDefault(targets, "scripts", "bench-targets.txt")
	orDefault(out, "docs", "BENCHMARKS.md")
	orDefault(charts, "docs", "benchmarks")

	var d Data
	for _, in := range ins {
		f, err := os.Open(in)
		if err != nil {
			return err
		}
		err = d.Parse(f, in)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %v", in, err)
		}
	}
	for _, w := range d.Warnings {
		fmt.Fprintln(os.Stderr, "benchreport: warning:", w)
	}
	if len(d.Results) == 0 {
		return fmt.Errorf("no benchmark results in %s", strings.Join(ins, ", "))
	}
	benches := Summarize(d.Results)

	var ts []Target
	if *targets != "none" {
		f, err := os.Open(*targets)
		if err != nil {
			return err
		}
		ts, err = ParseTargets(f, *targets)
		f.Close()
		if err != nil {
			return err
		}
	}

	short := func(pkg string) string {
		if s, ok := strings.CutPrefix(pkg, *module+"/"); ok {
			return s
		}
		if pkg == *module {
			return path0(pkg)
		}
		return pkg
	}
	meta := Meta{
		Date: *date, GoVersion: *goVersion, CPUs: *cpus,
		GOOS: first(d.Config["goos"], runtime.GOOS), GOARCH: first(d.Config["goarch"], runtime.GOARCH),
		CPU: strings.Join(d.Config["cpu"], "; "),
	}
	if meta.CPU == "" {
		meta.CPU = "unknown"
	}
	outDir := filepath.Dir(*out)
	for _, in := range ins {
		meta.Raw = append(meta.Raw, relLink(outDir, in))
	}

	if err := os.MkdirAll(*charts, 0o755); err != nil {
		return err
	}
	sweeps := FindSweeps(benches)
	cs, err := DrawCharts(sweeps, *charts, meta.Machine(), short)
	if err != nil {
		return err
	}
	r := &Report{Meta: meta, Outcomes: Evaluate(ts, benches), Charts: cs, ChartsDir: relLink(outDir, *charts), Benches: benches, Short: short}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	if err := r.Write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	met, missed, unmeasured := Tally(r.Outcomes)
	fmt.Fprintf(os.Stderr, "benchreport: wrote %s (%d benchmarks) and %d charts in %s; targets: %d met, %d missed, %d not measured\n",
		*out, len(benches), len(cs), *charts, met, missed, unmeasured)
	return nil
}

func first(vs []string, def string) string {
	if len(vs) == 0 {
		return def
	}
	return strings.Join(vs, ", ")
}

func path0(pkg string) string { return filepath.Base(filepath.FromSlash(pkg)) }

// relLink is target relative to dir, with slashes, for a Markdown link (absolute if
// there is no relative path).
func relLink(dir, target string) string {
	if d, err := filepath.Abs(dir); err == nil {
		if t, err := filepath.Abs(target); err == nil {
			dir, target = d, t
		}
	}
	if rel, err := filepath.Rel(dir, target); err == nil {
		target = rel
	}
	return filepath.ToSlash(target)
}
