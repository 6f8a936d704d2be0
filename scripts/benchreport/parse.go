package main

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Value is one (value, unit) pair of a benchmark line, e.g. 2832 ns/op.
type Value struct {
	Value float64
	Unit  string
}

// Result is one benchmark line of `go test -bench` output.
type Result struct {
	Pkg   string // from the last "pkg:" line before it
	Name  string // without the "Benchmark" prefix and the -GOMAXPROCS suffix
	Procs int    // the -GOMAXPROCS suffix, 0 if there was none
	Iters int
	Vals  []Value
}

// Data is what Parse gathers from one or more files.
type Data struct {
	// Config holds the distinct values of the "key: value" lines (goos, goarch,
	// cpu, ...) in the order first seen; "pkg" is kept per result instead.
	Config   map[string][]string
	Results  []Result
	Warnings []string
}

var (
	configLine = regexp.MustCompile(`^([a-z][a-zA-Z0-9_-]*):\s*(.*?)\s*$`)
	procsTail  = regexp.MustCompile(`-([0-9]+)$`)
)

// Parse reads `go test -bench` output (several packages may be concatenated) and
// appends what it finds to d. name labels the warnings. Lines that are neither
// configuration nor results (PASS, ok, logs, a bare benchmark name printed by -v)
// are ignored; a benchmark line whose (value, unit) pairs do not parse is skipped
// with a warning.
func (d *Data) Parse(r io.Reader, name string) error {
	if d.Config == nil {
		d.Config = map[string][]string{}
	}
	pkg := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 4*1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if m := configLine.FindStringSubmatch(line); m != nil {
			if m[1] == "pkg" {
				pkg = m[2]
			} else if !slices.Contains(d.Config[m[1]], m[2]) {
				d.Config[m[1]] = append(d.Config[m[1]], m[2])
			}
			continue
		}
		if !strings.HasPrefix(line, "Benchmark") {
			continue
		}
		res, ok, err := parseResult(line)
		if err != nil {
			d.Warnings = append(d.Warnings, fmt.Sprintf("%s:%d: %v", name, n, err))
			continue
		}
		if ok {
			res.Pkg = pkg
			d.Results = append(d.Results, res)
		}
	}
	return sc.Err()
}

// parseResult parses "BenchmarkName-N iters v1 unit1 v2 unit2 ...". ok is false
// for a line that is not a result at all (no iteration count).
func parseResult(line string) (res Result, ok bool, err error) {
	f := strings.Fields(line)
	if len(f) < 2 {
		return res, false, nil
	}
	iters, err := strconv.Atoi(f[1])
	if err != nil {
		return res, false, nil
	}
	if (len(f)-2)%2 != 0 || len(f) == 2 {
		return res, false, fmt.Errorf("%s: want (value, unit) pairs after the iteration count", f[0])
	}
	name := strings.TrimPrefix(f[0], "Benchmark")
	if m := procsTail.FindStringSubmatchIndex(name); m != nil {
		res.Procs, _ = strconv.Atoi(name[m[2]:m[3]])
		name = name[:m[0]]
	}
	res.Name, res.Iters = name, iters
	for i := 2; i < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return res, false, fmt.Errorf("%s: value %q: %v", f[0], f[i], err)
		}
		res.Vals = append(res.Vals, Value{v, f[i+1]})
	}
	return res, true, nil
}

// Bench gathers the lines of one benchmark (same package and name; -count>1 gives
// several) so that each metric can be reported as their median.
type Bench struct {
	Pkg, Name string
	Units     []string // in the order first seen
	Vals      map[string][]float64
}

// Median returns the median of the benchmark's values in unit.
func (b *Bench) Median(unit string) (float64, bool) {
	vs := b.Vals[unit]
	if len(vs) == 0 {
		return 0, false
	}
	return median(vs), true
}

// Runs is the number of lines gathered (the most values any unit has).
func (b *Bench) Runs() int {
	n := 0
	for _, vs := range b.Vals {
		n = max(n, len(vs))
	}
	return n
}

func median(vs []float64) float64 {
	s := slices.Clone(vs)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Summarize groups results by package and name, in the order first seen. (Runs with
// several -cpu values would be merged: scripts/bench does not use -cpu.)
func Summarize(rs []Result) []*Bench {
	var out []*Bench
	index := map[[2]string]*Bench{}
	for _, r := range rs {
		k := [2]string{r.Pkg, r.Name}
		b := index[k]
		if b == nil {
			b = &Bench{Pkg: r.Pkg, Name: r.Name, Vals: map[string][]float64{}}
			index[k] = b
			out = append(out, b)
		}
		for _, v := range r.Vals {
			if _, seen := b.Vals[v.Unit]; !seen {
				b.Units = append(b.Units, v.Unit)
			}
			b.Vals[v.Unit] = append(b.Vals[v.Unit], v.Value)
		}
	}
	return out
}

// Packages returns the packages of bs in the order first seen.
func Packages(bs []*Bench) []string {
	var pkgs []string
	for _, b := range bs {
		if !slices.Contains(pkgs, b.Pkg) {
			pkgs = append(pkgs, b.Pkg)
		}
	}
	return pkgs
}
