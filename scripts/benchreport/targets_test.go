package main

import (
	"os"
	"strings"
	"testing"
)

func TestParseTargets(t *testing.T) {
	in := `# comment

^Sizes/envelope/1KiB$ ratio-vs-raw-gcm >= 0.85 envelope seal+open of 1 KiB   (fresh buffers)
^FieldModes$   transit-vault-calls/msg <=  0.02   Vault calls per message, both sides
^X$ msgs/s >= 1e4
`
	ts, err := ParseTargets(strings.NewReader(in), "t")
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 3 {
		t.Fatalf("%d targets", len(ts))
	}
	if ts[0].Unit != "ratio-vs-raw-gcm" || ts[0].Op != ">=" || ts[0].Threshold != 0.85 || ts[0].Desc != "envelope seal+open of 1 KiB   (fresh buffers)" {
		t.Errorf("%+v", ts[0])
	}
	if ts[1].Op != "<=" || ts[1].Threshold != 0.02 || ts[1].Text != "0.02" || ts[1].Desc != "Vault calls per message, both sides" {
		t.Errorf("%+v", ts[1])
	}
	if ts[2].Threshold != 1e4 || ts[2].Desc != "" {
		t.Errorf("%+v", ts[2])
	}
	for _, bad := range []string{"^X$ msgs/s > 3 d", "^X$ msgs/s >= three d", "^(X$ msgs/s >= 3 d", "^X$ >= 3"} {
		if _, err := ParseTargets(strings.NewReader(bad), "t"); err == nil || !strings.HasPrefix(err.Error(), "t:1: ") {
			t.Errorf("%q: err %v", bad, err)
		}
	}
}

func TestMet(t *testing.T) {
	ge := Target{Op: ">=", Threshold: 1}
	le := Target{Op: "<=", Threshold: 1}
	if !ge.Met(1) || !ge.Met(2) || ge.Met(0.99) || !le.Met(1) || !le.Met(0) || le.Met(1.01) {
		t.Error("Met")
	}
}

func TestEvaluate(t *testing.T) {
	f, err := os.Open("testdata/targets.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ts, err := ParseTargets(f, "targets.txt")
	if err != nil {
		t.Fatal(err)
	}
	extra, err := ParseTargets(strings.NewReader(`
^Nothing$ msgs/s >= 1 absent benchmark
^FieldModes$ no-such-unit >= 1 absent unit
^Sizes/[a-z-]+/1KiB$ msgs/s >= 500000 several matches
`), "extra")
	if err != nil {
		t.Fatal(err)
	}
	os := Evaluate(append(ts, extra...), Summarize(parseSample(t).Results))
	type row struct {
		name  string
		value float64
		met   bool
	}
	want := [][]row{
		{{"Sizes/envelope/1KiB", 0.7077, false}}, // median of 3
		{{"Sizes/envelope/64KiB", 0.9863, true}},
		{{"FieldModes", 23877, true}},
		{{"FieldModes", 0.01996, true}}, // <=
		{{"RoundTripKafka/kafkapubsub", 0.9538, true}},
		nil,
		nil,
		{{"Sizes/raw-gcm/1KiB", 973402, true}, {"Sizes/envelope/1KiB", 675445, true}, {"Sizes/seed/1KiB", 324190, false}},
	}
	if len(os) != len(want) {
		t.Fatalf("%d outcomes, want %d", len(os), len(want))
	}
	for i, o := range os {
		if len(o.Matches) != len(want[i]) {
			t.Errorf("%s %s: %d matches, want %d", o.Expr, o.Unit, len(o.Matches), len(want[i]))
			continue
		}
		for j, m := range o.Matches {
			if w := want[i][j]; m.Name != w.name || m.Value != w.value || m.Met != w.met {
				t.Errorf("%s %s: got %s %v %v, want %v", o.Expr, o.Unit, m.Name, m.Value, m.Met, w)
			}
		}
	}
	if met, missed, unmeasured := Tally(os); met != 4 || missed != 2 || unmeasured != 2 {
		t.Errorf("tally %d met, %d missed, %d not measured", met, missed, unmeasured)
	}
}

// TestRealTargets: scripts/bench-targets.txt parses.
func TestRealTargets(t *testing.T) {
	f, err := os.Open("../bench-targets.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ts, err := ParseTargets(f, "bench-targets.txt")
	if err != nil || len(ts) == 0 {
		t.Fatalf("%d targets, %v", len(ts), err)
	}
}
