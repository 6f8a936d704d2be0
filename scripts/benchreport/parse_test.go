package main

import (
	"os"
	"strings"
	"testing"
)

func TestParseResult(t *testing.T) {
	line := "BenchmarkSizes/envelope/1KiB-2   784192   2832 ns/op   361.53 MB/s   353000 msgs/s   0.8612 ratio-vs-raw-gcm   3696 B/op   12 allocs/op"
	r, ok, err := parseResult(line)
	if err != nil || !ok {
		t.Fatalf("parseResult: ok=%v err=%v", ok, err)
	}
	if r.Name != "Sizes/envelope/1KiB" || r.Procs != 2 || r.Iters != 784192 {
		t.Errorf("got name %q procs %d iters %d", r.Name, r.Procs, r.Iters)
	}
	want := []Value{{2832, "ns/op"}, {361.53, "MB/s"}, {353000, "msgs/s"}, {0.8612, "ratio-vs-raw-gcm"}, {3696, "B/op"}, {12, "allocs/op"}}
	if len(r.Vals) != len(want) {
		t.Fatalf("got %d values, want %d", len(r.Vals), len(want))
	}
	for i := range want {
		if r.Vals[i] != want[i] {
			t.Errorf("value %d: got %v, want %v", i, r.Vals[i], want[i])
		}
	}

	// A sub-benchmark ending in a dash word keeps it; only the numeric suffix goes.
	if r, _, _ := parseResult("BenchmarkSealOpen/64KiB-sensitive-2 10 5 ns/op"); r.Name != "SealOpen/64KiB-sensitive" || r.Procs != 2 {
		t.Errorf("got %q procs %d", r.Name, r.Procs)
	}
	// GOMAXPROCS=1 prints no suffix.
	if r, _, _ := parseResult("BenchmarkFieldModes 10 5 ns/op"); r.Name != "FieldModes" || r.Procs != 0 {
		t.Errorf("got %q procs %d", r.Name, r.Procs)
	}
	for _, notResult := range []string{"BenchmarkFieldModes", "BenchmarkFieldModes-2 \tsome log text"} {
		if _, ok, err := parseResult(notResult); ok || err != nil {
			t.Errorf("%q: ok=%v err=%v, want neither", notResult, ok, err)
		}
	}
	for _, bad := range []string{"BenchmarkX-2 10 5", "BenchmarkX-2 10 five ns/op", "BenchmarkX-2 10"} {
		if _, ok, err := parseResult(bad); ok || err == nil {
			t.Errorf("%q: ok=%v err=%v, want an error", bad, ok, err)
		}
	}
}

func TestParseSample(t *testing.T) {
	d := parseSample(t)
	if len(d.Warnings) != 0 {
		t.Errorf("warnings: %v", d.Warnings)
	}
	// 3 modes x 7 sizes, 2 extra lines each for envelope/1KiB and 64KiB, 2 SealOpen,
	// FieldModes, RoundTripKafka.
	if got, want := len(d.Results), 21+4+2+2; got != want {
		t.Errorf("%d results, want %d", got, want)
	}
	if got := d.Config["goos"]; len(got) != 1 || got[0] != "linux" {
		t.Errorf("goos %v", got)
	}
	if got := d.Config["cpu"]; len(got) != 1 || got[0] != "AMD EPYC 7B13" {
		t.Errorf("cpu %v", got)
	}
	if _, ok := d.Config["pkg"]; ok {
		t.Error("pkg kept in Config")
	}
	last := d.Results[len(d.Results)-1]
	if last.Pkg != "github.com/pubcrypt/pubcrypt/cryptsub" || last.Name != "RoundTripKafka/kafkapubsub" {
		t.Errorf("last result %q in %q", last.Name, last.Pkg)
	}
	if first := d.Results[0]; first.Pkg != "github.com/pubcrypt/pubcrypt/internal/envelope" {
		t.Errorf("first result in %q", first.Pkg)
	}
}

func TestParseWarnsAndContinues(t *testing.T) {
	var d Data
	in := "pkg: p\nBenchmarkA-2 10 1 ns/op\nBenchmarkB-2 10 x ns/op\nBenchmarkC-2 10 3 ns/op\n"
	if err := d.Parse(strings.NewReader(in), "in"); err != nil {
		t.Fatal(err)
	}
	if len(d.Results) != 2 || len(d.Warnings) != 1 || !strings.HasPrefix(d.Warnings[0], "in:3: ") {
		t.Errorf("results %v warnings %q", d.Results, d.Warnings)
	}
}

func TestMedians(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{[]float64{3}, 3}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}, {[]float64{0.9, 0.7, 0.8, 100, 0.85}, 0.85}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}

	bs := Summarize(parseSample(t).Results)
	b := find(t, bs, "Sizes/envelope/1KiB")
	if b.Runs() != 3 {
		t.Errorf("runs %d, want 3", b.Runs())
	}
	for unit, want := range map[string]float64{"ratio-vs-raw-gcm": 0.7077, "msgs/s": 675445, "ns/op": 1481, "allocs/op": 12} {
		if got, ok := b.Median(unit); !ok || got != want {
			t.Errorf("median %s = %v, %v; want %v", unit, got, ok, want)
		}
	}
	if _, ok := b.Median("no-such-unit"); ok {
		t.Error("median of an absent unit")
	}
	if got := Packages(bs); len(got) != 2 || got[1] != "github.com/pubcrypt/pubcrypt/cryptsub" {
		t.Errorf("packages %v", got)
	}
	if got := strings.Join(find(t, bs, "Sizes/seed/1MiB").Units, " "); got != "ns/op MB/s msgs/s ratio-vs-raw-gcm B/op allocs/op" {
		t.Errorf("units %s", got)
	}
}

func parseSample(t *testing.T) *Data {
	t.Helper()
	f, err := os.Open("testdata/sample.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var d Data
	if err := d.Parse(f, "sample.txt"); err != nil {
		t.Fatal(err)
	}
	return &d
}

func find(t *testing.T, bs []*Bench, name string) *Bench {
	t.Helper()
	for _, b := range bs {
		if b.Name == name {
			return b
		}
	}
	t.Fatalf("no benchmark %s", name)
	return nil
}
