package main

import (
	"strings"
	"testing"
)

func TestFormatValue(t *testing.T) {
	for _, c := range []struct {
		unit string
		v    float64
		want string
	}{
		{"ratio-vs-raw-gcm", 0.8612, "0.861"},
		{"ratio-vs-raw-gcm", 0.85, "0.850"},
		{"ratio-vs-raw-gcm", 1, "1"},
		{"ratio-vs-seed", 2.63994, "2.64"},
		{"transit-vault-calls/msg", 0.01996, "0.0200"},
		{"transit-vault-calls/msg", 0.009980, "0.00998"},
		{"MB/s", 361.53, "362"},
		{"MB/s", 1266.08, "1,266"},
		{"msgs/s", 56950, "57.0k"},
		{"msgs/s", 2000, "2.00k"},
		{"msgs/s", 353000, "353k"},
		{"msgs/s", 23877, "23.9k"},
		{"msgs/s", 999999, "1.00M"},
		{"msgs/s", 2204717, "2.20M"},
		{"msgs/s", 999.7, "1.00k"},
		{"ns/op", 2832, "2,832"},
		{"ns/op", 842102, "842,102"},
		{"ns/op", 1234567890, "1,234,567,890"},
		{"ns/op", 454, "454"},
		{"B/op", 3696, "3,696"},
		{"allocs/op", 12, "12"},
		{"allocs/op", 0, "0"},
		{"x", -1500, "-1,500"},
	} {
		if got := formatValue(c.unit, c.v); got != c.want {
			t.Errorf("formatValue(%q, %v) = %q, want %q", c.unit, c.v, got, c.want)
		}
	}
}

func TestTargetValue(t *testing.T) {
	for _, c := range []struct {
		v, threshold float64
		want         string
	}{{0.01996, 0.02, "0.01996"}, {0.02004, 0.02, "0.02004"}, {0.02, 0.02, "0.0200"}, {0.0183, 0.02, "0.0183"}, {20013, 20000, "20,013"}, {23877, 20000, "23.9k"}} {
		if got := targetValue(Target{Unit: "x/s", Threshold: c.threshold}, c.v); got != c.want {
			t.Errorf("targetValue(%v, threshold %v) = %q, want %q", c.v, c.threshold, got, c.want)
		}
	}
}

func TestRateTicks(t *testing.T) {
	var labels []string
	for _, tk := range (rateTicks{}).Ticks(1000, 1e6) {
		if tk.Label != "" {
			labels = append(labels, tk.Label)
		}
	}
	if got := strings.Join(labels, " "); got != "1k 10k 100k 1M" {
		t.Errorf("labels %s", got)
	}
	labels = nil
	for _, tk := range (rateTicks{}).Ticks(1e4, 1e5) {
		if tk.Label != "" {
			labels = append(labels, tk.Label)
		}
	}
	if got := strings.Join(labels, " "); got != "10k 20k 50k 100k" {
		t.Errorf("labels %s", got)
	}
}

func TestTickLabel(t *testing.T) {
	for v, want := range map[float64]string{1e6: "1M", 2e4: "20k", 1000: "1k", 500: "500", 5: "5", 1e9: "1G", 0.5: "0.5"} {
		if got := tickLabel(v); got != want {
			t.Errorf("tickLabel(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestSizeLabel(t *testing.T) {
	for n, want := range map[int64]string{256: "256 B", 1024: "1 KiB", 64 << 10: "64 KiB", 1 << 20: "1 MiB", 1536: "1536 B", 3 << 30: "3 GiB"} {
		if got := sizeLabel(n); got != want {
			t.Errorf("sizeLabel(%d) = %q, want %q", n, got, want)
		}
	}
}
