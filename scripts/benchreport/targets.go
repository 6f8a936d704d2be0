package main

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// Target is one line of the targets file:
//
//	<benchmark name regex> <metric unit> >=|<= <threshold> <description>
//
// The regex is matched against the name without "Benchmark" and without the
// -GOMAXPROCS suffix (e.g. ^Sizes/envelope/1KiB$); it cannot contain spaces (use \s).
// Blank lines and lines starting with # are ignored.
type Target struct {
	Expr      string
	Re        *regexp.Regexp
	Unit      string
	Op        string // ">=" or "<="
	Threshold float64
	Text      string // the threshold as written
	Desc      string
}

// Met reports whether v meets the target.
func (t Target) Met(v float64) bool {
	if t.Op == "<=" {
		return v <= t.Threshold
	}
	return v >= t.Threshold
}

var targetLine = regexp.MustCompile(`^(\S+)\s+(\S+)\s+(>=|<=)\s+(\S+)(?:\s+(.*?))?\s*$`)

// ParseTargets reads a targets file; name labels the errors.
func ParseTargets(r io.Reader, name string) ([]Target, error) {
	var ts []Target
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := targetLine.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("%s:%d: want `<regex> <unit> >=|<= <threshold> <description>`, got %q", name, n, line)
		}
		re, err := regexp.Compile(m[1])
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, n, err)
		}
		th, err := strconv.ParseFloat(m[4], 64)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: threshold %q: %v", name, n, m[4], err)
		}
		ts = append(ts, Target{Expr: m[1], Re: re, Unit: m[2], Op: m[3], Threshold: th, Text: m[4], Desc: m[5]})
	}
	return ts, sc.Err()
}

// Match is one benchmark that a target applies to.
type Match struct {
	Pkg, Name string
	Value     float64 // the median
	Runs      int
	Met       bool
}

// Outcome is a target and the benchmarks it applies to (none: not measured).
type Outcome struct {
	Target
	Matches []Match
}

// Evaluate matches each target against the benchmarks (of any package) whose name
// matches its regex and that report its unit.
func Evaluate(ts []Target, bs []*Bench) []Outcome {
	var out []Outcome
	for _, t := range ts {
		o := Outcome{Target: t}
		for _, b := range bs {
			if !t.Re.MatchString(b.Name) {
				continue
			}
			if v, ok := b.Median(t.Unit); ok {
				o.Matches = append(o.Matches, Match{Pkg: b.Pkg, Name: b.Name, Value: v, Runs: len(b.Vals[t.Unit]), Met: t.Met(v)})
			}
		}
		out = append(out, o)
	}
	return out
}

// Tally counts met, missed and unmeasured targets (a target is met if every
// benchmark it applies to meets it).
func Tally(os []Outcome) (met, missed, unmeasured int) {
	for _, o := range os {
		if len(o.Matches) == 0 {
			unmeasured++
			continue
		}
		ok := true
		for _, m := range o.Matches {
			ok = ok && m.Met
		}
		if ok {
			met++
		} else {
			missed++
		}
	}
	return
}
